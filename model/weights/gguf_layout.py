"""Read a GGUF header with every step bounds-checked first: a crafted file is hostile input.

Reads the header (version, counts, every metadata value, every tensor descriptor) against the file's real
size: each step consumes at least one byte and is bounds-checked before anything is allocated, so a huge
count or length cannot make us loop or allocate beyond the file. Tensors must have at most 4 positive dims,
a known ggml type whose block size divides them, an aligned offset, and bytes that lie inside the file.
llama.cpp's own parser runs under OSS-Fuzz for the same reason (Ollama had CVEs from crafted GGUFs).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ember.model.errors import UnsupportedModelError, WeightsError
from ember.model.weights.dequant import GGML_TYPES

# GGUF metadata value types -> fixed byte size (None: string / array)
VALUE_SIZES: dict[int, int | None] = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: None, 9: None,
                                      10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32, BOOL = 8, 9, 4, 7
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
NUMPY_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
               12: "<f8"}
MAX_DIMS = 4
MAX_KEY = 1 << 16


@dataclass(frozen=True, slots=True)
class TensorSpan:
    name: str
    type_id: int
    shape: tuple[int, ...]  # GGUF order, innermost first
    start: int  # absolute byte offset in the file
    nbytes: int


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.pos, self.size, self.path = buf, 0, len(buf), path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise WeightsError(self.path, f"truncated or corrupt GGUF: {what} needs {n} bytes at offset {self.pos}, "
                                          f"the file has {self.size}",
                               hint="Download the file again; its size or header does not match.")

    def unpack(self, fmt: str, what: str) -> int:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return int(v)

    def string(self, what: str, limit: int | None = None) -> bytes:
        n = self.unpack("<Q", f"length of {what}")
        if limit is not None and n > limit:
            raise WeightsError(self.path, f"corrupt GGUF: {what} is {n} bytes long (at most {limit})")
        self.need(n, what)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def read_value(self, vtype: int, what: str, depth: int = 0) -> Any:
        """A metadata value as Python: int/float/bool, str, or a list. Each step is bounds-checked first, and
        every element takes at least one byte of the file, so a huge count cannot loop or allocate past it."""
        if vtype not in VALUE_SIZES:
            raise WeightsError(self.path, f"corrupt GGUF: {what} has unknown value type {vtype}")
        if vtype == STRING:
            return self.string(what).decode("utf-8", "replace")
        if vtype != ARRAY:
            fmt = SCALAR_FORMATS[vtype]
            value = self.unpack_any(fmt, what)
            return bool(value) if vtype == BOOL else value
        if depth > 1:
            raise WeightsError(self.path, f"corrupt GGUF: {what} nests arrays too deeply")
        etype = self.unpack("<I", f"element type of {what}")
        count = self.unpack("<Q", f"length of {what}")
        esize = VALUE_SIZES.get(etype, -1)
        if esize == -1:
            raise WeightsError(self.path, f"corrupt GGUF: {what} has unknown element type {etype}")
        if esize is not None:  # fixed-size elements: one bounds check, one conversion
            self.need(count * esize, f"{count} elements of {what}")
            arr = np.frombuffer(self.buf, dtype=NUMPY_TYPES[etype], count=count, offset=self.pos)
            self.pos += count * esize
            return [bool(v) for v in arr] if etype == BOOL else arr.tolist()
        self.need(count * 8, f"{count} elements of {what}")  # each string or array takes >= 8 bytes
        if etype == STRING:
            return self._strings(count, what)
        return [self.read_value(etype, f"an element of {what}", depth + 1) for _ in range(count)]

    def _strings(self, count: int, what: str) -> list[str]:
        out, buf, pos, size = [], self.buf, self.pos, self.size
        unpack = struct.Struct("<Q").unpack_from
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"length of an element of {what}")
            (n,) = unpack(buf, pos)
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.need(n, f"an element of {what}")
            out.append(bytes(buf[pos:pos + n]).decode("utf-8", "replace"))
            pos += n
        self.pos = pos
        return out

    def unpack_any(self, fmt: str, what: str) -> int | float:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v


def read_header(path: Path) -> tuple[dict[str, Any], list[TensorSpan]]:
    """The validated header: metadata as Python values and the tensors' spans, in one bounds-checked pass
    (gguf's own reader took about 20 s over Qwen's 151k-token vocabulary; this takes well under one).
    Raises `WeightsError` / `UnsupportedModelError`."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 24:
            raise WeightsError(path, f"truncated GGUF: {size} bytes")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _walk(_Cursor(buf, path))


