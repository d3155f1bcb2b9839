"""Ember as an MCP server (official SDK `MCPServer`): its collections as tools and resources.

Tools: `list_collections()`, `search_documents(collection, query, k)`, `ask(collection, question)` (the RAG
pipeline over a collection with the configured model). Resources: every document of every collection,
`ember://<collection>/<document id>`, plus that URI template for documents added later. The collections,
retrievers and RAG pipelines come from a `Source` (platform/wiring.py builds them from settings, as for
every other entry point); transports and authentication are platform's too (`ember mcp serve`).

With a `Policy` (platform's users and grants), each tool call sees only the collections the caller's key may
read: an ungranted collection is "not found" in every tool and resource, and absent from `list_collections`.
Per-document resources are listed only while Ember is single-user; on a team server documents are read
through the `ember://{collection}/{document_id}` template, which checks the caller.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ember.agents.tools import ToolError
from ember.model.errors import EmberError

if TYPE_CHECKING:
    from ember.retrieval.rag import RagPipeline
    from ember.retrieval.retriever import Retriever
    from ember.retrieval.store import CollectionRow, DocumentRow

URI_PREFIX = "ember://"


class Source(Protocol):
    """Where the served objects come from (`ember.platform.wiring.Wiring`)."""

    def collections(self) -> list[tuple[CollectionRow, int, int]]:
        """Every collection with its numbers of documents and chunks."""
        ...

    def retriever(self, name: str) -> Retriever:
        """The shared retriever of collection `name`."""
        ...

    def rag(self, name: str) -> RagPipeline:
        """The RAG pipeline over collection `name`."""
        ...


Headers = Mapping[str, str] | None  # the HTTP request's headers; None over stdio (the local user)


class Policy(Protocol):
    """Who may read what (`ember.platform.server.users.McpPolicy`)."""

    def team(self) -> bool:
        """Users exist, so access control is on."""
        ...

    def readable(self, headers: Headers, names: list[str]) -> list[str]:
        """Of collections `names`, those the caller of a request with `headers` may read."""
        ...


@dataclass
class Library:
    """What the server exposes: the collections of `source` (under `data_dir`), as `policy` allows."""

    source: Source
    data_dir: Path
    policy: Policy | None = None
    database: str | None = None  # a postgresql:// URL, else the SQLite file in data_dir

    def _check(self, name: str, headers: Headers) -> None:
        if self.policy is not None and not self.policy.readable(headers, [name]):
            raise ToolError(f"no collection named {name!r}")

    def _retriever(self, name: str, headers: Headers = None) -> Retriever:
        from ember.retrieval.errors import CollectionNotFoundError

        self._check(name, headers)
        try:
            return self.source.retriever(name)
        except CollectionNotFoundError as e:
            raise ToolError(e.message) from None

    def list_collections(self, headers: Headers = None) -> list[dict[str, Any]]:
        rows = self.source.collections()
        names = [row.name for row, _, _ in rows]
        allowed = set(self.policy.readable(headers, names) if self.policy is not None else names)
        return [{"name": row.name, "documents": docs, "chunks": chunks, "embedder": row.embedder_id}
                for row, docs, chunks in rows if row.name in allowed]

    def search(self, collection: str, query: str, k: int, headers: Headers = None) -> list[dict[str, Any]]:
        hits = self._retriever(collection, headers).search(query, k=k)
        return [{"rank": h.rank, "score": round(float(h.score), 6), "source": h.chunk.source,
                 "title": h.chunk.title, "chunk_id": h.chunk.id, "document_id": h.chunk.document_id,
                 "uri": f"{URI_PREFIX}{collection}/{h.chunk.document_id}", "text": h.chunk.text} for h in hits]

    def ask(self, collection: str, question: str, headers: Headers = None) -> dict[str, Any]:
        self._retriever(collection, headers)  # a missing collection is the caller's error, before the model loads
        answer = self.source.rag(collection).answer(question)
        return {"answer": answer.text,
                "citations": [{"n": c.n, "source": c.source, "title": c.title, "location": c.location,
                               "chunk_id": c.chunk_id} for c in answer.citations]}

    def documents(self) -> list[tuple[str, DocumentRow]]:
        from ember.retrieval.collection import Collection

        out = []
        for row, _, _ in self.source.collections():
            col = Collection.open(self.data_dir, row.name, database=self.database)
            try:
                out += [(row.name, d) for d in col.documents().values()]
            finally:
                col.close()
        return out

    def read_document(self, collection: str, document_id: int, headers: Headers = None) -> str:
        from ember.retrieval.collection import Collection
        from ember.retrieval.errors import CollectionNotFoundError

        self._check(collection, headers)
        try:
            col = Collection.open(self.data_dir, collection, database=self.database)
        except CollectionNotFoundError as e:
            raise ToolError(e.message) from None
        try:
            text = col.document_text(int(document_id))
        finally:
            col.close()
        if text is None:
            raise ToolError(f"collection {collection!r} has no document {document_id}")
        return text


def build_server(library: Library) -> Any:
    """An `MCPServer` exposing `library`. Run it with `.run("stdio")` or serve `http_app(...)`."""
    from mcp.server.mcpserver import Context, MCPServer
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

    def with_context(fn: Callable[..., str]) -> Callable[..., str]:
        """Declare the `ctx` parameter as the SDK's Context (this module's annotations are strings, and
        the SDK imports lazily), so the SDK passes it in: its headers say who is calling."""
        fn.__annotations__["ctx"] = Context
        return fn

    server = MCPServer("ember", instructions="Search and question the document collections of an Ember install.",
                       log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    @anticipated
    @with_context
    def list_collections(ctx: Any = None) -> str:
        """List the document collections: name, number of documents and chunks, embedder."""
        return json.dumps(library.list_collections(_headers(ctx)))

    @server.tool(annotations=read_only)
    @anticipated
    @with_context
    def search_documents(collection: str, query: str, k: int = 5, ctx: Any = None) -> str:
        """Search a collection (hybrid dense + BM25); returns the best passages with source and score.

        Args:
            collection: the collection's name (see list_collections).
            query: what to look for.
            k: how many passages (1-50).
        """
        if not 1 <= k <= 50:
            raise ToolError(f"k={k} must be between 1 and 50")
        return json.dumps(library.search(collection, query, k, _headers(ctx)), ensure_ascii=False)

    @server.tool(annotations=read_only)
    @anticipated
    @with_context
    def ask(collection: str, question: str, ctx: Any = None) -> str:
        """Answer a question from a collection's documents with the configured model, citing sources.

        Args:
            collection: the collection's name.
            question: the question.
        """
        return json.dumps(library.ask(collection, question, _headers(ctx)), ensure_ascii=False)

    single = library.policy is None or not library.policy.team()
    for collection, doc in library.documents() if single else []:
        def read(collection: str = collection, doc_id: int = doc.id) -> str:
            if library.policy is not None and library.policy.team():  # users were made since: use the template
                raise ResourceNotFoundError(f"read {URI_PREFIX}{collection}/{doc_id} through the document template")
            return library.read_document(collection, doc_id)

        server.add_resource(FunctionResource(uri=f"{URI_PREFIX}{collection}/{doc.id}", name=doc.title or doc.source,
                                             description=doc.source, mime_type="text/plain", fn=read))

    @server.resource(URI_PREFIX + "{collection}/{document_id}", name="document", mime_type="text/plain")
    @with_context
    def document(collection: str, document_id: str, ctx: Any = None) -> str:
        """A document of a collection, as text."""
        if not document_id.isdigit():
            raise ResourceNotFoundError(f"document id must be a number, got {document_id!r}")
        try:
            return library.read_document(collection, int(document_id), _headers(ctx))
        except EmberError as e:
            raise ResourceNotFoundError(e.message) from e

    return server


def _headers(ctx: Any) -> Headers:
    """The HTTP headers of the call (None over stdio, or outside a request)."""
    try:
        return ctx.headers if ctx is not None else None
    except (AttributeError, ValueError):
        return None
