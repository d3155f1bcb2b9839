"""The paged engine: greedy parity with `transformers.generate`, batching, preemption, prefix cache, robustness."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from ember.model.config import LlamaConfig
from ember.model.engine.llm_engine import EngineConfig, LLMEngine
from ember.model.loader import LoadedModel, build_model, load
from ember.model.sampling_params import InvalidRequestError, SamplingParams

transformers = pytest.importorskip("transformers")
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
TEXT = ("Ember serves its own model through its own KV-cache engine. The scheduler admits new requests "
        "between steps, mixes prefill and decode, and preempts when the pool is full. ") * 20


@pytest.fixture(scope="module")
def smol(smollm2_folder: Path) -> LoadedModel:
    return load(smollm2_folder, dtype="float32")


@pytest.fixture(scope="module")
def hf(smollm2_hf: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # compare whole continuations
    return model


def hf_greedy(hf, ids: list[int], n: int, **kw: float) -> list[int]:
    x = torch.tensor([ids])  # an explicit mask: HF would otherwise mask <|im_end|>, which is also the pad id
    out = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, **kw)
    return out[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def tiny(smol: LoadedModel) -> LoadedModel:
    """A random 2-layer model with SmolLM2's tokenizer: fast enough for hundreds of requests."""
    config = LlamaConfig(vocab_size=smol.model.config.vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True, eos_token_id=None)
    torch.manual_seed(0)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_hf())).eval()
    return LoadedModel(build_model(config, dict(ref.state_dict()), "random"), smol.tokenizer, Path("random"), 0.0)


def test_single_prompt_matches_transformers(smol: LoadedModel, hf) -> None:
    engine = LLMEngine(smol.model, smol.tokenizer, EngineConfig(kv_cache_bytes=256 << 20))
    ids = smol.tokenizer.encode(smol.tokenizer.apply_chat_template([{"role": "user", "content": "Name three rivers."}]))
    [out] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=32, ignore_eos=True))
    assert out.token_ids == hf_greedy(hf, ids, 32)
    assert out.finish_reason == "length" and out.prompt_tokens == len(ids)
    assert out.text == smol.tokenizer.decode(out.token_ids)


def test_batch_of_8_different_lengths_matches_transformers(smol: LoadedModel, hf) -> None:
    tok = smol.tokenizer
    words = TEXT.split()
    prompts = [tok.encode(" ".join(words[i * 3: i * 3 + n])) for i, n in enumerate([3, 9, 17, 30, 45, 60, 80, 120])]
    engine = LLMEngine(smol.model, tok, EngineConfig(kv_cache_bytes=256 << 20))
    for p in prompts:  # all eight run concurrently: admitted in one step, decoded together
        engine.add_request(p, GREEDY)
    outs: dict[int, list[int]] = {}
    first = engine.step()
    assert len(first) == 8
    while engine.has_unfinished():
        for o in engine.step():
            outs.setdefault(o.seq.seq_id, [])
    got = [o.seq.output_ids for o in first]
    for p, g in zip(prompts, got, strict=True):
        assert g == hf_greedy(hf, p, GREEDY.max_tokens)
    assert engine.blocks.num_used == 0


def test_repetition_penalty_matches_transformers(smol: LoadedModel, hf) -> None:
    ids = smol.tokenizer.encode("List the numbers: one, two, three, one, two, three,")
    engine = LLMEngine(smol.model, smol.tokenizer, EngineConfig(kv_cache_bytes=128 << 20))
    [out] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True,
                                                  repetition_penalty=1.3))
    assert out.token_ids == hf_greedy(hf, ids, 20, repetition_penalty=1.3)


def test_logprobs_match_model(smol: LoadedModel, hf) -> None:
    ids = smol.tokenizer.encode("The capital of France is")
    engine = LLMEngine(smol.model, smol.tokenizer, EngineConfig(kv_cache_bytes=128 << 20))
    [out] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=3, logprobs=2, ignore_eos=True))
    with torch.no_grad():
        ref = hf(torch.tensor([ids + out.token_ids])).logits[0].log_softmax(-1)
    assert out.logprobs is not None and len(out.logprobs) == 3
    for i, lp in enumerate(out.logprobs):
        expected = ref[len(ids) - 1 + i]
        assert lp.token_id == out.token_ids[i] and abs(lp.logprob - float(expected[lp.token_id])) < 1e-3
        assert next(iter(lp.top)) == int(expected.argmax()) and len(lp.top) == 2


