"""Walking a folder: include/exclude globs, a size limit, hashing, and per-file skip reasons.

Globs match the path relative to the root (`docs/**/*.md`); a pattern without a slash matches the file
name at any depth (`*.md`), as in .gitignore. Hidden files and folders are left out. Nothing here raises for
one bad file: it becomes a `Skipped` entry and the walk goes on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ember.retrieval.errors import LoaderError
from ember.retrieval.integrations.readers import SUFFIXES as LLAMAINDEX_SUFFIXES
from ember.retrieval.loaders.base import Document, Loader, content_hash, is_binary, source_of
from ember.retrieval.loaders.html import load_html
from ember.retrieval.loaders.markdown import load_markdown
from ember.retrieval.loaders.pdf import load_pdf
from ember.retrieval.loaders.text import load_text

LOADERS: dict[str, Loader] = {
    ".txt": load_text, ".text": load_text, ".rst": load_text, ".log": load_text, "": load_text,
    ".md": load_markdown, ".markdown": load_markdown, ".mdx": load_markdown,
    ".html": load_html, ".htm": load_html, ".xhtml": load_html,
    ".pdf": load_pdf,
}
DEFAULT_MAX_BYTES = 50_000_000


@dataclass(frozen=True, slots=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A selected file, read and hashed but not parsed: unchanged files never reach a parser."""

    path: Path
    source: str
    data: bytes
    content_hash: str


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    if "/" not in pattern:
        pattern = "**/" + pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(rel: str, patterns: Sequence[str]) -> bool:
    return any(glob_regex(p).match(rel) for p in patterns)


def walk(root: Path, include: Sequence[str] = ("*",), exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Selected files under `root` in a stable (sorted) order; `root` may also be a single file."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if matches(rel, include) and not matches(rel, exclude):
                yield path


def read_candidate(path: Path, max_bytes: int = DEFAULT_MAX_BYTES, extra: frozenset[str] = frozenset()) -> Candidate:
    """Check type and size, read and hash. Raises `LoaderError` for what can be rejected without parsing.
    `extra`: suffixes another loader reads (`--loader llamaindex`)."""
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise LoaderError(path, f"too large ({size / 1e6:,.1f} MB, limit {max_bytes / 1e6:,.1f} MB)",
                              hint="Raise retrieval.max_file_mb in ember.toml to ingest it.")
        data = path.read_bytes()
    except OSError as e:
        raise LoaderError(path, f"cannot read ({e.strerror or e})") from None
    if suffix not in LOADERS and suffix not in extra:
        if suffix in LLAMAINDEX_SUFFIXES and not extra:
            raise LoaderError(path, f"unsupported file type {suffix!r}: Ember reads it with --loader llamaindex "
                                    "(pip install 'ember[integrations]')")
        if is_binary(data):
            raise LoaderError(path, f"binary file ({suffix or 'no suffix'}), not a document")
        supported = ", ".join(sorted({*(s for s in LOADERS if s), *extra}))
        raise LoaderError(path, f"unsupported file type {suffix!r} (supported: {supported})")
    return Candidate(path=path, source=source_of(path), data=data, content_hash=content_hash(data))


def parse(candidate: Candidate) -> Document:
    return LOADERS[candidate.path.suffix.lower()](candidate.path, candidate.data)


def load_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Load one file with the loader for its suffix; raises `LoaderError` with the reason."""
    return parse(read_candidate(Path(path), max_bytes))


def load_folder(root: str | Path, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[list[Document], list[Skipped]]:
    """Every selected file as a `Document`, and the ones that could not be loaded with their reasons."""
    docs, skipped = [], []
    for path in walk(Path(root), include, exclude):
        try:
            docs.append(load_file(path, max_bytes))
        except LoaderError as e:
            skipped.append(Skipped(str(path), e.reason))
    return docs, skipped
