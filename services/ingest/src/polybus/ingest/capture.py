"""Captures of raw venue frames: ``polybus record`` writes them, ``polybus replay`` reads them.

A capture is JSON lines, one frame per line as received: ``{"recv_ns": …, "frame": "<text>"}``
(the frame's text verbatim, so hashes and odd elements survive). Files can be gzip'ed and
rotated by size. The reader also takes a file of bare frames (one JSON frame per line), and a
single (pretty-printed) JSON frame such as the recordings in ``tests/resources``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO, cast

import msgspec

_GZIP_MAGIC = b"\x1f\x8b"


class CaptureLine(msgspec.Struct, frozen=True, kw_only=True):
    recv_ns: int
    frame: str


_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(CaptureLine)
_any_decoder = msgspec.json.Decoder()


class CaptureWriter:
    """Appends frames to ``path``; with ``rotate_bytes`` > 0, continues in numbered parts
    (``capture.0001.jsonl``, …) once a part reaches that size. ``.gz`` (or ``gzip``) compresses."""

    def __init__(self, path: Path, *, rotate_bytes: int = 0, compress: bool = False) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.compress = compress or path.suffix == ".gz"
        self.frames = 0
        self.parts: list[Path] = []
        self._part = 0
        self._written = 0
        self._file: IO[bytes] | None = None

    def _part_path(self) -> Path:
        if not self.rotate_bytes:
            return self.path
        name = self.path.name
        stem, dot, suffix = name.partition(".")
        return self.path.with_name(f"{stem}.{self._part:04d}{dot}{suffix}")

    def _open(self) -> IO[bytes]:
        self._part += 1
        path = self._part_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parts.append(path)
        self._written = 0
        raw = path.open("wb")
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="wb")) if self.compress else raw

    def write(self, frame: str | bytes, recv_ns: int) -> None:
        text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
        line = _line_encoder.encode(CaptureLine(recv_ns=recv_ns, frame=text)) + b"\n"
        if self._file is None or (self.rotate_bytes and self._written >= self.rotate_bytes):
            self.close()
            self._file = self._open()
        self._file.write(line)
        self._written += len(line)
        self.frames += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            inner = file.fileobj if isinstance(file, gzip.GzipFile) else None
            file.close()
            if inner is not None:
                inner.close()


def read_capture(path: Path) -> Iterator[tuple[int | None, bytes]]:
    """(recv_ns or None, frame) per frame, in order."""
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    lines = [line for line in data.splitlines() if line.strip()]
    if lines:
        try:
            _any_decoder.decode(lines[0])
        except msgspec.DecodeError:
            # Not one JSON value per line: the whole file is one (pretty-printed) frame.
            yield None, data
            return
    for line in lines:
        try:
            captured = _line_decoder.decode(line)
        except msgspec.DecodeError:
            yield None, line
        else:
            yield captured.recv_ns, captured.frame.encode()