def test_prefix_cache_reuses_shared_prompt(smol: LoadedModel) -> None:
    tok = smol.tokenizer
    system = tok.encode(TEXT[:1500])
    engine = LLMEngine(smol.model, tok, EngineConfig(kv_cache_bytes=256 << 20, block_size=16))
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    [cold] = engine.generate([system + tok.encode(" Question one?")], params)
    [warm] = engine.generate([system + tok.encode(" Question two?")], params)
    assert cold.cached_tokens == 0
    assert warm.cached_tokens >= (len(system) // 16 - 1) * 16  # the shared full blocks were reused
    nocache = LLMEngine(smol.model, tok, EngineConfig(kv_cache_bytes=256 << 20, enable_prefix_caching=False))
    [fresh] = nocache.generate([system + tok.encode(" Question two?")], params)
    assert fresh.token_ids == warm.token_ids  # reused KV gives the same tokens as recomputing it


def test_stop_string_across_tokens(smol: LoadedModel) -> None:
    tok = smol.tokenizer
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
    engine = LLMEngine(smol.model, tok, EngineConfig(kv_cache_bytes=128 << 20))
    [full] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=16))
    # a stop string that starts inside one token and ends inside the next
    pieces = [tok.decode([t]) for t in full.token_ids]
    i = next(i for i in range(1, len(pieces)) if len(pieces[i - 1]) > 1 and len(pieces[i]) > 1)
    stop = pieces[i - 1][-2:] + pieces[i][:2]
    start = full.text.index(stop)
    [cut] = engine.generate([ids], SamplingParams(temperature=0, max_tokens=16, stop=[stop]))
    assert cut.finish_reason == "stop" and cut.text == full.text[:start]
    streamed = []
    seq = engine.add_request(ids, SamplingParams(temperature=0, max_tokens=16, stop=[stop]))
    while engine.has_unfinished():
        streamed += [o.text for o in engine.step() if o.seq is seq]
    assert "".join(streamed) == full.text[:start]  # nothing of the stop string leaked into the stream


def test_seed_makes_sampling_reproducible(tiny: LoadedModel) -> None:
    engine = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    ids = tiny.tokenizer.encode("hello there")
    params = [SamplingParams(temperature=1.0, top_p=0.9, top_k=50, min_p=0.01, max_tokens=16, seed=s,
                             presence_penalty=0.5, frequency_penalty=0.5) for s in (1, 1, 2)]
    a, b, c = engine.generate([ids, ids, ids], params)
    assert a.token_ids == b.token_ids != c.token_ids


class ForceTokens:
    """A LogitsProcessor that only allows `script[i]` at output position i (then EOS)."""

    def __init__(self, script: list[int], eos: int) -> None:
        self.script, self.eos = script, eos
        self.seen: list[list[int]] = []

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        self.seen.append(list(output_ids))
        allowed = self.script[len(output_ids)] if len(output_ids) < len(self.script) else self.eos
        keep = logits[allowed].clone()
        logits.fill_(float("-inf"))
        logits[allowed] = keep
        return logits


def test_logits_processors_run_per_request(tiny: LoadedModel) -> None:
    from ember.model.logits_processor import LogitsProcessor

    engine = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    ids = tiny.tokenizer.encode("hello there")
    script = tiny.tokenizer.encode(" forced words here")
    eos = tiny.tokenizer.eos_token_id
    forced, sampled = ForceTokens(script, eos), ForceTokens(script[::-1], eos)
    assert isinstance(forced, LogitsProcessor)
    free, a, b = engine.generate([ids, ids, ids], [
        SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=8, logits_processors=[forced], logprobs=1),
        SamplingParams(temperature=1.0, seed=3, max_tokens=8, logits_processors=[sampled])])
    assert a.token_ids == [*script, eos] and a.finish_reason == "stop"
    assert b.token_ids == [*script[::-1], eos]
    assert free.token_ids != a.token_ids[:8] and len(free.token_ids) == 8  # the others are unconstrained
    assert forced.seen == [script[:i] for i in range(len(script) + 1)]
    assert a.logprobs is not None and a.logprobs[0].logprob < 0  # of the raw distribution, not the mask


