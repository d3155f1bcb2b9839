"""HTML: the main text only. Scripts, styles, navigation, headers, footers, asides and forms are dropped;
`<main>`, `<article>` or `[role=main]` is preferred over the whole `<body>`. Block elements become line
breaks so paragraphs survive for the chunker. Parsed with selectolax (lexbor), which never raises on bad HTML.
"""

from __future__ import annotations

import re
from pathlib import Path

from ember.retrieval.errors import LoaderError, MissingDependencyError
from ember.retrieval.loaders.base import Document, content_hash, decode_text, source_of

DROP = ("script, style, noscript, template, svg, canvas, iframe, nav, header, footer, aside, form, "
        "button, [role=navigation], [role=banner], [role=contentinfo], [aria-hidden=true]")
MAIN = ("main", "article", "[role=main]")
BLOCKS = ("p, div, section, h1, h2, h3, h4, h5, h6, li, pre, blockquote, table, tr, dt, dd, figcaption, "
          "ul, ol, dl, br, hr")
SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
BLANKS = re.compile(r"\n\s*\n\s*(\n\s*)*")


def load_html(path: Path, data: bytes) -> Document:
    try:
        from selectolax.lexbor import LexborHTMLParser
    except ImportError:
        raise MissingDependencyError("selectolax", "Reading HTML") from None
    html = decode_text(path, data)
    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node else ""
    for node in tree.css(DROP):
        node.decompose()
    root = next((n for sel in MAIN if (n := tree.css_first(sel)) is not None), None) or tree.body
    if root is None:
        raise LoaderError(path, "HTML without a body")
    if not title and (h1 := root.css_first("h1")) is not None:
        title = h1.text(strip=True)
    for node in root.css(BLOCKS):
        node.insert_before("\n\n")
        node.insert_after("\n\n")
    raw = root.text(deep=True, separator="")
    lines = (SPACES.sub(" ", line).strip() for line in raw.split("\n"))
    text = BLANKS.sub("\n\n", "\n".join(lines)).strip()
    if not text:
        raise LoaderError(path, "HTML page has no main text")
    return Document(source=source_of(path), title=title or path.stem, text=text, content_hash=content_hash(data),
                    kind="html")
