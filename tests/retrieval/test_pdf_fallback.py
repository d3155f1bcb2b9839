"""Issue 18: valid PDFs that pypdf refuses at one of its reader limits are read by the second reader (PDFium),
not called corrupt; scanned PDFs (images, no text layer) are named as such.

The manual page is real groff output (`groff -man -Tpdf` on a man(7) source written here; Debian's groff,
which .ci/run installs). The groff builds the issue was found with write 257 character widths per font
(FirstChar 0, LastChar 256), which trips pypdf's "Too many character widths: 257 > 256"; Debian's 1.22.4
writes 256, so the fixture widens each font's /Widths by one entry, exactly that difference. pypdf is
checked to refuse the fixture, so the test cannot pass without the fallback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pypdf
import pytest
from PIL import Image, ImageDraw
from pypdf.errors import LimitReachedError
from pypdf.generic import ArrayObject, NameObject, NumberObject

from ember.retrieval.errors import LoaderError
from ember.retrieval.loaders import load_file

OPTIONS = [("--collection NAME", "answer from the documents of collection NAME, with citations"),
           ("--max-tokens N", "stop the answer after N tokens"), ("--temperature T", "sample at temperature T"),
           ("--stop TEXT", "end the answer where TEXT appears"), ("--seed N", "make sampling repeatable")]
MAN_SOURCE = "\n".join([
    '.TH EMBER 1 "December 2026" "Ember 0.1" "User Commands"', ".SH NAME",
    "ember \\- chat over your own documents, list directory contents of collections", ".SH SYNOPSIS",
    ".B ember", "[\\fIOPTION\\fR]... \\fICOMMAND\\fR", ".SH DESCRIPTION",
    "Ember is a self-hosted LLM stack. It reads Markdown, text, HTML and PDF files into collections and answers "
    "questions from them.",
    ".SH OPTIONS",
    *[line for n in range(12) for name, text in OPTIONS
      for line in (".TP", f".BR {name.split()[0]}{n or ''} \\fI{name.split()[1]}\\fR", f"{text} (variant {n}).")],
    ".SH EXAMPLES", ".nf", "ember ingest ./docs --collection docs", "ember search \"almost-all\" -c docs", ".fi",
    ".SH SEE ALSO", ".BR groff (1)", ""])
needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (apt-get install groff)")


def groff_pdf(tmp_path: Path) -> Path:
    """A manual page rendered by groff's own PDF device, as `man -Tpdf` does."""
    source = tmp_path / "ember.1"
    source.write_text(MAN_SOURCE)
    out = tmp_path / "ember-groff.pdf"
    with out.open("wb") as f:
        subprocess.run(["groff", "-man", "-Tpdf", str(source)], stdout=f, check=True, timeout=60)
    return out


def widen_widths(src: Path, dst: Path) -> int:
    """Every simple font of `src` with 256 widths gets a 257th (LastChar 256), as newer gropdf writes them."""
    writer = pypdf.PdfWriter(clone_from=src)
    widened = 0
    for page in writer.pages:
        resources: Any = page["/Resources"].get_object()
        for ref in resources.get("/Font", {}).values():
            font = ref.get_object()
            widths = font.get("/Widths")
            if widths is not None and len(widths.get_object()) == 256:
                font[NameObject("/Widths")] = ArrayObject([*widths.get_object(), NumberObject(0)])
                font[NameObject("/LastChar")] = NumberObject(256)
                widened += 1
    writer.write(dst)
    return widened


@needs_groff
def test_groff_man_page_over_pypdf_limit_is_read_by_pdfium(tmp_path: Path) -> None:
    plain = groff_pdf(tmp_path)
    limited = tmp_path / "ls.pdf"
    assert widen_widths(plain, limited) > 0
    with pytest.raises(LimitReachedError, match="257 > 256"):  # what made Ember call the file corrupt
        [p.extract_text() for p in pypdf.PdfReader(limited).pages]
    doc = load_file(limited)
    assert doc.kind == "pdf" and len(doc.page_starts) == len(pypdf.PdfReader(plain).pages) >= 2
    assert "list directory contents" in doc.text[: doc.page_starts[1]]
    assert "almost-all" in doc.text.replace("\u2212", "-") and "variant 11" in doc.text
    assert doc.page_at(len(doc.text) - 1) == len(doc.page_starts)
    # the untouched groff file still goes through pypdf, with the same words
    assert load_file(plain).text.split()[:20] == doc.text.split()[:20]


def test_hand_built_pdf_over_the_limit_without_groff(tmp_path: Path) -> None:
    """The same reader limit on a minimal hand-written PDF (no groff needed): a Type1 font with 257 widths."""
    text = b"BT /F1 18 Tf 72 720 Td (Ember reads this page) Tj ET"
    widths = b" ".join([b"600"] * 257)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /FirstChar 0 /LastChar 256 /Widths [%s] >>" % widths,
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path = tmp_path / "limit.pdf"
    path.write_bytes(bytes(out))
    with pytest.raises(LimitReachedError):
        pypdf.PdfReader(path).pages[0].extract_text()
    assert load_file(path).text == "Ember reads this page"


def test_scanned_pdf_is_named_as_such(tmp_path: Path) -> None:
    pages = []
    for n in (1, 2):
        img = Image.new("L", (850, 1100), 255)
        ImageDraw.Draw(img).text((80, 80), f"Scanned page {n}: printed text, but only pixels", fill=0)
        pages.append(img)
    scan = tmp_path / "scan.pdf"
    pages[0].save(scan, "PDF", save_all=True, append_images=pages[1:], resolution=100)
    with pytest.raises(LoaderError) as e:
        load_file(scan)
    assert e.value.reason == "scanned PDF: 2 page(s) of images and no text layer"
    assert e.value.hint is not None and "ocrmypdf" in e.value.hint
    blank = tmp_path / "blank.pdf"
    writer = pypdf.PdfWriter()
    writer.add_blank_page(612, 792)
    writer.write(blank)
    with pytest.raises(LoaderError, match="no text layer and no images"):
        load_file(blank)


def test_a_really_corrupt_pdf_is_still_corrupt_after_both_readers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    with pytest.raises(LoaderError) as e:
        load_file(bad)
    assert e.value.reason.startswith("corrupt PDF (pypdf: ") and "PDFium" in e.value.reason