def _walk(c: _Cursor) -> tuple[dict[str, Any], list[TensorSpan]]:
    if bytes(c.buf[0:4]) != b"GGUF":
        raise WeightsError(c.path, f"not a GGUF file (magic {bytes(c.buf[0:4])!r}, expected b'GGUF')")
    c.pos = 4
    version = c.unpack("<I", "version")
    if version not in (2, 3):
        hint = "big-endian files are not supported" if version > 0xFFFF else "Ember reads GGUF versions 2 and 3"
        raise UnsupportedModelError(f"{c.path}: GGUF version {version} is not supported", hint=hint + ".")
    n_tensors = c.unpack("<Q", "tensor count")
    n_kv = c.unpack("<Q", "metadata count")
    if n_kv * 13 > c.size or n_tensors * 24 > c.size:  # the smallest possible entries
        raise WeightsError(c.path, f"corrupt GGUF: {n_tensors} tensors and {n_kv} metadata entries cannot fit "
                                   f"in {c.size} bytes")
    alignment = 32
    meta: dict[str, Any] = {}
    for i in range(n_kv):
        key = c.string(f"metadata key #{i}", MAX_KEY).decode("utf-8", "replace")
        vtype = c.unpack("<I", f"type of {key!r}")
        value = meta[key] = c.read_value(vtype, f"metadata {key!r}")
        if key == "general.alignment":
            value = value if vtype == UINT32 else None
            if not isinstance(value, int) or value <= 0 or value & (value - 1) or value > 1 << 20:
                raise WeightsError(c.path, f"corrupt GGUF: general.alignment={value!r} is not a power of two")
            alignment = value
    specs = []
    for i in range(n_tensors):
        name = c.string(f"tensor name #{i}", MAX_KEY).decode("utf-8", "replace")
        n_dims = c.unpack("<I", f"dims of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise WeightsError(c.path, f"corrupt GGUF: tensor {name!r} has {n_dims} dims (1 to {MAX_DIMS})")
        dims = tuple(c.unpack("<Q", f"a dim of {name!r}") for _ in range(n_dims))
        type_id = c.unpack("<I", f"type of {name!r}")
        offset = c.unpack("<Q", f"offset of {name!r}")
        if type_id not in GGML_TYPES:
            raise UnsupportedModelError(f"{c.path}: tensor {name!r} uses ggml type {type_id}, which Ember cannot "
                                        f"read", hint="Supported: " + ", ".join(v[0] for v in GGML_TYPES.values()))
        tname, block_elems, block_bytes = GGML_TYPES[type_id]
        elems = 1
        for d in dims:
            if d <= 0:
                raise WeightsError(c.path, f"corrupt GGUF: tensor {name!r} has shape {dims}")
            elems *= d
            if elems > c.size * 8:  # no type packs more than 8 elements per byte
                raise WeightsError(c.path, f"corrupt GGUF: tensor {name!r} of shape {dims} cannot fit in the file")
        if dims[0] % block_elems:
            raise WeightsError(c.path, f"corrupt GGUF: tensor {name!r} ({tname}) has rows of {dims[0]}, not a "
                                       f"multiple of its block of {block_elems}")
        if offset % alignment:
            raise WeightsError(c.path, f"corrupt GGUF: tensor {name!r} starts at {offset}, not aligned to {alignment}")
        specs.append((name, type_id, dims, offset, elems // block_elems * block_bytes))
    data_start = -(-c.pos // alignment) * alignment
    out = []
    for name, type_id, dims, offset, nbytes in specs:
        start = data_start + offset
        if start + nbytes > c.size:
            raise WeightsError(c.path, f"truncated or corrupt GGUF: tensor {name!r} spans bytes "
                                       f"{start}..{start + nbytes} of a {c.size}-byte file",
                               hint="Download the file again; its size or header does not match.")
        out.append(TensorSpan(name, type_id, dims, start, nbytes))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise WeightsError(c.path, "corrupt GGUF: duplicate tensor names")
    return meta, out
