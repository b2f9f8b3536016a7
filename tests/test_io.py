"""Atomic writes: complete new file or untouched old file, no temporary left, umask permissions."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ropekit import _io


def write_with_open(path: Path, text: str) -> None:
    # A writer that needs a path, as safetensors' save_file and torch.save do.
    with _io.atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)


WRITERS: dict[str, Callable[[Path, str], None]] = {
    "bytes": lambda path, text: _io.write_bytes_atomic(path, text.encode("utf-8")),
    "text": _io.write_text_atomic,
    "atomic_path": write_with_open,
}


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield os.umask
    os.umask(previous)


def names(folder: Path) -> list[str]:
    return sorted(child.name for child in folder.iterdir())


@pytest.mark.parametrize("writer", WRITERS)
def test_writes_new_file(tmp_path, writer):
    path = tmp_path / "out.txt"
    WRITERS[writer](path, "h\u00e9llo\n")
    assert path.read_text(encoding="utf-8") == "h\u00e9llo\n"
    assert names(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("writer", WRITERS)
def test_replaces_existing_file(tmp_path, writer):
    path = tmp_path / "out.txt"
    path.write_text("a much longer old content than the new one")
    WRITERS[writer](path, "new")
    assert path.read_text() == "new"


@pytest.mark.parametrize("writer", WRITERS)
def test_creates_missing_folders(tmp_path, writer):
    path = tmp_path / "a" / "b" / "out.txt"
    WRITERS[writer](path, "x")
    assert path.read_text() == "x"


def test_failure_midway_keeps_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), _io.atomic_path(path) as temporary:
        temporary.write_bytes(b"partial")
        raise OSError("disk full")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["out.bin"]


def test_interrupt_midway_removes_temporary(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt), _io.atomic_path(path) as temporary:
        temporary.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert names(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_failed_fsync_keeps_old_file(tmp_path, monkeypatch, writer):
    # The whole new content is on disk under the temporary name when the flush fails.
    path = tmp_path / "out.txt"
    path.write_text("old")

    def failing_fsync(descriptor: int) -> None:
        raise OSError("input/output error")

    monkeypatch.setattr(_io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="input/output error"):
        WRITERS[writer](path, "new")
    assert path.read_text() == "old"
    assert names(tmp_path) == ["out.txt"]


def test_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def failing_replace(source: object, target: object) -> None:
        raise OSError("cross-device link")

    monkeypatch.setattr(_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="cross-device link"):
        _io.write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert names(tmp_path) == ["out.txt"]


def test_body_that_writes_nothing_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(FileNotFoundError), _io.atomic_path(path):
        pass
    assert path.read_text() == "old"


def test_temporary_is_beside_target_and_unique(tmp_path):
    path = tmp_path / "out.txt"
    with _io.atomic_path(path) as first, _io.atomic_path(path) as second:
        first.write_text("1")
        second.write_text("2")
        assert first.parent == tmp_path
        assert first != second
    assert path.read_text() == "1"


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_mode_follows_umask(tmp_path, umask, writer, mask):
    umask(mask)
    path = tmp_path / "out.txt"
    WRITERS[writer](path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_json_is_indented_with_newline(tmp_path):
    path = tmp_path / "out.json"
    _io.write_json_atomic(path, {"a": [1, 2.5, "x"], "b": None})
    text = path.read_text()
    assert text == json.dumps({"a": [1, 2.5, "x"], "b": None}, indent=2) + "\n"


def test_json_writes_non_finite_as_null(tmp_path):
    path = tmp_path / "out.json"
    _io.write_json_atomic(path, {"values": (1.0, float("nan"), float("inf")), "nested": {"x": -float("inf")}})

    def reject(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(path.read_text(), parse_constant=reject) == {"values": [1.0, None, None], "nested": {"x": None}}


def test_json_unserialisable_keeps_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("{}")
    with pytest.raises(TypeError):
        _io.write_json_atomic(path, {"value": object()})
    assert path.read_text() == "{}"
    assert names(tmp_path) == ["out.json"]


def test_bytes_rejects_text(tmp_path):
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        _io.write_bytes_atomic(tmp_path / "out.bin", "text")


def test_text_rejects_bytes(tmp_path):
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        _io.write_text_atomic(tmp_path / "out.txt", b"bytes")


def write_private(path: Path, text: str) -> None:
    # A writer that creates its file readable by its owner only, as safetensors' save_file does.
    with _io.atomic_path(path) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(descriptor, text.encode("utf-8"))
        os.close(descriptor)


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_private_writer_gets_umask_mode(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "out.bin"
    write_private(path, "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_writer_execute_bits_kept(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "tool"
    with _io.atomic_path(path) as temporary:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        os.close(descriptor)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_umask_read_matches_set(umask, mask):
    umask(mask)
    assert _io._umask() == mask
