"""Markdown: kept verbatim (the chunker reads its headings); title from front matter or the first `# `."""

from __future__ import annotations

import re
from pathlib import Path

from ember.retrieval.loaders.base import Document, content_hash, decode_text, source_of

FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
FRONT_TITLE = re.compile(r"^title:\s*['\"]?(.+?)['\"]?\s*$", re.M)
H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
SETEXT_H1 = re.compile(r"^(\S.*)\n=+\s*$", re.M)
INLINE_MARKUP = re.compile(r"[*_`]|\{.*?\}|<[^>]+>")


def markdown_title(text: str) -> str | None:
    front = FRONT_MATTER.match(text)
    if front and (m := FRONT_TITLE.search(front.group(1))):
        return m.group(1)
    candidates = [m for m in (H1.search(text), SETEXT_H1.search(text)) if m]
    if not candidates:
        return None
    first = min(candidates, key=lambda m: m.start())
    return INLINE_MARKUP.sub("", first.group(1)).strip() or None


def load_markdown(path: Path, data: bytes) -> Document:
    text = decode_text(path, data)
    return Document(source=source_of(path), title=markdown_title(text) or path.stem, text=text,
                    content_hash=content_hash(data), kind="markdown")
