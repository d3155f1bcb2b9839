"""Model files are hostile input: crafted GGUF headers and tensors, safetensors headers, tokenizer.json and
chat templates each get a clear `EmberError` naming the file — never a crash, a hang, or an allocation far
beyond the file's size (hypothesis mutates a real tiny GGUF; the targeted cases are the classic attacks)."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember.model.errors import EmberError
from ember.model.loader import load
from ember.model.tokenizer import Tokenizer

SLOW = 5.0  # seconds: anything slower than this on a tiny file is a hang


def refused(path: Path) -> EmberError:
    """Load `path`; it must fail with an EmberError, quickly (timed alone), allocating at most a few times the
    file's size (measured in a second, traced attempt: tracemalloc slows everything down)."""
    size = path.stat().st_size
    t0 = time.perf_counter()
    with pytest.raises(EmberError) as e:
        load(path)
    elapsed = time.perf_counter() - t0
    assert elapsed < SLOW, f"took {elapsed:.1f} s"
    tracemalloc.start()
    try:
        with pytest.raises(EmberError):
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * size + (32 << 20), f"peak Python allocation {peak} bytes for a {size}-byte file"
    return e.value


def header_end(data: bytes) -> int:
    """Offset of the first tensor descriptor's name length (after the metadata), found by the layout walk."""
    from ember.model.weights.gguf_layout import _Cursor

    c = _Cursor(data, Path("x"))
    c.pos = 24
    (n_kv,) = struct.unpack_from("<Q", data, 16)
    for i in range(n_kv):
        c.string(f"k{i}")
        c.read_value(c.unpack("<I", "t"), "v")
    return c.pos


@pytest.fixture
def tiny(write_tiny_gguf) -> bytes:
    return write_tiny_gguf().read_bytes()


