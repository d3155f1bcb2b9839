"""`Document`, the shared checks every loader runs on raw bytes, and the `Loader` seam."""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ember.retrieval.errors import LoaderError

SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded file. `text` is what gets chunked; chunk spans are character offsets into it (for text and
    Markdown that is the file's own decoded text; for HTML and PDF the extracted text)."""

    source: str  # absolute POSIX path of the file
    title: str
    text: str
    content_hash: str  # sha256 of the raw bytes: unchanged files are skipped without parsing
    kind: str  # text | markdown | html | pdf
    page_starts: tuple[int, ...] = field(default=())  # PDF: offset in `text` where page i+1 begins

    def page_at(self, offset: int) -> int | None:
        """1-based page holding character `offset`, or None for formats without pages."""
        if not self.page_starts:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))


class Loader(Protocol):
    def __call__(self, path: Path, data: bytes) -> Document: ...


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_binary(data: bytes) -> bool:
    return b"\x00" in data[:SNIFF_BYTES]


def decode_text(path: Path, data: bytes) -> str:
    """Strict UTF-8 (a BOM is dropped); binary, empty and undecodable files raise `LoaderError`."""
    if not data.strip():
        raise LoaderError(path, "empty file")
    if is_binary(data):
        raise LoaderError(path, "binary file (contains NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LoaderError(path, f"not UTF-8 text (invalid byte 0x{data[e.start]:02x} at offset {e.start})",
                          hint="Convert it first, e.g. iconv -f latin1 -t utf-8.") from None
    if not text.strip():
        raise LoaderError(path, "empty file")
    return text


def source_of(path: Path) -> str:
    return path.resolve().as_posix()
