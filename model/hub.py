"""Models from the Hugging Face hub: `hf:ORG/NAME[@REV]` (a safetensors folder) or `hf:ORG/NAME:FILE.gguf[@REV]`.

Everything that speaks to the hub is `huggingface_hub`'s: the endpoint (`HF_ENDPOINT`), the token lookup
(`HF_TOKEN`, `hf auth login`) unless one is passed, the revision and file listing (`HfApi.model_info`), the file
URLs, the typed HTTP errors and `http_get`, which retries a dropped connection with a Range request. What is ours
is where the bytes go. `snapshot_download`/`hf_hub_download` (2.4) stream each file into a process-unique temporary
file that they delete when the download fails, so a killed pull would start over; here each file is appended to
`downloads/hf/<ORG>--<NAME>/<commit>/<file>.incomplete`, and the next pull continues it with a Range request.
A finished file is checked against the hub's sha256 (LFS) or git blob id, then renamed. The model folder is built
beside its place and installed with one rename (`registry.install_folder`, marker last); the download cache of
that commit is removed once it is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ember.model.errors import ConfigError, DownloadError, EmberError, UnsupportedModelError
from ember.model.registry import GGUF_NAME, MARKER, install_folder, source_info, staging_dir

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

Step = Callable[[str], None]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)

SYNTAX = "Use hf:ORG/NAME (a safetensors model), hf:ORG/NAME:FILE.gguf (one GGUF file), optionally with @REVISION."
_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"  # the hub's repo-name rule, simplified
REF = re.compile(rf"hf:(?P<repo>{_PART}/{_PART})(?::(?P<file>[^@:]+))?(?:@(?P<rev>[\w.][\w./-]*))?")
COMMIT = re.compile(r"[0-9a-f]{40}")
NAME = re.compile(r"[\w][\w.+-]*")
FOLDER_FILES = ("*.json", "*.safetensors", "*.jinja", "tokenizer.model", "merges.txt", "vocab.txt")
EXTRA_FILES = ("LICENSE*", "LICENCE*", "NOTICE*", "README.md")  # the licence travels with the weights
INDEX = "model.safetensors.index.json"
PARTIAL = ".incomplete"
LFS_SUFFIXES = (".safetensors", ".gguf")


@dataclass(frozen=True, slots=True)
class HfRef:
    repo: str  # ORG/NAME
    filename: str | None = None  # a .gguf in the repo; None: the repo's safetensors folder
    revision: str | None = None  # branch, tag or commit; None: the default branch

    @property
    def source(self) -> str:
        return (f"hf:{self.repo}" + (f":{self.filename}" if self.filename else "")
                + (f"@{self.revision}" if self.revision else ""))

    @property
    def default_name(self) -> str:
        return (PurePosixPath(self.filename).stem if self.filename else self.repo.split("/")[1]).lower()


def parse_ref(ref: str) -> HfRef:
    m = REF.fullmatch(ref.strip())
    if m is None or ".." in m["repo"] or "--" in m["repo"] or ".." in (m["rev"] or ""):
        raise ConfigError(f"malformed Hugging Face model reference {ref!r}", hint=SYNTAX)
    file = m["file"]
    if file is not None:
        parts = PurePosixPath(file).parts
        if not file.endswith(".gguf") or file.startswith("/") or ".." in parts or len(parts) > 8:
            raise ConfigError(f"{ref!r}: only a .gguf file can be pulled on its own (got {file!r})", hint=SYNTAX)
    return HfRef(m["repo"], file, m["rev"])


@dataclass(frozen=True, slots=True)
class Remote:
    """One file of the resolved commit, as the hub lists it."""

    path: str
    size: int | None
    sha256: str | None  # LFS files
    blob_id: str | None  # git sha1 of the blob, for the others

    @classmethod
    def of(cls, s: RepoSibling) -> Remote:
        return cls(s.rfilename, s.size if s.lfs is None else s.lfs.size, s.lfs.sha256 if s.lfs else None, s.blob_id)


def _quiet(_: str) -> None:
    pass


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return "/" not in path and any(PurePosixPath(path).match(p) for p in patterns)


def _import_hub() -> Any:
    try:
        import huggingface_hub
    except ImportError as e:
        raise EmberError(f"pulling from the Hugging Face hub needs the huggingface_hub package ({e})",
                         hint="pip install 'huggingface_hub>=2'") from e
    return huggingface_hub


def _hub_error(e: Exception, r: HfRef, endpoint: str, cache: Path | None) -> EmberError:
    """The user-facing error for whatever `huggingface_hub` or its HTTP client raised; bugs are re-raised."""
    import httpx2
    from huggingface_hub import errors as hf

    token_hint = ("A private or gated repo needs a token: set hf_token in ember.toml (or EMBER_HF_TOKEN), or "
                  "HF_TOKEN, or run `hf auth login`.")
    if isinstance(e, hf.GatedRepoError):
        return DownloadError(f"{r.repo} is gated on the hub",
                             hint=f"Accept its terms on the model's page. {token_hint}")
    if isinstance(e, hf.RepositoryNotFoundError):
        return DownloadError(f"no model repo {r.repo!r} on {endpoint}", hint=f"Check the name. {token_hint}")
    if isinstance(e, hf.RevisionNotFoundError):
        return DownloadError(f"{r.repo} has no revision {r.revision!r}", hint="Give a branch, tag or commit sha.")
    if isinstance(e, (hf.RemoteEntryNotFoundError, hf.EntryNotFoundError)):
        return DownloadError(f"{r.source}: a file is missing on the hub ({e})")
    if isinstance(e, hf.OfflineModeIsEnabled):
        return DownloadError(f"cannot pull {r.source}: huggingface_hub's offline mode is on",
                             hint="Unset HF_HUB_OFFLINE to download.")
    if isinstance(e, hf.HfHubHTTPError) and e.response.status_code in (401, 403):
        return DownloadError(f"the hub refused {r.source} ({e.response.status_code})", hint=token_hint)
    truncated = isinstance(e, OSError) and str(e).startswith("Consistency check failed")  # http_get's size check
    if truncated or isinstance(e, (httpx2.TransportError, hf.HfHubHTTPError, hf.LocalEntryNotFoundError)):
        kept = f" Finished and partial files are kept in {cache}: pulling again resumes." if cache else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return DownloadError(
            f"could not download {r.source} from {endpoint}: {first}",
            hint=f"Check the network (the hub, {endpoint}, must be reachable), or point HF_ENDPOINT at a reachable "
                 f"mirror.{kept} Without network, copy the model folder or .gguf onto this machine and use it "
                 "directly: `--model PATH`.")
    raise e


def _bar_class(report: Callable[[int], None]) -> type:
    """huggingface_hub's progress bar, never drawn: it forwards byte counts to `report` (the CLI draws its own)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            report(int(n or 0))
            return None

    return Bar