def write(tmp_path: Path, data: bytes, name: str = "crafted.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_header_mutations_are_refused_or_load(tiny: bytes, tmp_path: Path, data: st.DataObject) -> None:
    """Flip bytes anywhere in the header or truncate the file: either it still loads (a harmless byte) or it
    is a clear error — never another exception type, a hang or a blow-up."""
    buf = bytearray(tiny)
    end = header_end(tiny) + 400  # metadata plus the first tensor descriptors
    if data.draw(st.booleans(), label="truncate"):
        buf = buf[:data.draw(st.integers(0, len(buf) - 1), label="cut")]
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        i = data.draw(st.integers(4, min(end, len(buf) - 1)), label="at") if len(buf) > 5 else 0
        if i:
            buf[i] = data.draw(st.integers(0, 255), label="byte")
    path = write(tmp_path, bytes(buf))
    t0 = time.perf_counter()
    try:
        load(path)
    except EmberError as e:
        assert str(path) in str(e) or "GGUF" in str(e) or "tensor" in str(e), str(e)
    assert time.perf_counter() - t0 < SLOW


def u64_at(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<Q", value) + data[offset + 8:]


@pytest.mark.parametrize("case", ["tensor_count", "kv_count", "key_length", "array_length", "string_array",
                                  "value_type", "version", "alignment"])
def test_crafted_header_fields(tiny: bytes, tmp_path: Path, case: str) -> None:
    data = tiny
    if case == "tensor_count":
        data = u64_at(data, 8, 2**63)
    elif case == "kv_count":
        data = u64_at(data, 16, 2**40)
    elif case == "key_length":
        data = u64_at(data, 24, 2**62)  # the first key's length
    elif case in ("array_length", "string_array"):  # tokenizer.ggml.tokens: a string array with a huge count
        key = b"tokenizer.ggml.tokens"
        at = data.index(key) + len(key) + 4 + 4  # past the key, its type (array) and the element type
        data = u64_at(data, at, 2**61 if case == "array_length" else len(data) // 8 - 1)
    elif case == "value_type":
        at = 24 + 8 + struct.unpack_from("<Q", data, 24)[0]  # after the first key
        data = data[:at] + struct.pack("<I", 77) + data[at + 4:]
    elif case == "version":
        data = data[:4] + struct.pack("<I", 0x03000000) + data[8:]  # byte-swapped: a big-endian file
    elif case == "alignment":  # an alignment that is not a power of two, as an extra metadata entry
        (n_kv,) = struct.unpack_from("<Q", data, 16)
        key = b"general.alignment"
        entry = struct.pack("<Q", len(key)) + key + struct.pack("<II", 4, 24)
        data = u64_at(data, 16, n_kv + 1)
        data = data[:24] + entry + data[24:]
    err = refused(write(tmp_path, data))
    assert "GGUF" in str(err)


def tensor_descriptor(data: bytes) -> int:
    """Offset of the first tensor descriptor."""
    return header_end(data)


@pytest.mark.parametrize("case", ["n_dims", "huge_dim", "zero_dim", "unknown_type", "offset_past_end",
                                  "misaligned", "past_end"])
def test_crafted_tensor_descriptors(tiny: bytes, tmp_path: Path, case: str) -> None:
    at = tensor_descriptor(tiny)
    (name_len,) = struct.unpack_from("<Q", tiny, at)
    dims_at = at + 8 + name_len
    (n_dims,) = struct.unpack_from("<I", tiny, dims_at)
    type_at = dims_at + 4 + 8 * n_dims
    offset_at = type_at + 4
    data = tiny
    if case == "n_dims":
        data = data[:dims_at] + struct.pack("<I", 1000) + data[dims_at + 4:]
    elif case == "huge_dim":
        data = u64_at(data, dims_at + 4, 2**40)
    elif case == "zero_dim":
        data = u64_at(data, dims_at + 4, 0)
    elif case == "unknown_type":
        data = data[:type_at] + struct.pack("<I", 99) + data[type_at + 4:]
    elif case == "offset_past_end":
        data = u64_at(data, offset_at, 2**40)
    elif case == "misaligned":
        data = u64_at(data, offset_at, struct.unpack_from("<Q", data, offset_at)[0] + 3)
    elif case == "past_end":  # a plausible shape whose bytes run past the end of the file
        data = u64_at(data, dims_at + 4 + 8 * (n_dims - 1), 100 * struct.unpack_from("<Q", data, dims_at + 4)[0])
    err = refused(write(tmp_path, data))
    assert str(tmp_path) in str(err)


def test_block_count_beyond_the_tensors_is_refused(write_tiny_gguf, tmp_path: Path) -> None:
    """A header claiming a billion layers must not build a billion-layer model, even on the meta device."""
    data = write_tiny_gguf().read_bytes()
    key = b"llama.block_count"
    at = data.index(key) + len(key)
    (vtype,) = struct.unpack_from("<I", data, at)
    assert vtype == 4  # uint32
    data = data[:at + 4] + struct.pack("<I", 10**9) + data[at + 8:]
    err = refused(write(tmp_path, data))
    assert "block_count=1000000000" in str(err)


def test_crafted_safetensors_headers(tmp_path: Path) -> None:
    from ember.model.config import PRESETS

    folder = tmp_path / "model"
    folder.mkdir()
    PRESETS["tiny"].save(folder)
    (folder / "tokenizer.json").write_text("{}")
    for header in [struct.pack("<Q", 2**62) + b"{}",  # header longer than the file
                   struct.pack("<Q", 2) + b"{]",  # not JSON
                   struct.pack("<Q", 80) + json.dumps({"w": {"dtype": "F32", "shape": [2**40, 2**40],
                                                            "data_offsets": [0, 16]}}).encode().ljust(80),
                   struct.pack("<Q", 64) + json.dumps({"w": {"dtype": "F32", "shape": [4],
                                                            "data_offsets": [0, 2**40]}}).encode().ljust(64),
                   b"\x00" * 3]:
        (folder / "model.safetensors").write_bytes(header)
        err = refused(folder)
        assert "model.safetensors" in str(err) or "tokenizer" in str(err)


@pytest.mark.parametrize("content", ["", "{", "[1, 2]", '{"model": {"type": "BPE", "vocab": 5}}', "\x00\xff" * 50])
def test_crafted_tokenizer_json(tmp_path: Path, content: str) -> None:
    (tmp_path / "tokenizer.json").write_text(content, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(EmberError, match=r"tokenizer\.json"):
        Tokenizer.load(tmp_path)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",  # the classic sandbox escape
    "{% for m in messages %}{{ m.__class__.__init__.__globals__ }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.system('true') }}",
    "{% set x = messages.append(1) %}",  # mutation of the caller's data
    "{{ raise_exception('no') }}",
    "{% for %}",
])
def test_hostile_chat_templates_are_refused(template: str) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    tok = Tokenizer(backend=Backend(models.BPE()), chat_template=template)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(EmberError):
        tok.apply_chat_template(messages)
    assert messages == [{"role": "user", "content": "hi"}]
