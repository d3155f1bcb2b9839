"""The results cache: one JSON line per finished example in `results.jsonl`, keyed by (task, example, target).

Lines are appended and fsynced batch by batch, so a run that is killed loses at most the batch in flight;
a torn last line (killed mid-write) is ignored on reading and overwritten by the next append. Reruns skip
every key already present.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ember.evals.suite import fingerprint


def example_key(task: dict[str, Any], example_id: str, target: dict[str, Any]) -> str:
    return fingerprint(task, example_id, target)


class ResultsCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        self._good_bytes = 0
        if path.exists():
            self._read()

    def _read(self) -> None:
        with self.path.open("rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    break  # a torn tail from a killed run: everything after it is rewritten
                if not line.endswith(b"\n"):
                    break
                self.records[rec["key"]] = rec
                self._good_bytes += len(line)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
        with self.path.open("r+b" if self.path.exists() else "wb") as f:
            f.truncate(self._good_bytes)  # drop a torn tail before appending
            f.seek(self._good_bytes)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._good_bytes += len(data)
        for r in records:
            self.records[r["key"]] = r