def _digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file."""
    sha256, git = hashlib.sha256(), hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
            git.update(block)
    return sha256.hexdigest(), git.hexdigest()


def _fetch(url: str, dest: Path, remote: Remote, headers: dict[str, str], report: Callable[[int], None]) -> str:
    """`dest` complete and verified (continuing its `.incomplete` file); returns its sha256."""
    from huggingface_hub.file_download import http_get

    part = dest.with_name(dest.name + PARTIAL)
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.is_file() else 0
        if remote.size is not None and have > remote.size:
            have = 0
        with open(part, "r+b" if have else "wb") as f:
            f.seek(have)
            f.truncate()
            report(have)
            http_get(url, f, resume_size=have, headers=headers, expected_size=remote.size,
                     displayed_filename=remote.path, tqdm_class=_bar_class(report))
        os.replace(part, dest)
    else:
        report(dest.stat().st_size)
    sha256, git = _digests(dest)
    size = dest.stat().st_size
    if (remote.size is not None and size != remote.size) or (remote.sha256 or sha256) != sha256 \
            or (remote.sha256 is None and (remote.blob_id or git) != git):
        dest.unlink()
        raise DownloadError(f"{remote.path}: the downloaded file does not match the hub's checksum (or size)",
                            hint="It was removed; pull again to download it afresh.")
    return sha256


def _select(r: HfRef, siblings: list[Remote]) -> list[Remote]:
    names = {s.path for s in siblings}
    extras = [s for s in siblings if _matches(s.path, EXTRA_FILES)]
    ggufs = sorted(n for n in names if n.endswith(".gguf"))
    if r.filename is not None:
        if r.filename not in names:
            listed = ", ".join(ggufs[:8]) + (" …" if len(ggufs) > 8 else "") if ggufs else "none"
            raise DownloadError(f"{r.repo} has no file {r.filename!r} at this revision",
                                hint=f"Its .gguf files: {listed}.")
        return [next(s for s in siblings if s.path == r.filename), *extras]
    folder = [s for s in siblings if _matches(s.path, FOLDER_FILES)]
    if "config.json" not in names or not any(s.path.endswith(".safetensors") for s in folder):
        hint = (f"It has .gguf files: pull one with hf:{r.repo}:{ggufs[0]}." if ggufs
                else "Ember reads HF folders with safetensors weights (no .bin/.pt) or GGUF files.")
        raise UnsupportedModelError(f"{r.repo} has no config.json with *.safetensors weights", hint=hint)
    return [*folder, *(s for s in extras if s not in folder)]


def _installed(folder: Path, r: HfRef, force: bool) -> dict[str, Any] | None:
    """The marker of the same repo (and file) already in `folder`; refuses to replace another model's folder."""
    info = source_info(folder)
    if info is not None and info.get("repo") == r.repo and info.get("file") == r.filename:
        return info if all((folder / f).is_file() for f in info.get("files", {})) else None
    if folder.exists() and not force:
        what = f"the model from {info.get('source') or info.get('upstream')}" if info else "files Ember did not pull"
        raise ConfigError(f"{folder} already holds {what}",
                          hint="Pass --force to replace it, or remove that folder.")
    return None


