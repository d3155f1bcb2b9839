"""PDF via pypdf, with PDFium (pypdfium2) as the second reader: one text per page, joined by blank lines;
`page_starts` keeps the page of every offset.

pypdf refuses some valid files on purpose: its reader limits (`LimitReachedError`, e.g. "Too many character
widths: 257 > 256" on fonts some groff versions write) guard it against hostile files, so a refusal by pypdf
alone is not proof of corruption. Those files, and any other pypdf cannot parse, are read again with PDFium
(Chrome's PDF engine) before they are called corrupt. Encrypted files are opened when the empty user password
works (common for "protected" PDFs) and are otherwise skipped; a file with no text layer is skipped as a
scan when its pages hold images (it needs OCR first), and as empty otherwise.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from ember.retrieval.errors import LoaderError, MissingDependencyError
from ember.retrieval.loaders.base import Document, content_hash, source_of

PAGE_BREAK = "\n\n"
OCR_HINT = "Add a text layer first, e.g. `ocrmypdf scan.pdf scan-ocr.pdf`, then ingest that file."


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
    images: int | None = None
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == pypdf.PasswordType.NOT_DECRYPTED:
            raise LoaderError(path, "encrypted PDF (needs a password)", hint="Decrypt it first, e.g. qpdf --decrypt.")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = reader.metadata.get("/Title") if reader.metadata else None
        if not any(pages):
            images = sum(_image_count(page) for page in reader.pages)
    except LoaderError:
        raise
    except DependencyError:
        raise LoaderError(path, "encrypted PDF (AES) and the cryptography package is missing",
                          hint="pip install 'pypdf[crypto]'") from None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as e:
        # a reader limit or a parser gap of pypdf's: the second reader decides whether the file is corrupt
        pages, meta_title, images = _read_with_pdfium(path, data, f"{type(e).__name__}: {e}")
    if not any(pages):
        if images:
            raise LoaderError(path, f"scanned PDF: {len(pages)} page(s) of images and no text layer", hint=OCR_HINT)
        raise LoaderError(path, "PDF has no extractable text (no text layer and no images)")
    starts, parts, offset = [], [], 0
    for text in pages:
        starts.append(offset)
        parts.append(text)
        offset += len(text) + len(PAGE_BREAK)
    title = str(meta_title).strip() if meta_title else ""
    return Document(source=source_of(path), title=title or path.stem, text=PAGE_BREAK.join(parts),
                    content_hash=content_hash(data), kind="pdf", page_starts=tuple(starts))


def _image_count(page: object) -> int:
    try:
        return len(page.images)  # type: ignore[attr-defined]
    except Exception:  # an image pypdf cannot decode still counts as "not text"
        return 1


def _read_with_pdfium(path: Path, data: bytes, first_error: str) -> tuple[list[str], str | None, int]:
    """(page texts, title, image count) from PDFium; `LoaderError` naming both readers when it fails too."""
    try:
        import pypdfium2 as pdfium
        import pypdfium2.raw as pdfium_c
    except ImportError:
        raise LoaderError(path, f"PDF that pypdf cannot read ({first_error})",
                          hint="pip install pypdfium2 (the second PDF reader) and ingest again.") from None
    try:
        doc = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise LoaderError(path, f"corrupt PDF (pypdf: {first_error}; PDFium: {e})") from None
    try:
        pages, images = [], 0
        for i in range(len(doc)):
            page = doc[i]
            try:
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_bounded()
                finally:
                    textpage.close()
                pages.append(text.replace("\r\n", "\n").replace("\r", "\n").strip())
                images += sum(1 for _ in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=2))
            finally:
                page.close()
        title = doc.get_metadata_dict().get("Title") or None
    except pdfium.PdfiumError as e:
        raise LoaderError(path, f"corrupt PDF (pypdf: {first_error}; PDFium: {e})") from None
    finally:
        doc.close()
    return pages, title, images