def test_other_backends_refuse_logits_processors() -> None:
    from ember.model.backends.openai_wire import request_fields

    with pytest.raises(InvalidRequestError, match="only on the ember backend"):
        request_fields(SamplingParams(logits_processors=[ForceTokens([], 0)]), chat=True)


def test_prompt_longer_than_context_is_refused_or_truncated(tiny: LoadedModel) -> None:
    engine = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    with pytest.raises(InvalidRequestError, match="context is 512"):
        engine.add_request(list(range(600)), GREEDY)
    truncating = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=64 << 20, truncate_prompt=True))
    [out] = truncating.generate([list(range(600))], SamplingParams(temperature=0, max_tokens=4))
    assert out.prompt_tokens == 511 and out.completion_tokens == 1 and out.finish_reason == "length"


def test_cancel_frees_blocks(tiny: LoadedModel) -> None:
    engine = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    seqs = [engine.add_request(list(range(1, 100 + i)), SamplingParams(max_tokens=100)) for i in range(4)]
    engine.step()
    engine.step()
    assert engine.blocks.num_used > 0
    for s in seqs[:3]:
        engine.abort(s)
    while engine.has_unfinished():
        engine.step()
    assert engine.blocks.num_used == 0
    assert [s.finish_reason for s in seqs] == ["cancelled"] * 3 + ["length"]


def test_200_concurrent_requests_with_preemption(tiny: LoadedModel) -> None:
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 49000) for _ in range(rng.randint(1, 300))] for _ in range(200)]
    params = [SamplingParams(temperature=0, max_tokens=rng.randint(1, 150), ignore_eos=True) for _ in prompts]
    roomy = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=512 << 20, max_num_seqs=256))
    expected = roomy.generate(prompts, params)
    # a pool of ~640 tokens for 200 requests: admission waits and running sequences get preempted
    tight = LLMEngine(tiny.model, tiny.tokenizer, EngineConfig(kv_cache_bytes=40 * 16 * 1024, max_num_seqs=256,
                                                                max_model_len=512))
    seqs = [tight.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    while tight.has_unfinished():
        tight.step()
    got = [tight.completion(s) for s in seqs]
    assert sum(s.preemptions for s in seqs) > 0  # the pool really was too small
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert all(len(g.token_ids) == p.max_tokens for g, p in zip(got, params, strict=True))
    assert tight.blocks.num_used == 0 and roomy.blocks.num_used == 0
    assert not tight.has_unfinished()


def test_a_bf16_kv_cache_halves_the_pool_and_keeps_greedy_output(smol: LoadedModel) -> None:
    """`kv_cache_dtype = "bfloat16"` on the fp32 model: the pool is stored in bf16 (twice the tokens in the
    same bytes); perplexity read back through it stays within 0.5 % of the fp32 cache's, which equals the
    one-pass figure; greedy output on real prompts keeps its first tokens."""
    from ember.model.engine.cache_perplexity import cached_perplexity
    from ember.model.quantize import perplexity

    fp32 = LLMEngine(smol.model, smol.tokenizer, EngineConfig(kv_cache_bytes=64 << 20))
    bf16 = LLMEngine(smol.model, smol.tokenizer, EngineConfig(kv_cache_bytes=64 << 20, kv_cache_dtype="bfloat16"))
    assert bf16.cache.k.dtype == torch.bfloat16 and fp32.cache.k.dtype == torch.float32
    assert bf16.cache.k.shape[2] == 2 * fp32.cache.k.shape[2]  # twice the blocks in the same budget
    prompts = [smol.tokenizer.encode(smol.tokenizer.apply_chat_template([{"role": "user", "content": q}]))
               for q in ("Name three rivers.", "What is a hash table?", "Why is the sky blue?")]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    for a, b in zip(fp32.generate(prompts, params), bf16.generate(prompts, params), strict=True):
        assert a.token_ids[:4] == b.token_ids[:4]
    ids = smol.tokenizer.encode(TEXT)[:320]
    ref = cached_perplexity(smol.model, ids, torch.float32, chunk=64)
    assert ref == pytest.approx(perplexity(smol.model, ids, window=len(ids)), rel=1e-4)
    assert cached_perplexity(smol.model, ids, torch.bfloat16, chunk=64) == pytest.approx(ref, rel=5e-3)
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        EngineConfig(kv_cache_dtype="int8")
