"""Turn a step's logits into next tokens, each sequence under its own `SamplingParams`.

Order, as in vLLM: penalties (repetition over prompt and output; presence and frequency over the output),
temperature, top-k, top-p, min-p, then a draw from the sequence's own generator when it has a seed.
Greedy rows take the argmax of the penalised logits. Logprobs are of the model's raw distribution.
A request's `logits_processors` (constrained decoding) run first, on its row alone (in place
unless it wants logprobs).

Numerically safe for any valid `SamplingParams`: temperatures below `MIN_TEMPERATURE` are raised to it (as vLLM
does: fp32 logits divided by 1e-38 overflow to inf, and inf - inf is nan), a repetition penalty too small for
fp32 is applied in float64, the row is cleaned of nan/inf before the softmax, and a row with no finite
candidate left falls back to the argmax of its raw logits. Whatever still goes wrong in one row (a logits
processor that raises) is returned as that row's error, so the engine fails that request only and the rest
of the batch goes on.
"""

from __future__ import annotations

import torch

from ember.model.engine.sequence import Sequence
from ember.model.outputs import TokenLogprob
from ember.model.sampling_params import SamplingParams

MIN_TEMPERATURE = 1e-2  # vLLM's floor for a non-zero temperature



def apply_penalties(logits: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.params
    if p.repetition_penalty != 1:
        seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long, device=logits.device)
        vals, r = logits[seen], p.repetition_penalty
        if not torch.finfo(logits.dtype).tiny <= r <= torch.finfo(logits.dtype).max:
            vals = vals.double()  # a penalty like 1e-300 is 0 in fp32, and x / 0 is inf (or nan)
        penalised = torch.where(vals > 0, vals / r, vals * r)  # in the logits' dtype otherwise, as HF does
        logits[seen] = finite(penalised.to(logits.dtype))
    if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
        out = torch.tensor(seq.output_ids, dtype=torch.long, device=logits.device)
        counts = torch.bincount(out, minlength=logits.numel()).to(logits.dtype)
        logits -= counts * p.frequency_penalty + (counts > 0).to(logits.dtype) * p.presence_penalty
    return logits


def filter_logits(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature-scaled logits with top-k, top-p and min-p applied (excluded tokens at -inf)."""
    logits = finite(logits / max(p.temperature, MIN_TEMPERATURE))
    if p.top_k and p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > p.top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.index_fill(0, order[drop], float("-inf"))
    if p.min_p > 0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < p.min_p * probs.max(), float("-inf"))
    return logits


def finite(x: torch.Tensor) -> torch.Tensor:
    """`x` with nan as -inf (never drawn) and +inf as the largest finite value (so softmax stays defined)."""
    big = torch.finfo(x.dtype).max
    return torch.nan_to_num(x, nan=float("-inf"), posinf=big, neginf=float("-inf"))


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int | Exception]:
    """logits: (B, V) fp32, one row per sequence, in order. Returns one token id per sequence, or the error
    that sequence's own sampling raised (the caller fails that request alone)."""
    if all(s.params.greedy and not s.params.penalized and not s.params.logits_processors for s in seqs):
        return list(finite(logits).argmax(-1).tolist())
    tokens: list[int | Exception] = []
    for row, seq in zip(logits, seqs, strict=True):
        try:
            tokens.append(sample_row(row, seq))
        except Exception as e:  # this request's processor or parameters: not the batch's problem
            tokens.append(e)
    return tokens


def sample_row(row: torch.Tensor, seq: Sequence) -> int:
    p = seq.params
    raw = row
    if p.logits_processors:
        if p.logprobs is not None:  # logprobs stay those of the raw distribution
            row = row.clone()
        with torch.inference_mode():  # the logits are inference tensors: in-place edits need this mode
            for proc in p.logits_processors:
                row = proc(seq.output_ids, row)
    row = apply_penalties(row.clone(), seq) if p.penalized else row
    if p.greedy:
        return int(finite(row).argmax())
    probs = filter_logits(row, p).softmax(-1)
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:  # nothing finite was left to draw
        return int(finite(row if bool(torch.isfinite(row).any()) else raw).argmax())
    return int(torch.multinomial(probs, 1, generator=seq.generator))


def logprobs_of(row: torch.Tensor, token: int, n: int, decode: object) -> TokenLogprob:
    lp = row.float().log_softmax(-1)
    top = torch.topk(lp, n) if n else None
    alts = {} if top is None else {int(i): float(v) for v, i in zip(top.values, top.indices, strict=True)}
    text = decode([token]) if callable(decode) else ""
    return TokenLogprob(token_id=token, token=str(text), logprob=float(lp[token]), top=alts)
