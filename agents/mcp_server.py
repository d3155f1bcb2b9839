"""Ember as an MCP server (official SDK `MCPServer`): its collections as tools and resources.

Tools: `list_collections()`, `search_documents(collection, query, k)`, `ask(collection, question)` (the RAG
pipeline over a collection with the configured model). Resources: every document of every collection,
`ember://<collection>/<document id>`, plus that URI template for documents added later. Over streamable
HTTP, `BearerAuth` refuses requests without one of the configured API keys (plain or `sha256:<hex>`).
The library code takes its collaborators as arguments; platform/ builds them from settings.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ember.agents.tools import ToolError
from ember.model.errors import EmberError

URI_PREFIX = "ember://"


@dataclass
class Library:
    """What the server exposes: the collections under `data_dir`, an embedder per spec and (for `ask`) a
    backend, both made lazily on first use and then shared."""

    data_dir: Path
    embedder: Callable[[str], Any]  # embedder spec -> ember.retrieval Embedder
    backend: Callable[[], Any] | None = None  # -> ember.model Backend, for `ask`
    mode: str = "hybrid"
    k: int = 5

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._embedders: dict[str, Any] = {}
        self._backend: Any = None

    def _open(self, name: str) -> Any:
        from ember.retrieval.collection import Collection

        try:
            return Collection.open(self.data_dir, name)
        except Exception as e:
            names = ", ".join(r.name for r in Collection.names(self.data_dir)) or "none"
            raise ToolError(f"{e} (collections: {names})") from None

    def _retriever(self, col: Any, mode: str | None = None) -> Any:
        from ember.retrieval.retriever import Retriever

        mode = mode or self.mode
        embedder = None
        if mode != "bm25":
            spec = col.row.embedder_spec
            if spec not in self._embedders:
                self._embedders[spec] = self.embedder(spec)
            embedder = self._embedders[spec]
        return Retriever(col, embedder, mode=mode, k=self.k)

    def list_collections(self) -> list[dict[str, Any]]:
        from ember.retrieval.collection import Collection

        out = []
        for row in Collection.names(self.data_dir):
            col = Collection.open(self.data_dir, row.name)
            try:
                docs, chunks = col.counts()
            finally:
                col.close()
            out.append({"name": row.name, "documents": docs, "chunks": chunks, "embedder": row.embedder_id})
        return out

    def search(self, collection: str, query: str, k: int) -> list[dict[str, Any]]:
        with self._lock:
            col = self._open(collection)
            try:
                hits = self._retriever(col).search(query, k=k)
            finally:
                col.close()
        return [{"rank": h.rank, "score": round(float(h.score), 6), "source": h.chunk.source,
                 "title": h.chunk.title, "chunk_id": h.chunk.id, "document_id": h.chunk.document_id,
                 "uri": f"{URI_PREFIX}{collection}/{h.chunk.document_id}", "text": h.chunk.text} for h in hits]

    def ask(self, collection: str, question: str) -> dict[str, Any]:
        if self.backend is None:
            raise ToolError("this server has no model configured for `ask`")
        from ember.retrieval.rag import RagConfig, RagPipeline

        with self._lock:
            if self._backend is None:
                self._backend = self.backend()
            col = self._open(collection)
            try:
                answer = RagPipeline(self._retriever(col), self._backend, RagConfig(mode=self.mode, k=self.k)
                                     ).answer(question)
            finally:
                col.close()
        return {"answer": answer.text,
                "citations": [{"n": c.n, "source": c.source, "title": c.title, "location": c.location,
                               "chunk_id": c.chunk_id} for c in answer.citations]}

    def documents(self) -> list[tuple[str, Any]]:
        from ember.retrieval.collection import Collection

        out = []
        for row in Collection.names(self.data_dir):
            col = Collection.open(self.data_dir, row.name)
            try:
                out += [(row.name, d) for d in col.documents().values()]
            finally:
                col.close()
        return out

    def read_document(self, collection: str, document_id: int) -> str:
        from ember.retrieval import store

        col = self._open(collection)
        try:
            ids = [int(i) for i in store.chunk_ids(col.con, col.name, [int(document_id)])]
            if not ids:
                raise ToolError(f"collection {collection!r} has no document {document_id}")
            chunks = sorted(col.chunks(ids).values(), key=lambda c: c.start)
        finally:
            col.close()
        return _join(chunks)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def _join(chunks: Sequence[Any]) -> str:
    """A document's text from its chunks (which overlap: keep only what extends past the previous end)."""
    text, end = "", 0
    for c in chunks:
        if c.end <= end:
            continue
        skip = max(0, end - c.start)
        text += c.text[skip:] if skip < len(c.text) else ""
        end = c.end
    return text


