"""Upload safety: names cannot escape the data directory, archives and unknown types get 415, oversized
files 413, and a refused upload writes nothing anywhere (no partial files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ServerFactory, wait_job

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_uploads_are_refused_safely(make_server: ServerFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = make_server(data_dir=data, max_upload_mb=0.01)  # 10 kB
    uploads = data / "uploads" / "safe"
    outside = files_under(tmp_path) - files_under(data)
    with server.client() as c:
        ok = c.post("/v1/collections/safe/files", files={"file": ("notes.md", b"# Notes\n\nEmber keeps notes.\n")})
        assert ok.status_code == 202
        assert wait_job(c, "safe", ok.json())["status"] == "done"
        before = files_under(data)
        for name in ["../evil.md", "../../evil.md", "..\\evil.md", "/tmp/evil.md", "sub/evil.md", "..", ".hidden.md",
                     "", "a\x00b.md"]:  # "" reaches us as a form field, not a file
            r = c.post("/v1/collections/safe/files", files={"file": (name, b"# evil\n", "text/markdown")})
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert r.json()["error"]["code"] in ("invalid_filename", "invalid_upload"), (name, r.text)
        for name, why in [("setup.exe", "unsupported file type"), ("docs.zip", "archives are not unpacked"),
                          ("docs.tar.gz", "archives are not unpacked"), ("photo.png", "unsupported file type")]:
            r = c.post("/v1/collections/safe/files", files={"file": (name, b"PK\x03\x04 data")})
            assert r.status_code == 415 and why in r.json()["error"]["message"], (name, r.text)
        big = c.post("/v1/collections/safe/files", files={"file": ("big.md", b"# big\n" + b"word " * 4000)})
        assert big.status_code == 413 and big.json()["error"]["code"] == "file_too_large"
        # a good file next to an oversized one: the whole upload is refused, nothing kept
        both = c.post("/v1/collections/safe/files", files=[("file", ("fine.md", b"# fine\n")),
                                                           ("file", ("big2.md", b"x" * 20_000))])
        assert both.status_code == 413
        bad_collection = c.post("/v1/collections/..%2F..%2Fescape/files", files={"file": ("a.md", b"# a\n")})
        assert bad_collection.status_code in (400, 404)
        assert c.post("/v1/collections/safe/files", content=b"not multipart",
                      headers={"Content-Type": "text/plain"}).status_code == 400
        assert files_under(data) == before  # nothing new in the data directory, no partial files
        assert sorted(p.name for p in uploads.iterdir()) == ["notes.md"]
        assert files_under(tmp_path) - files_under(data) == outside  # nothing written outside it
        docs = c.get("/v1/collections/safe").json()
        assert [f["source"] for f in docs["files"]] == ["notes.md"]
