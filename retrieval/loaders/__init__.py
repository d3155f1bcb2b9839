"""Loaders: one small module per format, and the folder walk that picks a loader by suffix."""

from ember.retrieval.loaders.base import Document, Loader
from ember.retrieval.loaders.folder import LOADERS, Candidate, Skipped, load_file, load_folder, walk

__all__ = ["LOADERS", "Candidate", "Document", "Loader", "Skipped", "load_file", "load_folder", "walk"]
