from __future__ import annotations

from pathlib import Path

import pytest

from ember.model.errors import ConfigError
from ember.platform.settings import load_settings


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("EMBER_DATA_DIR", "EMBER_MODEL", "EMBER_DEVICE", "EMBER_DTYPE", "EMBER_THREADS", "EMBER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = load_settings()
    assert s.data_dir == Path(".ember") and s.model == "smollm2" and s.device == "auto"
    assert s.models_dir == Path(".ember/models")


def test_toml_then_env_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ember.toml").write_text('data_dir = "/srv/ember"\ndevice = "cpu"\nthreads = 3\n')
    assert load_settings().data_dir == Path("/srv/ember")
    monkeypatch.setenv("EMBER_DATA_DIR", "/env/ember")
    assert load_settings().data_dir == Path("/env/ember")
    assert load_settings(data_dir=Path("/arg")).data_dir == Path("/arg")
    assert load_settings().threads == 3


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "conf" / "prod.toml"
    other.parent.mkdir()
    other.write_text('model = "my-model"\n')
    monkeypatch.setenv("EMBER_CONFIG", str(other))
    assert load_settings().model == "my-model"


@pytest.mark.parametrize("toml,needles", [
    ('device = "gpu"\n', ["device='gpu'", "'auto', 'cpu' or 'cuda'"]),
    ("threads = 0\n", ["threads=0", "greater than or equal to 1"]),
    ('modle = "x"\n', ["modle: unknown setting", "allowed: data_dir, model"]),
    ("model = \n", ["cannot read ember.toml"]),
])
def test_invalid_config_names_key_value_and_allowed(tmp_path: Path, toml: str, needles: list[str]) -> None:
    (tmp_path / "ember.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_settings()
    for needle in needles:
        assert needle in str(e.value)


def test_invalid_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_DTYPE", "fp8")
    with pytest.raises(ConfigError, match="dtype='fp8'"):
        load_settings()


def test_nested_engine_and_backend_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ember.toml").write_text('backend = "openai"\n[engine]\nkv_cache_mb = 256\n[openai]\n'
                                         'base_url = "http://127.0.0.1:9999/v1"\n')
    s = load_settings()
    assert s.backend == "openai" and s.engine.kv_cache_mb == 256 and s.openai.base_url.endswith(":9999/v1")
    monkeypatch.setenv("EMBER_ENGINE__KV_CACHE_MB", "512")
    assert load_settings().engine.kv_cache_mb == 512
    monkeypatch.delenv("EMBER_ENGINE__KV_CACHE_MB")
    (tmp_path / "ember.toml").write_text("[engine]\nkv_cache_mb = 1\nblock_sise = 8\n")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "engine.kv_cache_mb=1" in str(e.value) and "greater than or equal to 16" in str(e.value)
    assert "engine.block_sise: unknown setting (allowed: kv_cache_mb, block_size" in str(e.value)
