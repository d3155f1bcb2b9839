"""LlamaIndex's file readers as an Ember loader (`ember ingest --loader llamaindex`).

Ember reads text, Markdown, HTML and PDF itself; with this loader every other suffix LlamaIndex's
`SimpleDirectoryReader` has a reader for (docx, pptx, epub, ipynb, csv, ...) is read by LlamaIndex, and the
pieces it returns (pages, slides, cells, rows) are joined into one Ember `Document` whose text the chunker
splits, so chunk spans point into that joined text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ember.retrieval.errors import LoaderError
from ember.retrieval.integrations import PIP, require
from ember.retrieval.loaders.base import Document, content_hash

PURPOSE = "--loader llamaindex"
# LlamaIndex's default readers for documents (`SimpleDirectoryReader`); its image, audio and video readers
# are left out (they run models that would be downloaded), and so is PDF, which Ember reads itself.
SUFFIXES = frozenset({".docx", ".pptx", ".pptm", ".epub", ".ipynb", ".csv", ".mbox", ".hwp", ".xls", ".xlsx"})


class LlamaIndexReader:
    """A `Loader` for the suffixes LlamaIndex reads and Ember does not (`suffixes`)."""

    def __init__(self) -> None:
        base = require("llama_index.core.readers.file.base", "llama-index-core", PURPOSE)
        require("llama_index.readers.file", "llama-index-readers-file", PURPOSE)  # the readers themselves
        self._reader_cls: Any = base.SimpleDirectoryReader
        self.suffixes = SUFFIXES

    def __call__(self, path: Path, data: bytes) -> Document:
        try:
            docs = self._reader_cls(input_files=[str(path)], raise_on_error=True).load_data()
        except ImportError as e:  # a reader's own dependency, e.g. docx2txt for .docx
            raise LoaderError(path, f"LlamaIndex's reader needs a package that is not installed ({e})",
                              hint=f"Install the integrations extra: {PIP}") from None
        except Exception as e:  # readers raise anything on corrupt files; one bad file must not stop the ingest
            raise LoaderError(path, f"LlamaIndex could not read it ({type(e).__name__}: {e})") from None
        text = "\n\n".join(d.text.strip() for d in docs if d.text and d.text.strip())
        if not text:
            raise LoaderError(path, "no text (LlamaIndex's reader returned none)")
        return Document(source=path.resolve().as_posix(), title=path.stem, text=text,
                        content_hash=content_hash(data), kind=path.suffix.lower().lstrip("."))
