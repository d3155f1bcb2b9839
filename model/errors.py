"""Ember's typed error tree.

Every error a user can cause or fix derives from `EmberError`; the CLI and the server turn these into a
clean message (and an exit or HTTP status code) instead of a traceback. Bugs in our own code are not
`EmberError`s and are allowed to raise normally. This module lives at the bottom of the dependency graph
(model/ imports nothing above it) so that every package can raise these.
"""

from __future__ import annotations

from pathlib import Path


class EmberError(Exception):
    """Base class of user-facing errors. `hint` says what to do next."""

    exit_code = 1
    http_status = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class ConfigError(EmberError):
    """A configuration value (ember.toml, EMBER_* or a config.json) is invalid."""

    exit_code = 2


class InvalidValueError(EmberError, ValueError):
    """A value a config dataclass or a request refuses (a mode, a size, a name). It is also a `ValueError`
    for callers that catch that, but the CLI and the server only turn `EmberError`s into clean refusals:
    a `ValueError` from a library (numpy, FAISS, torch) is a bug and surfaces as one."""

    exit_code = 2


class ModelNotFoundError(EmberError):
    """A model name or path that does not resolve to anything on disk or in the registry."""

    http_status = 404


class UnsupportedModelError(EmberError):
    """A model that exists but that Ember cannot run (architecture, quantization type, ...)."""

    http_status = 422


class WeightsError(EmberError):
    """A weights or tokenizer file that is missing, truncated, corrupt or does not match its config."""

    http_status = 422

    def __init__(self, path: str | Path, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = str(path)
        self.problem = problem


class DownloadError(EmberError):
    """Fetching a model from a package registry failed (offline, not found, checksum mismatch)."""

    exit_code = 3
    http_status = 502
