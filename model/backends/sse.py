"""Server-sent events: the framing OpenAI-compatible servers use for `"stream": true` responses.

Only what those servers send is handled: `data:` lines (several in one event are joined with newlines),
events ended by a blank line, `:` comments and other fields ignored. `[DONE]` is returned like any other
payload; the caller decides what it means.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def iter_sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The `data` payload of each event in `lines` (a response body split into lines, newlines removed)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # a body that ends without the final blank line
        yield "\n".join(data)
