"""The one place that turns `Settings` into working objects: backend, embedders, collections, retrievers,
RAG pipelines and the MCP hub.

Every entry point (the CLI commands, `ember serve`, `ember mcp serve`, the eval harness) asks a `Wiring`
for what it needs, so the rules that used to be copied into each of them live here once: the embedder runs
on the configured device, a collection is opened once and searched by one shared `Retriever` (whose lock
makes it safe for the server's threads), and a RAG pipeline's context window is the model's unless
`server.context_window` says otherwise. Objects are made on first use and cached; `close()` releases what
this wiring made (a backend or embedder handed in by the caller stays the caller's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ember.model.errors import ConfigError
from ember.platform.settings import Settings

if TYPE_CHECKING:
    from ember.agents.mcp_client import McpHub, McpServerConfig
    from ember.model.backends.base import Backend
    from ember.retrieval.collection import Collection
    from ember.retrieval.embedders import Embedder
    from ember.retrieval.rag import RagConfig, RagPipeline
    from ember.retrieval.retriever import Retriever
    from ember.retrieval.store import CollectionRow

EmbedderFactory = Callable[[str], "Embedder"]
DEFAULT_CONTEXT_WINDOW = 2048  # when neither the settings nor the backend say


class Wiring:
    def __init__(self, settings: Settings, *, model: str | None = None, backend: Backend | None = None,
                 embedder_factory: EmbedderFactory | None = None) -> None:
        """`backend` and `embedder_factory` inject ready-made ones (tests, a long-lived engine); they are
        not closed by `close()`."""
        self.settings = settings
        self.model_name = model or settings.model
        self._backend = backend
        self._owns_backend = backend is None
        self._embedder_factory = embedder_factory or (lambda spec: load_embedder(settings, spec))
        self._embedders: dict[str, Embedder] = {}
        self._retrievers: dict[tuple[str, bool], Retriever] = {}
        self._adopted: list[Retriever] = []
        self._lock = threading.RLock()

    # backend ---------------------------------------------------------------------------------------------
    def backend(self) -> Backend:
        """`settings.backend` running `model` (built once)."""
        with self._lock:
            if self._backend is None:
                from ember.platform.backends import make_backend

                self._backend = make_backend(self.settings, self.model_name)
            return self._backend

    def adapter(self) -> Path | None:
        """The LoRA adapter merged into the served model: the backend's own word once it is built (an injected
        one included), else what `engine.adapter` will make our engine load; None on other backends."""
        from ember.model.adapter import resolve_adapter

        if self._backend is not None:
            return self._backend.capabilities.adapter
        if self.settings.backend != "ember":
            return None
        return resolve_adapter(self.settings.engine.adapter, self.model_name)

    def context_window(self) -> int:
        """Tokens a RAG prompt plus its answer may take: `server.context_window`, else the backend's context
        length, else `engine.max_model_len`, else 2048."""
        if self.settings.server.context_window:
            return self.settings.server.context_window
        length = self.backend().capabilities.context_length
        return length or self.settings.engine.max_model_len or DEFAULT_CONTEXT_WINDOW

    # embedders -------------------------------------------------------------------------------------------
    def embedder(self, spec: str | None = None) -> Embedder:
        """The embedder `spec` (default `retrieval.embedder`), loaded once, on the configured device."""
        spec = spec or self.settings.retrieval.embedder
        with self._lock:
            if spec not in self._embedders:
                self._embedders[spec] = self._embedder_factory(spec)
            return self._embedders[spec]

    # collections -----------------------------------------------------------------------------------------
    def create_collection(self, name: str) -> Collection:
        """A new, empty collection with the configured embedder, index kind, metric and chunking."""
        from ember.retrieval.collection import Collection, CollectionConfig

        r = self.settings.retrieval
        return Collection.create(self.settings.data_dir, name, self.embedder().info,
                                 CollectionConfig(r.metric, r.index, r.chunk_size, r.chunk_overlap), r.embedder,
                                 database=self.settings.database_url)

    def collections(self) -> list[tuple[CollectionRow, int, int]]:
        """Every collection with its numbers of documents and chunks."""
        from ember.retrieval.collection import Collection

        return Collection.listing(self.settings.data_dir, database=self.settings.database_url)

    def open_collection(self, name: str) -> Collection:
        """Collection `name` on its own connection (the caller closes it): for writers and one-off reads."""
        from ember.retrieval.collection import Collection

        return Collection.open(self.settings.data_dir, name, database=self.settings.database_url)

    def retriever(self, name: str, *, dense: bool = True, embedder: str | None = None) -> Retriever:
        """The shared retriever of collection `name` (opened once). `dense=False` skips loading an embedder
        (BM25 only); `embedder` overrides the collection's own spec (it must make the same vectors)."""
        key = (name, dense)
        with self._lock:
            found = self._retrievers.get(key) if embedder is None else None
        if found is not None:
            return found
        from ember.retrieval.collection import Collection
        from ember.retrieval.retriever import Retriever

        col = Collection.open(self.settings.data_dir, name, database=self.settings.database_url)
        try:
            model = self.embedder(embedder or col.row.embedder_spec) if dense else None
            r = self.settings.retrieval
            made = Retriever(col, model, mode=r.mode if dense else "bm25", k=r.k)
        except BaseException:
            col.close()
            raise
        if embedder is not None:  # a one-off: the caller closes it with its collection
            return made
        with self._lock:
            kept = self._retrievers.setdefault(key, made)
        if kept is not made:
            col.close()
        return kept

    def retriever_for(self, collection: Collection, embedder: Embedder | None, *, mode: str | None = None,
                      k: int | None = None) -> Retriever:
        """A retriever over a collection opened elsewhere (the eval corpora); the wiring closes it."""
        from ember.retrieval.retriever import Retriever

        r = self.settings.retrieval
        retriever = Retriever(collection, embedder, mode=mode or (r.mode if embedder is not None else "bm25"),
                              k=k or r.k)
        with self._lock:
            self._adopted.append(retriever)
        return retriever

    def forget(self, name: str) -> None:
        """Close collection `name` (it was deleted or replaced); the next use opens it again."""
        with self._lock:
            gone = [self._retrievers.pop(key) for key in list(self._retrievers) if key[0] == name]
        for r in gone:
            with r.lock:
                r.collection.close()

    # RAG -------------------------------------------------------------------------------------------------
    def rag_config(self, *, mode: str | None = None, k: int | None = None, max_tokens: int | None = None,
                   **changes: object) -> RagConfig:
        """`[retrieval]` and `[server]` as a `RagConfig`; the answer gets at most half the context window."""
        from ember.retrieval.rag import RagConfig

        r, window = self.settings.retrieval, self.context_window()
        answer = min(max_tokens or self.settings.server.max_tokens, window // 2)
        from ember.model.prompts import rag_demos, refusal_bias

        adapter = self.adapter()  # the prompt and bias follow what the adapter was trained and tuned with
        config = RagConfig(mode=mode or r.mode, k=k or r.rag_k, context_window=window, max_answer_tokens=answer,
                           min_score=r.min_score, demos=rag_demos(adapter),
                           refusal_bias=refusal_bias(self.model_name, adapter))
        return replace(config, **changes) if changes else config

    def rag(self, name: str, *, mode: str | None = None, k: int | None = None, max_tokens: int | None = None,
            ) -> RagPipeline:
        """The RAG pipeline over collection `name` with the configured backend."""
        config = self.rag_config(mode=mode, k=k, max_tokens=max_tokens)
        return self.rag_on(self.retriever(name, dense=config.mode != "bm25"), config)

    def rag_on(self, retriever: Retriever, config: RagConfig) -> RagPipeline:
        from ember.retrieval.rag import RagPipeline

        return RagPipeline(retriever, self.backend(), config)

    # MCP -------------------------------------------------------------------------------------------------
    def mcp_configs(self, names: list[str]) -> list[McpServerConfig]:
        """The `[mcpServers]` entries named (all of them for ["all"])."""
        servers = self.settings.mcpServers
        if names == ["all"]:
            names = list(servers)
        unknown = [n for n in names if n not in servers]
        if unknown:
            known = ", ".join(servers) or "none"
            raise ConfigError(f"no MCP server named {', '.join(map(repr, unknown))} in [mcpServers] "
                              f"(configured: {known})",
                              hint='Add e.g. [mcpServers.time] command = "mcp-server-time" to ember.toml.')
        return [replace(servers[n], name=n) for n in names]

    def mcp_hub(self, names: list[str]) -> McpHub:
        """A hub for the named servers (not started: `start()` launches them; the caller closes it)."""
        from ember.agents.mcp_client import McpHub

        return McpHub(self.mcp_configs(names))

    # ------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every collection this wiring opened, and the backend when it made it."""
        for name in {key[0] for key in list(self._retrievers)}:
            self.forget(name)
        with self._lock:
            adopted, self._adopted = self._adopted, []
        for r in adopted:
            r.collection.close()
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None and self._owns_backend:
            backend.close()

    def __enter__(self) -> Wiring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_embedder(settings: Settings, spec: str) -> Embedder:
    """Embedder `spec` on the configured device and batch size, loaded now (not in the first search)."""
    from ember.platform.backends import device_for
    from ember.retrieval.embedders import load_embedder as load

    r = settings.retrieval
    embedder = load(spec, device=device_for(settings), batch_size=r.embed_batch_size, api_key=r.embedder_api_key)
    embedder.info  # noqa: B018 (loads the model)
    return embedder
