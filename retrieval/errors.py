"""Retrieval's user-facing errors, all `EmberError`s so the CLI and the server print them cleanly.

A file that cannot be ingested is not an error of the whole ingest: loaders raise `LoaderError`, and the
folder walk turns it into a `Skipped(path, reason)` entry of the report while the rest of the folder goes on.
"""

from __future__ import annotations

from pathlib import Path

from ember.model.errors import EmberError, InvalidValueError


class RetrievalError(EmberError):
    """Base class of retrieval errors."""


class InvalidSearchError(RetrievalError, InvalidValueError):
    """A search, index, chunking or RAG setting out of range (mode, k, metric, chunk size, name)."""


class LoaderError(RetrievalError):
    """One file cannot be read as a document: corrupt, encrypted, binary, empty, not UTF-8, too large."""

    http_status = 422

    def __init__(self, path: str | Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {reason}", hint=hint)
        self.path = str(path)
        self.reason = reason


class CollectionNotFoundError(RetrievalError):
    """A collection name that does not exist in the data directory."""

    http_status = 404


class CollectionExistsError(RetrievalError):
    """Creating a collection whose name is taken."""

    http_status = 409


class EmbedderMismatchError(RetrievalError):
    """A query or an ingest with an embedder other than the one the collection's vectors were made with."""

    http_status = 409


class EmbedderError(RetrievalError):
    """An embedder that cannot be loaded or reached, or that answered something unusable."""

    http_status = 502


class VectorIndexError(RetrievalError):
    """A vector or lexical index that cannot be built, loaded or searched with the given settings."""

    http_status = 422


class CollectionBusyError(RetrievalError):
    """Another process is writing to the collection (ingest, re-embed or delete in progress)."""

    http_status = 409
    exit_code = 4


class MissingDependencyError(RetrievalError):
    """An optional package retrieval needs is not installed."""

    exit_code = 2

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the Python package {package!r}, which is not installed",
                         hint="Install the retrieval extra: pip install 'ember[retrieval]' "
                              f"(or pip install {package}).")
