from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pypdf
import pytest

from ember.retrieval.errors import LoaderError
from ember.retrieval.loaders import load_file, load_folder, walk

from .conftest import FASTAPI, PDFS


def test_text_and_markdown(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("\ufeffPlain notes.\n")
    doc = load_file(tmp_path / "notes.txt")
    assert doc.kind == "text" and doc.title == "notes" and doc.text == "Plain notes.\n"
    assert doc.source == (tmp_path / "notes.txt").resolve().as_posix() and len(doc.content_hash) == 64
    md = load_file(FASTAPI / "tutorial" / "query-params.md")
    assert md.kind == "markdown" and md.title == "Query Parameters"
    assert md.text == (FASTAPI / "tutorial" / "query-params.md").read_text()  # verbatim: spans index the file
    (tmp_path / "front.md").write_text("---\ntitle: 'From front matter'\n---\n# Heading\nbody\n")
    assert load_file(tmp_path / "front.md").title == "From front matter"


def test_html_keeps_main_text_only(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<html><head><title>Ember docs</title><style>p{color:red}</style><script>track()</script></head><body>"
        "<header>Site header</header><nav><a href='/'>Home</a> | <a>About</a></nav>"
        "<main><h1>Install</h1><p>Run <code>make setup</code> first.</p><p>Then <b>make</b> test.</p>"
        "<ul><li>one</li><li>two</li></ul></main><aside>Ads</aside><footer>© 2026</footer></body></html>")
    doc = load_file(tmp_path / "page.html")
    assert doc.kind == "html" and doc.title == "Ember docs"
    assert doc.text == "Install\n\nRun make setup first.\n\nThen make test.\n\none\n\ntwo"
    for noise in ("track", "color", "Home", "Site header", "Ads", "2026"):
        assert noise not in doc.text


def test_pdf_pages_and_title() -> None:
    doc = load_file(PDFS / "aosa-bash.pdf")
    assert doc.kind == "pdf" and len(doc.page_starts) == 20
    assert "Bourne-Again Shell" in doc.text[: doc.page_starts[1]]
    assert doc.page_at(0) == 1 and doc.page_at(doc.page_starts[5]) == 6 and doc.page_at(len(doc.text) - 1) == 20
    reader = pypdf.PdfReader(PDFS / "aosa-bash.pdf")
    page7 = reader.pages[6].extract_text().strip()
    assert doc.text[doc.page_starts[6]: doc.page_starts[6] + len(page7)] == page7


def test_encrypted_pdf(tmp_path: Path) -> None:
    for user_password, name in (("secret", "locked.pdf"), ("", "owner-only.pdf")):
        writer = pypdf.PdfWriter(clone_from=PDFS / "aosa-bash.pdf")
        writer.encrypt(user_password=user_password, owner_password="owner", algorithm="AES-128")
        writer.write(tmp_path / name)
    with pytest.raises(LoaderError, match="encrypted PDF"):
        load_file(tmp_path / "locked.pdf")
    assert "Bourne-Again Shell" in load_file(tmp_path / "owner-only.pdf").text  # empty user password opens


def test_bad_files_are_reported_and_the_rest_ingests(tmp_path: Path) -> None:
    good = tmp_path / "good.md"
    good.write_text("# Good\n\nFine text.\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("  \n\n")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    (tmp_path / "nul.txt").write_bytes(b"text\x00with nul")
    (tmp_path / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4)
    (tmp_path / "not-a.pdf").write_text("hello")
    (tmp_path / "huge.txt").write_text("x" * 5000)
    (tmp_path / "data.json").write_text("{}")
    docs, skipped = load_folder(tmp_path, max_bytes=4000)
    assert [d.title for d in docs] == ["Good"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert reasons["empty.txt"] == "empty file" and reasons["blank.md"] == "empty file"
    assert reasons["latin1.txt"].startswith("not UTF-8 text (invalid byte 0xe9 at offset 3)")
    assert reasons["image.png"].startswith("binary file")
    assert reasons["nul.txt"].startswith("binary file")
    assert reasons["corrupt.pdf"].startswith("corrupt PDF")
    assert reasons["not-a.pdf"] == "corrupt PDF (no %PDF header)"
    assert reasons["huge.txt"].startswith("too large (0.0 MB, limit 0.0 MB)")
    assert reasons["data.json"].startswith("unsupported file type '.json'")
    assert len(reasons) == 9


def test_walk_globs(tmp_path: Path) -> None:
    for name in ("a.md", "docs/b.md", "docs/deep/c.md", "docs/deep/d.txt", "build/e.md", ".git/f.md",
                 "docs/.hidden.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")

    def rel(paths: Iterator[Path]) -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in paths]

    assert rel(walk(tmp_path)) == ["a.md", "build/e.md", "docs/b.md", "docs/deep/c.md", "docs/deep/d.txt"]
    assert rel(walk(tmp_path, include=["*.md"], exclude=["build/**"])) == ["a.md", "docs/b.md", "docs/deep/c.md"]
    assert rel(walk(tmp_path, include=["docs/**/*.md"])) == ["docs/b.md", "docs/deep/c.md"]
    assert rel(walk(tmp_path, include=["docs/*"])) == ["docs/b.md"]
    assert rel(walk(tmp_path, exclude=["deep"])) == ["a.md", "build/e.md", "docs/b.md", "docs/deep/c.md",
                                                     "docs/deep/d.txt"]  # a bare name matches files, not folders
    assert list(walk(tmp_path / "a.md")) == [tmp_path / "a.md"]  # a single file is its own walk


def test_whole_fastapi_docs_folder_loads() -> None:
    docs, skipped = load_folder(FASTAPI.parents[2], include=["*.md"])
    assert len(docs) == 155 and skipped == []
    assert all(d.kind == "markdown" and d.text for d in docs)
