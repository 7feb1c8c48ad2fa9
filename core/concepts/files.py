"""Crash-safe small files: atomic replace, an advisory lock, stale temp clean-up.

A write goes to a temporary file in the same folder (same file system, so the rename is
atomic), is flushed and fsync'ed, then ``os.replace``'d over the target, and the folder is
fsync'ed so the rename itself survives a power cut. A process killed at any moment leaves
either the previous complete file or the new complete file, plus at worst an orphaned
temporary file, which the next writer holding the lock removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

TMP_SUFFIX = ".tmp"


def parse_json(raw: bytes | str) -> Any:
    """``json.loads``, where nesting too deep for the parser (``[[[[…]]]]``) is a ValueError
    like any other malformed file, not a RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def signature(f: BinaryIO) -> tuple[int, int, int]:
    """What changes when an open file's content may have: (inode, size, mtime in ns). An
    atomic replace (a new inode) or a write in place (size or mtime) both change it."""
    st = os.fstat(f.fileno())
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_bounded(f: BinaryIO, max_bytes: int) -> bytes:
    """The rest of the open file ``f``; a ValueError, before reading, when it holds more than
    ``max_bytes``."""
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        raise ValueError(
            f"{size / 2**20:.1f} MiB, more than the {max_bytes / 2**20:.0f} MiB allowed"
        )
    raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:  # it grew while we looked
        raise ValueError(f"more than the {max_bytes / 2**20:.0f} MiB allowed")
    return raw


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) so that readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def dumps(obj: Any, indent: int = 1, _level: int = 0) -> str:
    """JSON with objects and lists of containers indented, lists of numbers or strings on
    one line: readable, diff-friendly files (json.loads reads them back unchanged)."""
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict) and obj:
        items = [
            f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, indent, _level + 1)}"
            for k, v in obj.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in obj):
        items = [inner + dumps(v, indent, _level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporaries left by writers of ``path`` that died; call only under ``locked``."""
    removed = []
    for p in Path(path).parent.glob(_tmp_prefix(Path(path)) + "*" + TMP_SUFFIX):
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` + ".lock" (between processes).

    The operating system drops the lock when its holder dies, so a killed writer never
    blocks the next one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as f:
        if os.name == "posix":
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        else:  # Windows: lock the first byte (blocking with retries inside msvcrt)
            import msvcrt

            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
