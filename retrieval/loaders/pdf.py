"""PDF via pypdf: one text per page, joined by blank lines; `page_starts` keeps the page of every offset.

Encrypted files are opened when the empty user password works (common for "protected" PDFs) and are
otherwise skipped; corrupt files and files with no text layer (scans) are skipped with the reason.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ember.retrieval.errors import LoaderError, MissingDependencyError
from ember.retrieval.loaders.base import Document, content_hash, source_of

PAGE_BREAK = "\n\n"


def load_pdf(path: Path, data: bytes) -> Document:
    try:
        import pypdf
        from pypdf.errors import DependencyError, PyPdfError
    except ImportError:
        raise MissingDependencyError("pypdf", "Reading PDF") from None
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every font quirk as a warning
    if not data.strip():
        raise LoaderError(path, "empty file")
    if not data.lstrip().startswith(b"%PDF"):
        raise LoaderError(path, "corrupt PDF (no %PDF header)")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise LoaderError(path, "encrypted PDF (needs a password)", hint="Decrypt it first, e.g. qpdf --decrypt.")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = reader.metadata.get("/Title") if reader.metadata else None
    except LoaderError:
        raise
    except DependencyError:
        raise LoaderError(path, "encrypted PDF (AES) and the cryptography package is missing",
                          hint="pip install 'pypdf[crypto]'") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as e:
        raise LoaderError(path, f"corrupt PDF ({type(e).__name__}: {e})") from None
    if not any(pages):
        raise LoaderError(path, "PDF has no extractable text (scanned images?)")
    starts, parts, offset = [], [], 0
    for text in pages:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_BREAK)
    title = str(meta_title).strip() if meta_title else ""
    return Document(source=source_of(path), title=title or path.stem, text=PAGE_BREAK.join(parts),
                    content_hash=content_hash(data), kind="pdf", page_starts=tuple(starts))
