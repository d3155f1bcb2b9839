"""ROUGE-1/2/L/Lsum, equal to Google's `rouge-score` package (its tokenizer, n-gram, LCS and summary-level LCS).

Tokens: lower-case, every run of non-[a-z0-9] characters is a separator (so non-ASCII text has no tokens,
as in `rouge-score`), optional Porter stemming of tokens longer than 3 characters (nltk's stemmer, the one
`rouge-score` uses). ROUGE-Lsum splits both texts into sentences on newlines. With several references the
one with the best F-measure counts (`score_multi`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class RougeScore:
    precision: float
    recall: float
    fmeasure: float


@cache
def _stemmer() -> Any:
    try:
        from nltk.stem import porter
    except ImportError as e:  # pragma: no cover - nltk comes with the evals extra
        raise ImportError("ROUGE with stemming needs nltk: pip install 'ember[evals]'") from e
    return porter.PorterStemmer()


def tokenize(text: str, stem: bool = False) -> list[str]:
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    if stem:
        stemmer = _stemmer()
        tokens = [stemmer.stem(t) if len(t) > 3 else t for t in tokens]
    return [t for t in tokens if t]


def _score(hits: int, target_len: int, pred_len: int) -> RougeScore:
    precision = hits / pred_len if pred_len else 0.0
    recall = hits / target_len if target_len else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeScore(precision, recall, f)


def _ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(target: list[str], pred: list[str], n: int) -> RougeScore:
    t, p = _ngrams(target, n), _ngrams(pred, n)
    hits = sum(min(c, p[g]) for g, c in t.items())
    return _score(hits, sum(t.values()), sum(p.values()))


def _lcs_table(ref: Sequence[str], can: Sequence[str]) -> list[list[int]]:
    rows, cols = len(ref), len(can)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            if ref[i - 1] == can[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table


def rouge_l(target: list[str], pred: list[str]) -> RougeScore:
    if not target or not pred:
        return RougeScore(0.0, 0.0, 0.0)
    lcs = _lcs_table(target, pred)[-1][-1]
    return _score(lcs, len(target), len(pred))


def _lcs_indices(ref: list[str], can: list[str]) -> list[int]:
    """Indices into `ref` of one LCS, backtracked the way `rouge-score` does it (ties move up in `ref`)."""
    t = _lcs_table(ref, can)
    i, j, out = len(ref), len(can), []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif t[i][j - 1] > t[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def rouge_lsum(target_sents: list[list[str]], pred_sents: list[list[str]]) -> RougeScore:
    """Summary-level LCS: per reference sentence, the union of its LCS with every predicted sentence."""
    m, n = sum(map(len, target_sents)), sum(map(len, pred_sents))
    if not target_sents or not pred_sents or not m or not n:
        return RougeScore(0.0, 0.0, 0.0)
    left_t: Counter[str] = Counter(t for s in target_sents for t in s)
    left_p: Counter[str] = Counter(t for s in pred_sents for t in s)
    hits = 0
    for ref in target_sents:
        union = sorted(set().union(*(_lcs_indices(ref, c) for c in pred_sents)))
        for tok in (ref[i] for i in union):
            if left_p[tok] > 0 and left_t[tok] > 0:
                hits += 1
                left_p[tok] -= 1
                left_t[tok] -= 1
    return _score(hits, m, n)


def score(target: str, prediction: str, rouge_types: Sequence[str] = ROUGE_TYPES,
          stem: bool = False) -> dict[str, RougeScore]:
    """`RougeScorer(rouge_types, use_stemmer=stem).score(target, prediction)`."""
    out: dict[str, RougeScore] = {}
    t_tok = p_tok = None
    for kind in rouge_types:
        if kind == "rougeLsum":
            t_sents = [tokenize(s, stem) for s in target.split("\n") if s]
            p_sents = [tokenize(s, stem) for s in prediction.split("\n") if s]
            out[kind] = rouge_lsum(t_sents, p_sents)
            continue
        if t_tok is None or p_tok is None:
            t_tok, p_tok = tokenize(target, stem), tokenize(prediction, stem)
        if kind == "rougeL":
            out[kind] = rouge_l(t_tok, p_tok)
        elif re.fullmatch(r"rouge[1-9]", kind):
            out[kind] = rouge_n(t_tok, p_tok, int(kind[5:]))
        else:
            raise ValueError(f"unknown ROUGE type {kind!r}; use one of {', '.join(ROUGE_TYPES)}")
    return out


def score_multi(targets: Sequence[str], prediction: str, rouge_types: Sequence[str] = ROUGE_TYPES,
                stem: bool = False) -> dict[str, RougeScore]:
    """Per type, the reference with the highest F-measure (`RougeScorer.score_multi`)."""
    if not targets:
        raise ValueError("ROUGE needs at least one reference")
    per = [score(t, prediction, rouge_types, stem) for t in targets]
    return {k: max((p[k] for p in per), key=lambda s: s.fmeasure) for k in rouge_types}
