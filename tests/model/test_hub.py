"""`pull_hf` against a loopback HTTP server that serves tiny models in the Hugging Face hub's URL layout.

The server speaks what huggingface_hub 2.4 asks for: `GET /api/models/{repo}/revision/{rev}?blobs=true` (the
commit sha and the files with sizes, LFS sha256 and git blob ids) and `GET/HEAD /{repo}/resolve/{rev}/{file}`
(ETag, X-Repo-Commit, X-Linked-Size, Content-Length, byte ranges), with the hub's X-Error-Code on a 404.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import pytest
import torch

from ember.model.errors import ConfigError, DownloadError, UnsupportedModelError
from ember.model.hub import parse_ref, pull_hf
from ember.model.loader import export_hf, load
from ember.model.registry import GGUF_NAME, MARKER, source_info
from tests.model.conftest import GGUFBuilder

REV1, REV2 = hashlib.sha1(b"rev1").hexdigest(), hashlib.sha1(b"rev2").hexdigest()
LFS = (".safetensors", ".gguf")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Hub:
    """Repos: repo -> commit -> files; refs: repo -> branch/tag -> commit."""

    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    refs: dict[str, dict[str, str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    flaky: set[str] = field(default_factory=set)  # files whose GETs break off (the first halfway, then at once)
    tampered: set[str] = field(default_factory=set)  # files served with their last byte changed
    endpoint: str = ""

    def add(self, repo: str, commit: str, files: dict[str, bytes], *branches: str) -> None:
        self.repos.setdefault(repo, {})[commit] = files
        for b in branches:
            self.refs.setdefault(repo, {})[b] = commit

    def commit(self, repo: str, rev: str) -> str | None:
        return rev if rev in self.repos.get(repo, {}) else self.refs.get(repo, {}).get(rev)

    def gets(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.endswith("/" + name)]


def make_handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def not_found(self, code: str) -> None:
            self.send(404, json.dumps({"error": code}).encode(), {"X-Error-Code": code,
                                                                   "Content-Type": "application/json"})

        def do_HEAD(self) -> None:
            self.serve(head=True)

        def do_GET(self) -> None:
            self.serve(head=False)

        def serve(self, head: bool) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.seen.append(Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                repo, rev = m[1], m[2] or "main"
                if repo not in hub.repos:
                    return self.not_found("RepoNotFound")
                commit = hub.commit(repo, rev)
                if commit is None:
                    return self.not_found("RevisionNotFound")
                siblings = []
                for name, data in sorted(hub.repos[repo][commit].items()):
                    s: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
                    if name.endswith(LFS):
                        s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    siblings.append(s)
                body = {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings,
                        "cardData": {"license": "apache-2.0"}}
                return self.send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m is None or m[1] not in hub.repos:
                return self.not_found("RepoNotFound")
            repo, rev, name = m[1], m[2], m[3]
            commit = hub.commit(repo, rev)
            if commit is None:
                return self.not_found("RevisionNotFound")
            if name not in hub.repos[repo][commit]:
                return self.not_found("EntryNotFound")
            data = hub.repos[repo][commit][name]
            etag = hashlib.sha256(data).hexdigest() if name.endswith(LFS) else git_sha1(data)
            headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if name.endswith(LFS):
                headers["X-Linked-Size"] = str(len(data))
                headers["X-Linked-Etag"] = f'"{etag}"'
            if not head and name in hub.flaky:
                if len(hub.gets(name)) > 1:  # already broken off once: drop the connection at once
                    return self.drop()
                self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self.drop()
            if name in hub.tampered:
                data = data[:-1] + bytes([data[-1] ^ 1])
            start = 0
            if (rng := self.headers.get("Range")) and (rm := re.fullmatch(r"bytes=(\d+)-", rng)):
                start = int(rm[1])
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self.send(206, data[start:], headers, head)
            return self.send(200, data, headers, head)

        def drop(self) -> None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Hub]:
    """A loopback hub; HF_ENDPOINT points at it (huggingface_hub reads it once, at import: patched there too)."""
    from huggingface_hub import close_session

    state = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    point_hub_at(monkeypatch, state.endpoint, tmp_path)
    yield state
    close_session()
    server.shutdown()
    server.server_close()


def point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)  # no real token ever goes to the loopback server
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


@pytest.fixture
def tiny_hf(write_tiny_gguf: GGUFBuilder, tmp_path: Path) -> dict[str, bytes]:
    """The files of an HF folder of a tiny random Llama with a byte-level BPE tokenizer (float32)."""
    src = load(write_tiny_gguf(), dtype="float32")
    folder = export_hf(src.model, src.tokenizer, tmp_path / "export", dtype=torch.float32)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    files["LICENSE"] = b"Apache License 2.0 (test)\n"
    files["README.md"] = b"# tiny\n"
    files["pytorch_model.bin"] = b"not for us"  # neither .bin weights ...
    files["tiny.gguf"] = b"GGUF nor a GGUF copy"  # ... nor GGUF copies are part of an HF folder pull
    return files


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "data" / "models"


def logits(folder: Path) -> torch.Tensor:
    m = load(folder, dtype="float32")
    with torch.no_grad():
        return m.model(torch.tensor([m.tokenizer.encode("the theme")]))


def test_safetensors_repo_pull_loads_with_the_same_logits(hub: Hub, tiny_hf: dict[str, bytes], models: Path,
                                                          tmp_path: Path) -> None:
    hub.add("Ember/Tiny-Llama", REV1, tiny_hf, "main")
    seen: list[tuple[int, int]] = []
    folder = pull_hf("hf:Ember/Tiny-Llama", models, progress=lambda d, t: seen.append((d, t)))
    assert folder == models / "tiny-llama"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        {*tiny_hf} - {"pytorch_model.bin", "tiny.gguf"} | {MARKER})
    torch.testing.assert_close(logits(folder), logits(tmp_path / "export"), atol=0, rtol=0)
    info = source_info(folder)
    assert info is not None
    assert info["source"] == "hf:Ember/Tiny-Llama" and info["repo"] == "Ember/Tiny-Llama"
    assert info["revision"] == REV1 and info["format"] == "safetensors" and info["license"] == "apache-2.0"
    assert info["files"]["model.safetensors"] == hashlib.sha256(tiny_hf["model.safetensors"]).hexdigest()
    assert seen and seen[-1] == (len(tiny_hf["model.safetensors"]),) * 2
    assert not (models.parent / "downloads" / "hf" / "Ember--Tiny-Llama" / REV1).exists()  # cache removed
    assert all("authorization" not in s.headers for s in hub.seen)  # no token: none sent
    # pulling again is a no-op: one revision look-up, no file download
    n = len(hub.seen)
    assert pull_hf("hf:Ember/Tiny-Llama", models) == folder
    assert [s.method for s in hub.seen[n:]] == ["GET"] and "/api/models/" in hub.seen[n].path


def test_a_sharded_repo_pulls_only_the_shards_its_index_names(hub: Hub, tiny_hf: dict[str, bytes], models: Path,
                                                               tmp_path: Path) -> None:
    from safetensors.torch import load, save

    state = load(tiny_hf["model.safetensors"])
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    files = {k: v for k, v in tiny_hf.items() if k != "model.safetensors"}
    files |= {name: save({k: state[k] for k in ks}) for name, ks in shards.items()}
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}).encode()
    files["consolidated.safetensors"] = tiny_hf["model.safetensors"]  # a second copy some repos ship
    hub.add("Ember/Sharded", REV1, files, "main")
    folder = pull_hf("hf:Ember/Sharded", models)
    assert not hub.gets("consolidated.safetensors") and not (folder / "consolidated.safetensors").exists()
    assert all((folder / name).is_file() for name in shards)
    torch.testing.assert_close(logits(folder), logits(tmp_path / "export"), atol=0, rtol=0)


def test_gguf_file_pull_is_byte_identical(hub: Hub, write_tiny_gguf: GGUFBuilder, models: Path) -> None:
    gguf = write_tiny_gguf("Tiny-Q8_0.gguf").read_bytes()
    hub.add("Ember/Tiny-GGUF", REV1, {"Tiny-Q8_0.gguf": gguf, "other.gguf": b"GGUF other", "LICENSE": b"MIT\n"},
            "main")
    folder = pull_hf("hf:Ember/Tiny-GGUF:Tiny-Q8_0.gguf", models)
    assert folder == models / "tiny-q8_0"
    assert (folder / GGUF_NAME).read_bytes() == gguf
    assert sorted(p.name for p in folder.iterdir()) == sorted([GGUF_NAME, "LICENSE", MARKER])
    assert not hub.gets("other.gguf")
    info = source_info(folder)
    assert info is not None and info["file"] == "Tiny-Q8_0.gguf" and info["format"] == "gguf"
    load(folder / GGUF_NAME, dtype="float32")  # it loads
    with pytest.raises(DownloadError, match=r"no file 'missing.gguf'.*\n.*other.gguf"):
        pull_hf("hf:Ember/Tiny-GGUF:missing.gguf", models)


def test_revision_pin_is_honoured(hub: Hub, write_tiny_gguf: GGUFBuilder, models: Path) -> None:
    one, two = write_tiny_gguf("a.gguf", seed=1).read_bytes(), write_tiny_gguf("b.gguf", seed=2).read_bytes()
    hub.add("Ember/Two", REV1, {"m.gguf": one}, "v1")
    hub.add("Ember/Two", REV2, {"m.gguf": two}, "main")
    folder = pull_hf(f"hf:Ember/Two:m.gguf@{REV1}", models)
    assert (folder / GGUF_NAME).read_bytes() == one
    assert source_info(folder)["revision"] == REV1
    n = len(hub.seen)
    pull_hf(f"hf:Ember/Two:m.gguf@{REV1}", models)  # a commit pin already present: not even a look-up
    assert len(hub.seen) == n
    pull_hf("hf:Ember/Two:m.gguf", models)  # the default branch moved on: the new commit replaces it
    assert (folder / GGUF_NAME).read_bytes() == two
    assert source_info(folder)["revision"] == REV2
    pull_hf("hf:Ember/Two:m.gguf@v1", models, name="two-v1")  # a tag, into a folder of its own
    assert (models / "two-v1" / GGUF_NAME).read_bytes() == one
    assert all(f"/resolve/{REV1}/" in s.path for s in hub.gets("m.gguf")[:1])  # files fetched by commit
    with pytest.raises(DownloadError, match="no revision 'nope'"):
        pull_hf("hf:Ember/Two:m.gguf@nope", models, name="x")


def test_an_interrupted_download_resumes_with_a_range_request(hub: Hub, tiny_hf: dict[str, bytes], models: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants, file_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # bytes reach the file before the drop
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda _s: None))  # its retries, at once
    hub.add("Ember/Tiny-Llama", REV1, tiny_hf, "main")
    hub.flaky.add("model.safetensors")
    with pytest.raises(DownloadError, match="could not download") as e:
        pull_hf("hf:Ember/Tiny-Llama", models)
    assert "HF_ENDPOINT" in str(e.value) and "resumes" in str(e.value)
    assert not (models / "tiny-llama").exists()  # nothing half-installed
    partial = models.parent / "downloads" / "hf" / "Ember--Tiny-Llama" / REV1 / "model.safetensors.incomplete"
    size = len(tiny_hf["model.safetensors"])
    kept = partial.stat().st_size
    assert 0 < kept < size
    hub.flaky.clear()
    n = len(hub.gets("model.safetensors"))
    folder = pull_hf("hf:Ember/Tiny-Llama", models)
    resumed = hub.gets("model.safetensors")[n:]
    assert [s.headers.get("range") for s in resumed] == [f"bytes={kept}-"]
    assert (folder / "model.safetensors").read_bytes() == tiny_hf["model.safetensors"]
    load(folder, dtype="float32")


def test_a_corrupted_download_is_refused(hub: Hub, write_tiny_gguf: GGUFBuilder, models: Path) -> None:
    hub.add("Ember/Bad", REV1, {"b.gguf": write_tiny_gguf().read_bytes()}, "main")
    hub.tampered.add("b.gguf")
    with pytest.raises(DownloadError, match="does not match the hub's checksum"):
        pull_hf("hf:Ember/Bad:b.gguf", models)
    assert not (models / "b").exists()
    assert not list((models.parent / "downloads" / "hf" / "Ember--Bad" / REV1).iterdir())


def test_bearer_token_is_sent_when_given(hub: Hub, write_tiny_gguf: GGUFBuilder, models: Path) -> None:
    hub.add("Ember/Private", REV1, {"p.gguf": write_tiny_gguf().read_bytes()}, "main")
    pull_hf("hf:Ember/Private:p.gguf", models, token="hf_secret123")
    assert hub.seen and all(s.headers.get("authorization") == "Bearer hf_secret123" for s in hub.seen)


def test_offline_gives_a_clear_download_error(monkeypatch: pytest.MonkeyPatch, models: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_hub_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path)
    with pytest.raises(DownloadError, match="could not download hf:Ember/Tiny") as e:
        pull_hf("hf:Ember/Tiny", models)
    assert f"127.0.0.1:{port}" in str(e.value) and "HF_ENDPOINT" in str(e.value) and "network" in str(e.value)
    assert not models.exists()


def test_offline_keeps_an_installed_copy(hub: Hub, write_tiny_gguf: GGUFBuilder, models: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add("Ember/Tiny", REV1, {"t.gguf": write_tiny_gguf().read_bytes()}, "main")
    folder = pull_hf("hf:Ember/Tiny:t.gguf", models)
    point_hub_at(monkeypatch, "http://127.0.0.1:9", tmp_path)  # the discard port: nothing listens
    steps: list[str] = []
    assert pull_hf("hf:Ember/Tiny:t.gguf", models, step=steps.append) == folder
    assert "Could not reach http://127.0.0.1:9" in steps[-1]


def test_unknown_repo_or_a_gguf_only_repo(hub: Hub, models: Path) -> None:
    hub.add("Ember/OnlyGGUF", REV1, {"x.gguf": b"GGUF", "README.md": b"hi"}, "main")
    with pytest.raises(DownloadError, match="no model repo 'Ember/Nope'"):
        pull_hf("hf:Ember/Nope", models)
    with pytest.raises(UnsupportedModelError, match=r"no config\.json") as e:
        pull_hf("hf:Ember/OnlyGGUF", models)
    assert "hf:Ember/OnlyGGUF:x.gguf" in str(e.value)


def test_another_models_folder_is_not_replaced_without_force(hub: Hub, write_tiny_gguf: GGUFBuilder,
                                                             models: Path) -> None:
    hub.add("Ember/Mine", REV1, {"m.gguf": write_tiny_gguf().read_bytes()}, "main")
    (models / "m").mkdir(parents=True)
    (models / "m" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="--force"):
        pull_hf("hf:Ember/Mine:m.gguf", models)
    assert (pull_hf("hf:Ember/Mine:m.gguf", models, force=True) / GGUF_NAME).is_file()


@pytest.mark.parametrize("ref", ["hf:", "hf:Org", "hf:Org/", "hf:/Name", "hf:Org/Name/x", "hf:Org/Name:model.bin",
                                 "hf:Org/Name@", "hf:Org/../x", "hf:Org/Na me", "hf:Org/Name:../x.gguf",
                                 "hf:Org--x/Name", "hf:Org/Name@a@b"])
def test_a_malformed_ref_is_a_config_error(ref: str, models: Path) -> None:
    with pytest.raises(ConfigError, match="hf:ORG/NAME"):
        pull_hf(ref, models)


def test_parse_ref() -> None:
    r = parse_ref("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf@main")
    assert (r.repo, r.filename, r.revision) == ("Qwen/Qwen2.5-0.5B-Instruct-GGUF",
                                                "qwen2.5-0.5b-instruct-q4_k_m.gguf", "main")
    assert r.default_name == "qwen2.5-0.5b-instruct-q4_k_m"
    assert parse_ref("hf:HuggingFaceTB/SmolLM2-135M-Instruct@refs/pr/1").revision == "refs/pr/1"
    assert parse_ref("hf:HuggingFaceTB/SmolLM2-135M-Instruct").default_name == "smollm2-135m-instruct"
