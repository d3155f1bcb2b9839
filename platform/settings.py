"""Ember's settings: the one place that reads `ember.toml` and `EMBER_*` environment variables.

Precedence: explicit arguments > environment (`EMBER_DATA_DIR`, `EMBER_MODEL`, ...) > `ember.toml`
(path from `EMBER_CONFIG`, default `./ember.toml`) > defaults. Library code never reads these itself: the
CLI and server build a `Settings` and pass plain values down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from ember.model.errors import ConfigError
from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "EMBER_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBER_", env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    data_dir: Path = Field(Path(".ember"), description="where models, indexes and the database live")
    model: str = Field("smollm2", min_length=1, description="default model: a registry name or a path")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the model runs")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = float32 on CPU, bfloat16 on CUDA")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch; default = all cores")

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def downloads_dir(self) -> Path:
        return self.data_dir / "downloads"

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
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown setting (allowed: {', '.join(Settings.model_fields)})"
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
