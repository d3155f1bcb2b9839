"""`Wiring`: settings become one backend, cached embedders on the configured device, one shared retriever per
collection, RAG pipelines with one context-window rule, and MCP server configs (issue 17)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ember.agents.mcp_config import McpServerConfig
from ember.model.backends.base import Capabilities
from ember.model.errors import ConfigError
from ember.platform.server.run import build_state
from ember.platform.settings import Settings
from ember.platform.wiring import Wiring
from ember.retrieval.collection import Collection, CollectionConfig
from ember.retrieval.embedders import SentenceTransformerEmbedder
from ember.retrieval.ingest import ingest
from tests.scripted import ScriptedBackend

DOCS = {"quokkas.md": "# Quokkas\n\nQuokkas live on Rottnest Island near Perth and smile in photographs.",
        "kettles.txt": "An electric kettle boils water with a heating element and switches off by itself."}


def long_context() -> ScriptedBackend:
    backend = ScriptedBackend(["x"])
    backend.capabilities = Capabilities(context_length=4096)
    return backend


@pytest.fixture
def data_dir(tmp_path: Path, minilm: SentenceTransformerEmbedder) -> Iterator[Path]:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in DOCS.items():
        (src / name).write_text(text)
    data = tmp_path / "data"
    col = Collection.create(data, "animals", minilm.info, CollectionConfig())
    ingest(col, minilm, src)
    col.close()
    yield data


def test_one_shared_retriever_per_collection_closed_by_forget(data_dir: Path,
                                                                minilm: SentenceTransformerEmbedder) -> None:
    w = Wiring(Settings(data_dir=data_dir), backend=ScriptedBackend(["x"]), embedder_factory=lambda spec: minilm)
    r = w.retriever("animals")
    assert w.retriever("animals") is r and w.embedder() is minilm
    assert [row.name for row, docs, chunks in w.collections()] == ["animals"]
    w.forget("animals")
    assert w.retriever("animals") is not r
    w.close()


def test_one_context_window_rule(tmp_path: Path) -> None:
    def window(backend: ScriptedBackend, **settings: object) -> tuple[int, int]:
        w = Wiring(Settings(data_dir=tmp_path, **settings), backend=backend)
        c = w.rag_config(max_tokens=4000)
        return c.context_window, c.max_answer_tokens

    assert window(long_context()) == (4096, 2048)  # the model's length; the answer gets at most half
    assert window(long_context(), server={"context_window": 1024}) == (1024, 512)
    assert window(ScriptedBackend(["x"])) == (2048, 1024)  # nothing known
    assert window(ScriptedBackend(["x"]), engine={"max_model_len": 512}) == (512, 256)


def test_rag_reads_rag_k_passages_and_searches_keep_k(tmp_path: Path) -> None:
    w = Wiring(Settings(data_dir=tmp_path), backend=ScriptedBackend(["x"]))
    assert (w.rag_config().k, w.settings.retrieval.k) == (3, 5)  # the defaults: 3 passages per answer, 5 hits
    w = Wiring(Settings(data_dir=tmp_path, retrieval={"rag_k": 2, "k": 7}), backend=ScriptedBackend(["x"]))
    assert w.rag_config().k == 2 and w.rag_config(k=4).k == 4  # an explicit -k wins


def test_the_refusal_bias_follows_the_model_and_its_adapter(tmp_path: Path) -> None:
    """engine.adapter = "auto" serves qwen2.5-coder-0.5b with its shipped grounded-QA LoRA, whose own refusal
    bias RAG then uses; "none" keeps the base model's; other backends merge nothing."""
    from ember.model.adapter import shipped_adapter

    def wiring(**settings: object) -> Wiring:  # the context window is set: rag_config builds no backend
        return Wiring(Settings(data_dir=tmp_path, model="qwen2.5-coder-0.5b", server={"context_window": 2048},
                               **settings))

    shipped = shipped_adapter("qwen2.5-coder-0.5b")
    w = wiring()
    assert w.adapter() == shipped is not None and w.rag_config().refusal_bias == -5.0
    w = wiring(engine={"adapter": "none"})
    assert w.adapter() is None and w.rag_config().refusal_bias == 1.0
    assert wiring(backend="openai").adapter() is None
    injected = long_context()  # a ready backend's own word wins over the settings
    w = Wiring(Settings(data_dir=tmp_path, model="qwen2.5-coder-0.5b"), backend=injected)
    assert w.adapter() is None and w.rag_config().refusal_bias == 1.0
    injected.capabilities = Capabilities(context_length=4096, adapter=shipped)
    assert w.rag_config().refusal_bias == -5.0
    with pytest.raises(ConfigError, match="adapter"):
        wiring(engine={"adapter": str(tmp_path / "nope")}).adapter()
    # an adapter trained without the worked examples is served without them, with its own bias
    from ember.model.adapter import ServingHints, serving_hints

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "adapter_config.json").write_text("{}")
    ServingHints(rag_demos=False, refusal_bias=0.5).save(mine)
    config = wiring(engine={"adapter": str(mine)}).rag_config()
    assert (config.demos, config.refusal_bias) == (False, 0.5)
    assert wiring(engine={"adapter": "none"}).rag_config().demos is True
    assert wiring().rag_config().demos is serving_hints(shipped).rag_demos


def test_the_server_embeds_on_the_configured_device(tmp_path: Path) -> None:
    st = build_state(Settings(data_dir=tmp_path, device="cpu"), ScriptedBackend(["x"]), "scripted")
    try:
        embedder = st.embedder()
        assert isinstance(embedder, SentenceTransformerEmbedder) and embedder.device == "cpu"
    finally:
        st.close()


def test_mcp_server_configs_are_the_settings_entries(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, mcpServers={"time": {"command": "mcp-server-time"},
                                                "remote": {"url": "http://127.0.0.1:1/mcp", "bearer_token": "t"}})
    w = Wiring(s, backend=ScriptedBackend(["x"]))
    assert w.mcp_configs(["all"]) == [McpServerConfig("time", command="mcp-server-time"),
                                      McpServerConfig("remote", url="http://127.0.0.1:1/mcp", bearer_token="t")]
    with pytest.raises(ConfigError, match="no MCP server named 'git'"):
        w.mcp_configs(["git"])


def test_engine_kv_cache_dtype_reaches_the_served_engine(tmp_path: Path, smollm2_folder: Path) -> None:
    """engine.kv_cache_dtype = "bfloat16" (as EMBER_ENGINE__KV_CACHE_DTYPE sets it): the engine `ember serve`
    builds stores its KV pool in bf16 and answers through it."""
    import torch

    from ember.model.sampling_params import SamplingParams

    s = Settings(data_dir=tmp_path, model=str(smollm2_folder), engine={"kv_cache_dtype": "bfloat16",
                                                                        "kv_cache_mb": 64})
    with Wiring(s) as w:
        backend = w.backend()
        assert backend.engine.cache.k.dtype == torch.bfloat16
        reply = backend.chat([{"role": "user", "content": "Say hi."}], SamplingParams(max_tokens=4, temperature=0))
        assert reply.completion_tokens == 4
