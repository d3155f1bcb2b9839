"""The tuning split: one example in four (by a hash of its id) is for tuning prompts and thresholds; the
other three are held back, and every reported figure is on them (`part = "heldout"` in the shipped suites).

A hash of the id, not a position, so the split does not move when a file is reordered or a limit changes, and
the two parts never share an example.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

Part = Literal["all", "tune", "heldout"]
SHARE = 4  # 1 in SHARE examples is for tuning


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


def is_tuning(example_id: str) -> bool:
    return int(hashlib.sha256(example_id.encode()).hexdigest(), 16) % SHARE == 0


def take(examples: Sequence[T], part: Part) -> list[T]:
    if part == "all":
        return list(examples)
    return [ex for ex in examples if is_tuning(ex.id) == (part == "tune")]
