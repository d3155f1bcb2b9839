"""`ember ingest`, `ember search` and `ember collections` run for real as the console script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pypdf

from ..platform.test_cli import run
from .conftest import FASTAPI, PDFS


def test_ingest_search_collections_on_a_mixed_folder(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(FASTAPI / "tutorial" / "cors.md", docs / "cors.md")
    pdf = pypdf.PdfWriter()
    for page in pypdf.PdfReader(PDFS / "aosa-bash.pdf").pages[4:7]:  # three real pages keep the test quick
        pdf.add_page(page)
    pdf.write(docs / "bash.pdf")
    (docs / "page.html").write_text("<html><head><title>Kettles</title><script>x()</script></head><body><nav>Menu"
                                    "</nav><main><p>A kettle boils water for tea.</p></main></body></html>")
    (docs / "notes.txt").write_text("Quokkas live on Rottnest Island.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really")
    (docs / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    (docs / "empty.md").write_text("")
    (docs / "blob.bin").write_bytes(bytes(range(256)))
    env = {"EMBER_DATA_DIR": str(tmp_path / "data"), "EMBER_RETRIEVAL__CHUNK_SIZE": "128"}

    out = run("ingest", "docs", "--collection", "mix", "--tag", "demo", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "8 files: 4 added, 0 updated, 0 removed, 0 unchanged, 4 skipped" in out.stdout
    assert "chunks of 128 tokens, overlap 32" in out.stdout and "chunks/s" in out.stdout
    for needle in ("docs/broken.pdf: corrupt PDF", "docs/latin1.txt: not UTF-8 text", "docs/empty.md: empty file",
                   "docs/blob.bin: binary file"):
        assert needle in out.stdout, out.stdout

    hits = run("search", "Where do quokkas live?", "-c", "mix", "-k", "3", "--json", cwd=tmp_path, env=env)
    assert hits.returncode == 0, hits.stderr
    results = [json.loads(line) for line in hits.stdout.splitlines()]
    assert len(results) == 3 and results[0]["source"].endswith("notes.txt") and results[0]["rank"] == 1
    pretty = run("search", "readline command line editing", "-c", "mix", "--mode", "bm25", "-k", "2",
                 "--source", "*.pdf", cwd=tmp_path, env=env)
    assert pretty.returncode == 0, pretty.stderr
    assert pretty.stdout.startswith("1. ") and "docs/bash.pdf" in pretty.stdout and ", page " in pretty.stdout
    assert "2. " in pretty.stdout and "cors.md" not in pretty.stdout

    again = run("ingest", "docs", "-c", "mix", cwd=tmp_path, env=env)
    assert "0 added, 0 updated, 0 removed, 4 unchanged, 4 skipped · 0 chunks" in again.stdout

    listing = run("collections", "list", cwd=tmp_path, env=env)
    assert listing.returncode == 0 and "mix" in listing.stdout and "cosine" in listing.stdout
    info = run("collections", "info", "mix", cwd=tmp_path, env=env)
    assert "index files match the database" in info.stdout and "1 html, 1 markdown, 1 pdf, 1 text" in info.stdout

    other = run("search", "tea", "-c", "mix", "--embedder", str(tmp_path), cwd=tmp_path, env=env)
    assert other.returncode == 1 and "not a sentence-transformers model folder" in other.stderr
    missing = run("search", "tea", "-c", "nope", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no collection named 'nope'" in missing.stderr
    assert "ember ingest PATH --collection nope" in missing.stderr and "Traceback" not in missing.stderr

    deleted = run("collections", "delete", "mix", "--yes", cwd=tmp_path, env=env)
    assert deleted.returncode == 0 and "deleted mix" in deleted.stdout
    assert "No collections yet" in run("collections", "list", cwd=tmp_path, env=env).stdout


def test_help_is_complete(tmp_path: Path) -> None:
    top = run("--help", cwd=tmp_path).stdout
    for cmd in ("ingest", "search", "collections"):
        assert cmd in top
    ingest_help = run("ingest", "--help", cwd=tmp_path).stdout
    for opt in ("--collection", "--include", "--exclude", "--tag", "--embedder", "--index", "--metric",
                "--chunk-size", "--chunk-overlap"):
        assert opt in ingest_help
    search_help = run("search", "--help", cwd=tmp_path).stdout
    for opt in ("--collection", "--mode", "-k", "--source", "--tag", "--json"):
        assert opt in search_help
    col_help = run("collections", "--help", cwd=tmp_path).stdout
    for cmd in ("list", "info", "delete", "reembed"):
        assert cmd in col_help
    bad = run("ingest", str(tmp_path), "-c", "x", "--chunk-size", "64", "--chunk-overlap", "64", cwd=tmp_path,
              env={"EMBER_DATA_DIR": str(tmp_path / "d")})
    assert bad.returncode == 2 and "chunk overlap must be in [0, size=64)" in bad.stderr
    assert "Traceback" not in bad.stderr
