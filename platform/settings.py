"""Ember's settings: the one place that reads `ember.toml` and `EMBER_*` environment variables.

Precedence: explicit arguments > environment (`EMBER_DATA_DIR`, `EMBER_MODEL`, ...) > `ember.toml`
(path from `EMBER_CONFIG`, default `./ember.toml`) > defaults. Library code never reads these itself: the
CLI and server build a `Settings` and pass plain values down.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ember.agents.mcp_config import McpServerConfig
from ember.model.errors import ConfigError

CONFIG_ENV = "EMBER_CONFIG"


class EngineSettings(BaseModel):
    """Our engine (backend = "ember"): `[engine]` in ember.toml, EMBER_ENGINE__* in the environment."""

    model_config = ConfigDict(extra="forbid")
    kv_cache_mb: int = Field(1024, ge=16, description="memory budget of the paged KV cache")
    block_size: int = Field(16, ge=1, le=256, description="tokens per KV block")
    max_num_seqs: int = Field(64, ge=1, description="sequences decoded together")
    max_num_batched_tokens: int = Field(4096, ge=16, description="tokens computed per step")
    max_model_len: int | None = Field(None, ge=16, description="context length; default: the model's")
    prefix_caching: bool = Field(True, description="reuse KV blocks of shared prompt prefixes")
    truncate_prompt: bool = Field(False, description="keep the end of too-long prompts instead of refusing")
    kv_cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the KV cache: auto = the model's; bfloat16 halves an fp32 model's cache "
                            "(twice the tokens in kv_cache_mb; accuracy in benchmarks/RESULTS.md)")
    quantization: Literal["auto", "none", "int8", "int4"] = Field(
        "auto", description="weight-only quantized compute on the CPU: auto keeps about a GGUF's own bits "
                            "(its 4-bit tensors run as int4, the rest as int8; float checkpoints stay float); "
                            "none = full precision (fp32 unless dtype says otherwise); on CUDA auto means none")
    adapter: str = Field(
        "auto", min_length=1, description="LoRA adapter merged into the weights at load: auto = the one Ember ships "
                                          "for the model, if any (qwen2.5-coder-0.5b: grounded QA); none; or a "
                                          "PEFT adapter folder (e.g. one `ember train sft` wrote)")


class OpenAISettings(BaseModel):
    """An OpenAI-compatible server (backend = "openai"): `[openai]`, EMBER_OPENAI__*."""

    model_config = ConfigDict(extra="forbid")
    base_url: str = Field("http://127.0.0.1:8000/v1", description="the server's /v1 URL")
    model: str | None = Field(None, description="model name on the server; default: settings.model")
    api_key: str | None = Field(None, description="bearer token, if the server wants one")
    timeout_s: float = Field(600.0, gt=0, description="per-request timeout")


class RetrievalSettings(BaseModel):
    """`[retrieval]` in ember.toml, or EMBER_RETRIEVAL__<KEY> (e.g. EMBER_RETRIEVAL__K=10)."""

    model_config = ConfigDict(extra="forbid")

    embedder: str = Field("all-MiniLM-L6-v2", min_length=1,
                          description="all-MiniLM-L6-v2, a sentence-transformers folder, or URL#MODEL for an "
                                      "OpenAI-compatible /v1/embeddings server")
    embedder_api_key: str | None = Field(None, description="bearer token for an OpenAI-compatible embeddings server")
    embed_batch_size: int = Field(32, ge=1, le=4096, description="texts per forward pass")
    metric: Literal["cosine", "l2"] = Field("cosine", description="vector similarity of new collections")
    index: Literal["auto", "flat", "hnsw", "ivf", "ivfpq"] = Field(
        "auto", description="FAISS index kind of new collections; auto = flat under 50k chunks, HNSW above")
    chunk_size: int = Field(256, ge=8, le=8192, description="chunk size in tokens of the embedder's tokenizer")
    chunk_overlap: int = Field(32, ge=0, description="tokens shared by consecutive chunks")
    mode: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="default search mode")
    k: int = Field(5, ge=1, le=1000, description="results per search")
    rag_k: int = Field(3, ge=1, le=100, description="passages a RAG answer reads (before the relevance filter and "
                                                     "the context budget); 3 beat 2 and 5 on squad-rag's tuning part")
    max_file_mb: float = Field(50.0, gt=0, description="files larger than this are skipped at ingest")
    min_score: float = Field(0.2, ge=-1, le=1, description="RAG: least cosine similarity of a passage it uses")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> RetrievalSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size "
                             f"({self.chunk_size})")
        return self


class AgentSettings(BaseModel):
    """`[agents]`: defaults of `ember agent`."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(8, ge=1, le=100, description="model replies per run")
    max_seconds: float = Field(300.0, gt=0, description="wall-clock cap of a run")
    max_tokens: int = Field(256, ge=16, description="tokens per model reply")
    constrained: bool | None = Field(None, description="grammar-constrained tool calls; default: on with our engine")
    allow_tools: list[str] = Field(default_factory=list,
                                   description="tools that can change things (MCP tools not marked read-only), "
                                               "as names or globs such as 'git.git_commit' or 'git.*'")


