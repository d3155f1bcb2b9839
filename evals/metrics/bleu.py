"""BLEU and chrF through `sacrebleu` (the reference; not re-implemented). Corpus-level, 0-100 like sacrebleu."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _sacrebleu() -> Any:
    try:
        import sacrebleu
    except ImportError as e:  # pragma: no cover - comes with the evals extra
        raise ImportError("BLEU/chrF need sacrebleu: pip install 'ember[evals]'") from e
    return sacrebleu


def _streams(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per-example reference lists -> sacrebleu's reference streams (one stream per reference slot).

    Examples with fewer references are padded with None, which sacrebleu skips."""
    width = max((len(r) for r in references), default=0)
    if width == 0:
        raise ValueError("BLEU/chrF need at least one reference per example")
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]  # type: ignore[misc]


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    return float(_sacrebleu().corpus_bleu(list(predictions), _streams(references)).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    return float(_sacrebleu().corpus_chrf(list(predictions), _streams(references)).score)


def sentence_bleu(prediction: str, references: Sequence[str]) -> float:
    return float(_sacrebleu().sentence_bleu(prediction, list(references)).score)


def sentence_chrf(prediction: str, references: Sequence[str]) -> float:
    return float(_sacrebleu().sentence_chrf(prediction, list(references)).score)
