"""Plain text: the decoded file is the document; the title is the file name without its suffix."""

from __future__ import annotations

from pathlib import Path

from ember.retrieval.loaders.base import Document, content_hash, decode_text, source_of


def load_text(path: Path, data: bytes) -> Document:
    text = decode_text(path, data)
    return Document(source=source_of(path), title=path.stem, text=text, content_hash=content_hash(data),
                    kind="text")