class McpServeSettings(BaseModel):
    """`[mcp]`: `ember mcp serve`."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8001, ge=1, le=65535, description="HTTP port")
    api_keys: list[str] = Field(default_factory=list,
                                description="keys HTTP clients must send as a bearer token; plain or "
                                            "'sha256:<hex digest>'. Empty = no authentication")
class ServerSettings(BaseModel):
    """`ember serve`: `[server]` in ember.toml, EMBER_SERVER__<KEY> in the environment."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on (non-loopback needs API keys)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port)")
    max_concurrent: int = Field(8, ge=1, le=1024, description="generations running at once")
    max_queued: int = Field(16, ge=0, le=10_000, description="generations waiting; beyond this: 429")
    retry_after_s: int = Field(2, ge=1, description="Retry-After seconds sent with a 429")
    max_upload_mb: float = Field(20.0, gt=0, description="largest uploaded file")
    context_window: int | None = Field(None, ge=64, description="RAG prompt + answer tokens; default: the model's")
    max_tokens: int = Field(256, ge=1, description="default answer length when a request gives none")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names the server answers to besides "
                                     "the loopback names and its own address (DNS-rebinding guard); '*' = any")
    allowed_origins: list[str] = Field(default_factory=list, description="origins (scheme://host:port) besides the "
                                       "server's own allowed to send state-changing requests (CSRF guard)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBER_", env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    data_dir: Path = Field(Path(".ember"), description="where models, indexes and the database live")
    model: str = Field("smollm2", min_length=1, description="default model: a registry name or a path")
    hf_token: str | None = Field(None, description="Hugging Face hub token for `ember models pull hf:...`")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = float32 on CPU, bfloat16 on CUDA")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch; default = all cores")
    backend: Literal["ember", "vllm", "openai"] = Field("ember", description="what runs the model")
    engine: EngineSettings = EngineSettings()
    openai: OpenAISettings = OpenAISettings()
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings,
                                         description="ingest and search defaults")
    agents: AgentSettings = Field(default_factory=AgentSettings, description="`ember agent` defaults")
    mcp: McpServeSettings = Field(default_factory=McpServeSettings, description="`ember mcp serve`")
    mcpServers: dict[str, McpServerConfig] = Field(
        default_factory=dict, description="MCP servers agents can use, by name")
    server: ServerSettings = Field(default_factory=ServerSettings, description="`ember serve`")
    remote: str | None = Field(None, description="URL of a running `ember serve` that `ember search` sends its "
                                                 "queries to, so the CLI loads no embedder (EMBER_REMOTE)")
    remote_api_key: str | None = Field(None, description="its API key, if it has keys (EMBER_REMOTE_API_KEY)")
    database_url: str | None = Field(None, pattern=r"^postgres(ql)?://",
                                     description="PostgreSQL URL (postgresql://user:pass@host/db) for users, keys, "
                                                 "sessions, documents, chunks and vectors, shared by several "
                                                 "servers; default: SQLite in data_dir/ember.db (EMBER_DATABASE_URL)")

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

    @property
    def collections_dir(self) -> Path:
        return self.data_dir / "collections"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "ember.db"

    @property
    def database(self) -> Path | str:
        """Where the state lives: `database_url`, else the SQLite file `db_path`."""
        return self.database_url or self.db_path

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return init_settings, env_settings, toml


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, "ember.toml"))


def describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(root)"
    if error["type"] == "unexpected_keyword_argument" and error["loc"][:1] == ("mcpServers",):
        allowed = [f.name for f in dataclasses.fields(McpServerConfig) if f.name != "name"]
        return f"{key}: unknown setting (allowed: {', '.join(allowed)})"
    if error["type"] == "extra_forbidden":
        model: type[BaseModel] = Settings
        for part in error["loc"][:-1]:  # the section the unknown key sits in
            annotation = model.model_fields[str(part)].annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
        return f"{key}: unknown setting (allowed: {', '.join(model.model_fields)})"
    allowed = error.get("ctx", {}).get("expected")
    suffix = f"; allowed: {allowed}" if allowed and str(allowed) not in error["msg"] else ""
    return f"{key}={error.get('input')!r}: {error['msg']}{suffix}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `ember.toml`; invalid values raise `ConfigError` naming them."""
    path = config_path()
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        lines = [describe(dict(err)) for err in e.errors()]
        raise ConfigError(
            "invalid configuration:\n  " + "\n  ".join(lines),
            hint=f"Fix {path} or the EMBER_* environment variables (e.g. EMBER_DEVICE=cpu).",
        ) from e
    except (OSError, ValueError) as e:  # a TOML syntax error is a ValueError (tomllib.TOMLDecodeError)
        raise ConfigError(f"cannot read {path}: {e}") from e
