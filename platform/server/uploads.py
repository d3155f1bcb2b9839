"""Uploads, safely: names that cannot escape the folder, known document types only, a size limit per file.

The multipart body is parsed as it streams in and each file goes straight to a temporary file inside the
collection's upload folder, so nothing is ever written outside the data directory (no system temp spool)
and an oversized file is stopped at the limit, not after it has been read whole. A file only takes its
real name (atomically, `os.replace`) once it is complete and accepted; a refused upload leaves nothing.
Archives are refused rather than unpacked: the person uploads the documents themselves.
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from ember.platform.server.errors import ApiError

DOCUMENT_TYPES = {".md", ".markdown", ".mdx", ".txt", ".text", ".rst", ".html", ".htm", ".xhtml", ".pdf"}
ARCHIVES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".jar", ".whl"}
SAFE = re.compile(r"^[\w][\w .()+,=@-]{0,150}$")
MAX_FILES = 20


def safe_name(raw: str) -> str:
    """The file name to store an upload under, or a 400 when it is not a plain file name."""
    name = unicodedata.normalize("NFC", raw).strip()
    base = PureWindowsPath(PurePosixPath(name).name).name  # drop any directory part, / or \
    if not name or base != name or name in (".", "..") or "\x00" in name or not SAFE.match(name):
        raise ApiError(400, f"invalid file name {raw!r}: give a plain file name (letters, digits, spaces, "
                            "'.', '-', '_'), without folders", code="invalid_filename", param="file")
    return name


def check_type(name: str) -> str:
    suffix = "".join(PurePosixPath(name).suffixes[-2:]).lower() if name.lower().endswith(".tar.gz") else \
        PurePosixPath(name).suffix.lower()
    if suffix in ARCHIVES or suffix == ".tar.gz":
        raise ApiError(415, f"{name}: archives are not unpacked; upload the documents inside it instead",
                       code="unsupported_media_type", param="file")
    if suffix not in DOCUMENT_TYPES:
        raise ApiError(415, f"{name}: unsupported file type {suffix or '(none)'!r}; supported: "
                            f"{', '.join(sorted(DOCUMENT_TYPES))}", code="unsupported_media_type", param="file")
    return suffix


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str | None = None  # safe file name; None = a plain form field (ignored)
    tmp: Path | None = None
    handle: BinaryIO | None = None
    size: int = 0


class _Receiver:
    """python-multipart callbacks: each file part streams into a temporary file in `folder`."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.part = _Part()
        self.field, self.value = b"", b""
        self.done: list[tuple[Path, Path]] = []  # (temporary, final)
        self.error: ApiError | None = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def on_headers_finished(self) -> None:
        p = self.part
        _, opts = parse_options_header(p.headers.get(b"content-disposition", b""))
        if b"filename" not in opts:
            return
        if len(self.done) >= MAX_FILES:
            raise ApiError(400, f"at most {MAX_FILES} files per upload", code="too_many_files")
        p.name = safe_name(opts[b"filename"].decode("utf-8", "replace"))
        check_type(p.name)
        # a name no other part, upload or process can have: mkstemp creates it with O_EXCL (a name made from
        # `id()` of a freed part object was reused by the next part, and one file took another's bytes)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".part", dir=self.folder)
        p.tmp = Path(tmp)
        p.handle = os.fdopen(fd, "wb")  # closed in on_part_end or by `discard`

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        p = self.part
        if p.handle is None:
            return
        p.size += end - start
        if p.size > self.max_bytes:  # stop writing at once; the rest of the body is read and discarded
            self.error = ApiError(413, f"{p.name} is larger than the upload limit of {self.max_bytes / 1e6:g} MB",
                                  code="file_too_large", param="file")
            self.close_part(delete=True)
            return
        p.handle.write(data[start:end])

    def on_part_end(self) -> None:
        p = self.part
        if p.handle is not None and p.tmp is not None and p.name is not None:
            self.close_part(delete=False)
            self.done.append((p.tmp, self.folder / p.name))

    def close_part(self, delete: bool) -> None:
        p = self.part
        if p.handle is not None:
            p.handle.close()
            p.handle = None
        if delete and p.tmp is not None:
            p.tmp.unlink(missing_ok=True)

    def discard(self) -> None:
        self.close_part(delete=True)
        for tmp, _ in self.done:
            tmp.unlink(missing_ok=True)


async def receive_files(stream: AsyncIterator[bytes], content_type: str, folder: Path, max_bytes: int
                        ) -> list[Path]:
    """Parse a multipart body into `folder`; returns the stored files. Refusals leave nothing behind."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not content_type.startswith("multipart/form-data") or not boundary:
        raise ApiError(400, "send the files as multipart/form-data (field name 'file')", code="invalid_upload")
    folder.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(folder, max_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    cap = MAX_FILES * max_bytes + (1 << 20)  # the most body we read, even just to discard it
    total = 0
    try:
        async for chunk in stream:
            total += len(chunk)
            if total > cap:
                raise ApiError(413, f"the upload is larger than {cap / 1e6:g} MB", code="request_too_large")
            parser.write(chunk)
        parser.finalize()
        if receiver.error is not None:
            raise receiver.error
        if not receiver.done:
            raise ApiError(400, "no file in the upload (multipart field 'file')", code="invalid_upload")
        for tmp, final in receiver.done:
            if final.resolve().parent != folder.resolve():  # safe_name prevents it; a real check, not an assert
                raise ApiError(400, f"invalid file name {final.name!r}", code="invalid_upload")
            os.replace(tmp, final)
        return [final for _, final in receiver.done]
    except BaseException:
        receiver.discard()
        raise
