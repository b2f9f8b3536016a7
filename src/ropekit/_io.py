"""Atomic file writing: a temporary file in the same folder, flushed to disk, then os.replace.

A reader, or a run killed at any moment, finds either the old file or the complete new one,
never a partial write. os.replace is atomic only within one file system, which is why the
temporary file sits in the destination's own folder.

The new file gets the permissions of a plain write: 0o666 less the process umask, or 0o777
less the umask when the writer made it executable. ``tempfile.mkstemp`` and some writers
(safetensors' ``save_file``) create the file readable by its owner only, so the mode is set
before the rename.

This module imports no torch, so the light CLI modules can use it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path`` and move it over ``path`` on success.

    The body must create the file at the yielded path, which suits writers that take a
    path (safetensors' ``save_file``, ``torch.save``, a compiler's ``-o``). When the body
    returns, the file gets its umask mode, is fsynced and is renamed over ``path``. When
    the body raises, the temporary file is deleted and ``path`` is left as it was. Missing
    parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid and a random part keep concurrent writers of the same path apart.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        yield temporary
        _finish(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        handle.write(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically, encoded as UTF-8."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` to ``path`` atomically as JSON indented by two spaces, ending in a newline.

    JSON has no infinity or NaN (RFC 8259, section 6), so non-finite floats are written as
    null, which every strict JSON parser reads.
    """
    write_text_atomic(path, json.dumps(_finite(data), indent=2) + "\n")


def _finish(path: Path) -> None:
    """Give the file at ``path`` the umask's permissions and flush it to disk."""
    # fsync and fchmod act on the file, not the descriptor, so a second descriptor flushes
    # what the writer wrote through its own.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        # Some writers create a private file (safetensors' save_file makes it 0o600), so the
        # mode is reset from the umask. A file the writer made executable, as a compiler does
        # with a shared library, stays executable.
        executable = os.fstat(descriptor).st_mode & 0o111
        os.fchmod(descriptor, (0o777 if executable else 0o666) & ~_umask())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _umask() -> int:
    """Return the process umask without changing it where Linux reports it."""
    # os.umask can only read the mask by setting it, and a file another thread creates in
    # between would get the wrong mode, so /proc/self/status (Linux 4.7 and later) comes first.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