def pull_hf(ref: str, models_dir: Path, *, token: str | None = None, name: str | None = None, force: bool = False,
            step: Step = _quiet, progress: Progress | None = None, endpoint: str | None = None) -> Path:
    """Make `models_dir/<name>/` hold `ref` as the hub serves it; a no-op when that commit is already there.

    `token` None: huggingface_hub's own lookup (HF_TOKEN, `hf auth login`). `endpoint` None: HF_ENDPOINT or
    huggingface.co. `name` defaults to the repo's (or the GGUF file's) name, lower-cased.
    """
    r = parse_ref(ref)
    name = name or r.default_name
    if not NAME.fullmatch(name) or name.endswith((".partial", ".old")):
        raise ConfigError(f"{name!r} is not a usable model folder name", hint="Letters, digits, '.', '_', '+', '-'.")
    folder = models_dir / name
    have = None if force else _installed(folder, r, force)
    if have and r.revision and COMMIT.fullmatch(r.revision) and have.get("revision") == r.revision:
        step(f"{r.source} is already in {folder}")
        return folder
    hub = _import_hub()
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import build_hf_headers

    api = hub.HfApi(endpoint=endpoint, token=token)
    step(f"Resolving {r.repo}@{r.revision or 'main'} on {api.endpoint}")
    try:
        info = api.model_info(r.repo, revision=r.revision, files_metadata=True)
    except Exception as e:
        err = _hub_error(e, r, api.endpoint, None)
        if have and not isinstance(e, HfHubHTTPError):
            step(f"Could not reach {api.endpoint}; keeping {r.repo} at {str(have.get('revision'))[:12]} in {folder}")
            return folder
        raise err from e
    sha = str(info.sha)
    if have and have.get("revision") == sha:
        step(f"{r.source} ({sha[:12]}) is already in {folder}")
        return folder
    wanted = _select(r, [Remote.of(s) for s in info.siblings or []])
    cache = models_dir.parent / "downloads" / "hf" / r.repo.replace("/", "--") / sha
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, not of a compressed body

    def fetch_all(files: list[Remote], report: Callable[[int], None]) -> dict[str, str]:
        digests = {}
        for f in files:
            url = hub.hf_hub_url(r.repo, f.path, revision=sha, endpoint=endpoint)
            try:
                digests[f.path] = _fetch(url, cache / f.path, f, headers, report)
            except DownloadError:
                raise
            except Exception as e:
                raise _hub_error(e, r, api.endpoint, cache) from e
        return digests

    small = [f for f in wanted if not f.path.endswith(LFS_SUFFIXES)]
    digests = fetch_all(small, lambda n: None)
    if r.filename is None:
        from ember.model.config import LlamaConfig

        LlamaConfig.load(cache / "config.json")  # an architecture we cannot run fails before the weights download
        if (cache / INDEX).is_file():  # only the shards the index names (some repos also ship a consolidated copy)
            shards = set(json.loads((cache / INDEX).read_text(encoding="utf-8")).get("weight_map", {}).values())
            wanted = [f for f in wanted if not f.path.endswith(".safetensors") or f.path in shards]
    large = [f for f in wanted if f.path.endswith(LFS_SUFFIXES)]
    total, done = sum(f.size or 0 for f in large), 0

    def report(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    step(f"Downloading {len(large)} file(s), {total / 1e6:,.1f} MB, of {r.repo} at {sha[:12]}")
    digests.update(fetch_all(large, report))
    if r.filename is not None:
        with open(cache / r.filename, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise UnsupportedModelError(f"{r.source} is not a GGUF file (no GGUF magic)")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(folder)
    files: dict[str, str] = {}
    for f in wanted:
        target = GGUF_NAME if f.path == r.filename else f.path
        if target == MARKER:
            continue
        try:
            os.link(cache / f.path, staging / target)
        except OSError:
            shutil.copyfile(cache / f.path, staging / target)
        files[target] = digests[f.path]
    card = getattr(info, "card_data", None)
    meta = {"name": name, "source": r.source, "repo": r.repo, "file": r.filename, "revision": sha,
            "requested_revision": r.revision, "endpoint": api.endpoint,
            "license": getattr(card, "license", None) if card is not None else None,
            "format": "gguf" if r.filename else "safetensors", "files": files}
    install_folder(staging, folder, meta)
    shutil.rmtree(cache, ignore_errors=True)
    step(f"{r.source} ({sha[:12]}) is ready in {folder}")
    return folder
