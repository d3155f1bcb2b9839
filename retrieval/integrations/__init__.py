"""Ember inside LlamaIndex and LangChain apps, and their file readers and text splitters inside Ember.

Thin adapters over Ember's own parts, each in the module named for the library it plugs into:
- `llamaindex`: `EmberRetriever` (a collection), `EmberLLM` (any `Backend`, streaming), `EmberEmbedding`
  (any `Embedder`) and `EmberVectorStore` (a `VectorStoreIndex` built on a collection).
- `langchain`: `EmberRetriever`, `ChatEmber` (any `Backend`, streaming) and `EmberEmbeddings`.
- `readers`: LlamaIndex's file readers (docx, pptx, epub, ipynb, csv, ...) as an Ember loader.
- `splitters`: LangChain's recursive splitter and LlamaIndex's sentence splitter as Ember chunkers.

The libraries are the optional extra `integrations`; nothing imports them until one of these modules is
imported, and a missing one raises `MissingExtraError` with the pip command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ember.retrieval.errors import RetrievalError

PIP = "pip install 'ember[integrations]'"


class MissingExtraError(RetrievalError):
    """A LlamaIndex or LangChain package the integrations need is not installed."""

    exit_code = 2

    def __init__(self, package: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the Python package {package!r}, which is not installed",
                         hint=f"Install the integrations extra: {PIP} (or pip install {package}).")
        self.package = package


def require(module: str, package: str, purpose: str) -> ModuleType:
    """Import `module` or raise `MissingExtraError` naming the pip package."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, purpose) from None
