"""Captures of raw venue frames: ``polybus record`` writes them, ``polybus replay`` reads them.

A capture is JSON lines, one frame per line as received: ``{"recv_ns": …, "frame": "<text>"}``
(the frame's text verbatim, so hashes and odd elements survive). Files can be gzip'ed and
rotated by size. The reader also takes a file of bare frames (one JSON frame per line), and a
single (pretty-printed) JSON frame such as the recordings in ``tests/resources``.

A bare line that is not a JSON object or array is not a frame: the reader skips it and counts
it in :class:`CaptureProblems`, as it notes a gzip file that ends early (a ``record`` that was
killed): the frames before the cut are still read.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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


class CaptureError(Exception):
    """The file cannot be read as a capture at all (unreadable, or a gzip header is broken)."""


@dataclass
class CaptureProblems:
    """What :func:`read_capture` skipped or could not read, filled in as it goes."""

    lines: int = 0
    """Non-blank lines seen (1 for a file that is one pretty-printed frame)."""
    frames: int = 0
    not_frames: int = 0
    first_bad_line: int = 0
    """1-based number of the first line that is not a frame (0: none)."""
    truncated: str = ""
    """Why the compressed data ended early (empty: it did not)."""

    def describe(self, path: Path) -> str:
        """One line saying what was wrong, or ``""`` when nothing was."""
        problems = []
        if self.not_frames:
            problems.append(
                f"{self.not_frames} of {self.lines} lines are not frames "
                f"(the first is line {self.first_bad_line})"
            )
        if self.truncated:
            problems.append(f"the compressed data ends early ({self.truncated})")
        if not self.lines and not self.truncated:
            problems.append("the file is empty")
        return f"{path}: " + "; ".join(problems) if problems else ""


def _decompress(data: bytes, problems: CaptureProblems) -> bytes:
    # gzip.decompress gives nothing back from a cut file; a decompressor gives what is there.
    parts = []
    while data:
        decompressor = zlib.decompressobj(wbits=31)
        try:
            parts.append(decompressor.decompress(data))
        except zlib.error as error:
            if not parts:
                raise CaptureError(f"not a readable gzip file ({error})") from None
            problems.truncated = f"a gzip member is damaged: {error}"
            break
        if not decompressor.eof:
            problems.truncated = "the gzip stream stops before its end marker"
            break
        data = decompressor.unused_data  # concatenated gzip members
    return b"".join(parts)


def _is_frame(line: bytes) -> bool:
    try:
        value = _any_decoder.decode(line)
    except msgspec.DecodeError:
        return False
    return isinstance(value, dict | list)


def read_capture(
    path: Path, problems: CaptureProblems | None = None
) -> Iterator[tuple[int | None, bytes]]:
    """(recv_ns or None, frame) per frame, in order; ``problems`` notes what was skipped.

    Raises :class:`CaptureError` when the file cannot be read at all.
    """
    problems = problems if problems is not None else CaptureProblems()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CaptureError(error.strerror or str(error)) from None
    if data[:2] == _GZIP_MAGIC:
        data = _decompress(data, problems)
    lines = data.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is not None and not _is_frame(first) and _is_frame(data):
        # Not one JSON value per line: the whole file is one (pretty-printed) frame.
        problems.lines = problems.frames = 1
        yield None, data
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problems.lines += 1
        try:
            captured = _line_decoder.decode(line)
        except msgspec.DecodeError:
            if not _is_frame(line):
                problems.not_frames += 1
                problems.first_bad_line = problems.first_bad_line or number
                continue
            problems.frames += 1
            yield None, line
        else:
            problems.frames += 1
            yield captured.recv_ns, captured.frame.encode()