def build_server(library: Library) -> Any:
    """An `MCPServer` exposing `library`. Run it with `.run("stdio")` or serve `http_app(...)`."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ResourceNotFoundError
    from mcp.server.mcpserver.exceptions import ToolError as McpToolError
    from mcp.server.mcpserver.resources import FunctionResource
    from mcp.types import ToolAnnotations

    def anticipated(fn: Callable[..., str]) -> Callable[..., str]:
        """Errors the caller caused (EmberError: no such collection, bad k) reach the client with their text;
        the SDK withholds the text of any other exception."""
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> str:
            try:
                return fn(*args, **kwargs)
            except EmberError as e:
                raise McpToolError(e.message) from e
        return wrapper

    server = MCPServer("ember", instructions="Search and question the document collections of an Ember install.",
                       log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    @anticipated
    def list_collections() -> str:
        """List the document collections: name, number of documents and chunks, embedder."""
        return json.dumps(library.list_collections())

    @server.tool(annotations=read_only)
    @anticipated
    def search_documents(collection: str, query: str, k: int = 5) -> str:
        """Search a collection (hybrid dense + BM25); returns the best passages with source and score.

        Args:
            collection: the collection's name (see list_collections).
            query: what to look for.
            k: how many passages (1-50).
        """
        if not 1 <= k <= 50:
            raise ToolError(f"k={k} must be between 1 and 50")
        return json.dumps(library.search(collection, query, k), ensure_ascii=False)

    @server.tool(annotations=read_only)
    @anticipated
    def ask(collection: str, question: str) -> str:
        """Answer a question from a collection's documents with the configured model, citing sources.

        Args:
            collection: the collection's name.
            question: the question.
        """
        return json.dumps(library.ask(collection, question), ensure_ascii=False)

    for collection, doc in library.documents():
        def read(collection: str = collection, doc_id: int = doc.id) -> str:
            return library.read_document(collection, doc_id)

        server.add_resource(FunctionResource(uri=f"{URI_PREFIX}{collection}/{doc.id}", name=doc.title or doc.source,
                                             description=doc.source, mime_type="text/plain", fn=read))

    @server.resource(URI_PREFIX + "{collection}/{document_id}", name="document", mime_type="text/plain")
    def document(collection: str, document_id: str) -> str:
        """A document of a collection, as text."""
        if not document_id.isdigit():
            raise ResourceNotFoundError(f"document id must be a number, got {document_id!r}")
        try:
            return library.read_document(collection, int(document_id))
        except EmberError as e:
            raise ResourceNotFoundError(e.message) from e

    return server


def check_key(token: str, keys: Sequence[str]) -> bool:
    """Whether `token` is one of `keys` (plain, or `sha256:<hex>` of the key), compared in constant time."""
    digest = hashlib.sha256(token.encode()).hexdigest()
    ok = False
    for key in keys:
        expected, got = (key[7:].lower(), digest) if key.startswith("sha256:") else (key, token)
        ok |= hmac.compare_digest(expected.encode(), got.encode())
    return ok


class BearerAuth:
    """ASGI middleware: while `required()` (asked per request, so keys created or revoked meanwhile count),
    HTTP requests need `Authorization: Bearer <key>` with a key `check` accepts."""

    def __init__(self, app: Any, check: Callable[[str], bool], required: Callable[[], bool] = lambda: True) -> None:
        self.app, self.check, self.required = app, check, required

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.required():
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token or not self.check(token.strip()):
                body = json.dumps({"error": {"message": "missing or invalid API key", "type": "unauthorized"}})
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b'Bearer realm="ember"')]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


class KeyChecker(Protocol):
    """A key store (e.g. the server's hashed keys): whether any key exists, and whether `key` is valid."""

    def configured(self) -> bool: ...

    def valid(self, key: str) -> bool: ...


def http_app(server: Any, api_keys: Sequence[str] = (), store: KeyChecker | None = None,
             host: str = "127.0.0.1") -> Any:
    """The streamable-HTTP ASGI app at /mcp. Requests need a bearer key when `api_keys` is non-empty or the
    store has keys; a key from either is accepted."""
    keys = list(api_keys)

    def required() -> bool:
        return bool(keys) or (store is not None and store.configured())

    def check(token: str) -> bool:
        return check_key(token, keys) or (store is not None and store.valid(token))

    return BearerAuth(server.streamable_http_app(host=host), check, required)


def serve_http(server: Any, host: str, port: int, api_keys: Sequence[str] = (), store: KeyChecker | None = None,
               ) -> None:
    import uvicorn

    uvicorn.run(http_app(server, api_keys, store, host), host=host, port=port, log_level="warning")
