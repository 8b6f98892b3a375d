"""Atomic files: every file darnn writes goes to a temporary file, then is renamed.

So a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new file ``.NAME.XXXXXXXX.tmp`` next to ``path``, opened for writing.

    Created with mode 0o666 so the process umask applies as to any new file (mkstemp's 0o600
    would need the umask, which can only be read by changing it).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name next to {path}")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(stream)`` into a temporary file, then rename it."""
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda stream: stream.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` as JSON lines to ``path`` atomically."""
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))
