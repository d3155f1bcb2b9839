"""Collections API: create, list, inspect, delete, upload files (ingested in the background), jobs, search, and
the grants its owner gives other users (read or write)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ember.platform.server.errors import ApiError
from ember.platform.server.routes.openai import principal_of, state_of
from ember.platform.server.schemas import CollectionCreate, GrantRequest, SearchRequest
from ember.platform.server.uploads import receive_files
from ember.platform.server.users import Principal
from ember.retrieval import store
from ember.retrieval.collection import validate_name
from ember.retrieval.errors import CollectionExistsError, CollectionNotFoundError
from ember.retrieval.rag import citation

router = APIRouter(prefix="/v1/collections")


def _describe(row: store.CollectionRow, docs: int, chunks: int) -> dict[str, Any]:
    return {"name": row.name, "object": "collection", "model": f"ember-rag:{row.name}", "documents": docs,
            "chunks": chunks, "embedder": row.embedder_id, "metric": row.metric, "index": row.kind,
            "created_at": row.created_at, "updated_at": row.updated_at}


def _list(st: Any, who: Principal) -> list[dict[str, Any]]:
    """The collections `who` may read (an ungranted one is not even listed)."""
    rows = {row.name: (row, docs, chunks) for row, docs, chunks in st.wiring.collections()}
    return [{**_describe(*rows[n]), "access": st.users.access(who, n)} for n in st.users.readable(who, list(rows))]


def _name(name: str) -> str:
    try:
        return validate_name(name)
    except ValueError as e:
        raise ApiError(400, str(e), param="name") from None


@router.get("")
async def list_collections(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await run_in_threadpool(_list, state_of(request), principal_of(request))}


@router.post("", status_code=201)
async def create_collection(body: CollectionCreate, request: Request) -> dict[str, Any]:
    st, who = state_of(request), principal_of(request)
    name = _name(body.name)

    def create() -> dict[str, Any]:
        st.users.check_create(who)
        col = st.create_collection(name, who)
        try:
            return _describe(col.row, 0, 0)
        finally:
            col.close()

    return await run_in_threadpool(create)


def _get(st: Any, who: Principal, name: str) -> dict[str, Any]:
    st.users.check_read(who, name)
    for c in _list(st, who):
        if c["name"] == name:
            docs = st.wiring.open_collection(name)
            try:
                c["files"] = [{"source": d.source.rsplit("/", 1)[-1], "title": d.title, "kind": d.kind,
                               "size": d.size} for d in docs.documents().values()]
            finally:
                docs.close()
            return c
    raise CollectionNotFoundError(f"no collection named {name!r}")


@router.get("/{name}")
async def get_collection(name: str, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_get, state_of(request), principal_of(request), _name(name))


@router.delete("/{name}")
async def delete_collection(name: str, request: Request) -> dict[str, Any]:
    st, who = state_of(request), principal_of(request)

    def delete() -> None:
        st.users.check_delete(who, _name(name))
        st.delete_collection(name)

    await run_in_threadpool(delete)
    return {"name": name, "object": "collection", "deleted": True}


_creating = threading.Lock()  # first uploads to a new collection, racing: one creates it, the others use it


def _may_upload(st: Any, who: Principal, name: str) -> None:
    """Write access to `name`, or (when it does not exist yet) the right to create it."""
    if name in st.collection_names():
        st.users.check_write(who, name)
    else:
        st.users.check_create(who)


def _ensure_collection(st: Any, who: Principal, name: str) -> None:
    with _creating:
        if name in st.collection_names():
            st.users.check_write(who, name)
            return
        st.users.check_create(who)
        try:
            st.create_collection(name, who).close()
        except CollectionExistsError:  # another process created it meanwhile: just as good, if we may write
            st.users.check_write(who, name)


@router.post("/{name}/files", status_code=202)
async def upload(name: str, request: Request) -> JSONResponse:
    """Multipart upload (field `file`, repeatable). The collection is created when it does not exist."""
    st, who = state_of(request), principal_of(request)
    name = _name(name)
    await run_in_threadpool(_may_upload, st, who, name)  # before a byte of the files is read
    limit = int(st.settings.server.max_upload_mb * 1e6)
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > 20 * limit + (1 << 20):
        raise ApiError(413, f"the upload is larger than {20 * limit / 1e6:g} MB", code="request_too_large")
    # the files first: a refused upload (413, 415, 400) must not leave a new, empty collection behind
    files = await receive_files(request.stream(), request.headers.get("content-type", ""),
                                st.uploads_dir / name, limit)
    try:
        await run_in_threadpool(_ensure_collection, st, who, name)
    except BaseException:
        for f in files:
            f.unlink(missing_ok=True)
        raise
    job = st.submit_ingest(name, files)
    return JSONResponse(job.to_dict(), status_code=202)


@router.get("/{name}/jobs")
async def list_jobs(name: str, request: Request) -> dict[str, Any]:
    st = state_of(request)
    await run_in_threadpool(st.users.check_read, principal_of(request), name)
    return {"object": "list", "data": [j.to_dict() for j in st.jobs.values() if j.collection == name]}


@router.get("/{name}/jobs/{job_id}")
async def get_job(name: str, job_id: str, request: Request) -> dict[str, Any]:
    st = state_of(request)
    await run_in_threadpool(st.users.check_read, principal_of(request), name)
    job = st.jobs.get(job_id)
    if job is None or job.collection != name:
        raise ApiError(404, f"no ingest job {job_id!r} in collection {name!r}", code="job_not_found")
    return job.to_dict()


@router.post("/{name}/search")
async def search(name: str, body: SearchRequest, request: Request) -> dict[str, Any]:
    st, who = state_of(request), principal_of(request)

    def run() -> list[dict[str, Any]]:
        st.users.check_read(who, _name(name))
        hits = st.retriever(_name(name)).search(body.query, mode=body.mode, k=body.k)
        # no threshold applies to a plain search: the relevance is the retriever's own score
        return [{**citation(h.rank, h, h.score).to_dict(), "rank": h.rank, "dense_rank": h.dense_rank,
                 "bm25_rank": h.bm25_rank} for h in hits]

    return {"object": "list", "data": await run_in_threadpool(run)}


@router.get("/{name}/grants")
async def list_grants(name: str, request: Request) -> dict[str, Any]:
    """Who may use the collection: its owner and the users granted read or write (owner or admin only)."""
    st, who = state_of(request), principal_of(request)

    def run() -> dict[str, str]:
        st.users.check_share(who, _name(name))
        return st.users.grants(name)

    grants = await run_in_threadpool(run)
    return {"object": "list", "data": [{"user": u, "access": a} for u, a in grants.items()]}


@router.put("/{name}/grants/{user}")
async def grant(name: str, user: str, body: GrantRequest, request: Request) -> dict[str, Any]:
    """Let `user` read (or write) the collection; the owner or an admin may."""
    st, who = state_of(request), principal_of(request)

    def run() -> None:
        st.users.check_share(who, _name(name))
        if name not in st.collection_names():
            raise CollectionNotFoundError(f"no collection named {name!r}")
        st.users.grant(name, user, body.access)

    await run_in_threadpool(run)
    return {"object": "collection.grant", "collection": name, "user": user, "access": body.access}


@router.delete("/{name}/grants/{user}")
async def revoke_grant(name: str, user: str, request: Request) -> dict[str, Any]:
    st, who = state_of(request), principal_of(request)

    def run() -> None:
        st.users.check_share(who, _name(name))
        st.users.revoke(name, user)

    await run_in_threadpool(run)
    return {"object": "collection.grant", "collection": name, "user": user, "deleted": True}
