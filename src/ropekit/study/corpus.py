"""Text corpora for the study: files -> bytes -> a train split and a validation split.

Tokens are bytes (vocabulary 256), so a loss per token is a loss per byte.

The default corpus is the Python standard library of the running interpreter: real
text that every machine with Python has. Its subset is chosen by a hash of each file's
path relative to the library root, so one interpreter version always yields the same
bytes, and the validation split is a set of whole files, never seen in training.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger("ropekit.study.corpus")

VOCAB_SIZE = 256

# Size of the default corpus: about 8 MB in all, of which about 0.5 MB is validation.
DEFAULT_CORPUS_BYTES = 8_000_000
DEFAULT_VALIDATION_BYTES = 500_000

# Fraction of a single-file corpus held out, from its end, for validation.
SINGLE_FILE_VALIDATION_FRACTION = 0.1

# A file whose first BINARY_PROBE_BYTES contain a NUL byte is treated as binary.
BINARY_PROBE_BYTES = 8192

# Folder names whose files are test suites, left out of the default corpus.
_TEST_FOLDERS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"}


class CorpusError(ValueError):
    """A corpus that is missing, empty, binary or too small for the study."""


@dataclass(frozen=True)
class Corpus:
    """Byte tokens of a corpus, split into training and validation.

    Attributes:
        name: the corpus's path or pattern, or "python-stdlib" for the default.
        train: uint8 tensor of training bytes.
        validation: uint8 tensor of validation bytes.
        files: number of files read.
    """

    name: str
    train: torch.Tensor
    validation: torch.Tensor
    files: int

    def summary(self) -> dict[str, object]:
        """Describe the corpus as results.json stores it."""
        return {
            "name": self.name,
            "files": self.files,
            "train_bytes": int(self.train.numel()),
            "validation_bytes": int(self.validation.numel()),
        }


def load_corpus(path: str | os.PathLike[str] | None = None) -> Corpus:
    """Load a corpus and split it into training and validation bytes.

    ``path`` may be None (the standard library subset), a text file (its last 10% is
    validation), a directory searched recursively for text files (hidden ones left out),
    or a glob pattern.
    With several files, whole files are held out for validation, chosen by a hash of
    their paths. Raises CorpusError when nothing readable is found.
    """
    if path is None:
        return _load_stdlib_corpus()

    text = os.fspath(path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        data = _read_text_file(candidate, explicit=True)
        return _split_single_file(str(candidate), data)
    if candidate.is_dir():
        # Hidden files and folders (.git, .venv, editor state) are not part of the text.
        files = sorted(
            p for p in candidate.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(candidate).parts)
        )
        if not files:
            raise CorpusError(f"corpus directory {text!r} contains no files; put text files (.txt, .py, ...) in it")
        return _load_many(text, files, root=candidate)

    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True))
    files = [p for p in matches if p.is_file()]
    if not files:
        raise CorpusError(
            f"corpus {text!r} not found: it is not a file, not a directory, and matches no file as a glob pattern"
        )
    return _load_many(text, files, root=None)


def check_corpus_size(corpus: Corpus, *, min_train_bytes: int, min_validation_bytes: int) -> None:
    """Raise CorpusError when either split is smaller than the study needs."""
    train_bytes = int(corpus.train.numel())
    validation_bytes = int(corpus.validation.numel())
    if train_bytes < min_train_bytes or validation_bytes < min_validation_bytes:
        raise CorpusError(
            f"corpus {corpus.name!r} is too small: found {train_bytes} training and {validation_bytes} "
            f"validation bytes, but this study needs at least {min_train_bytes} and {min_validation_bytes} "
            "(evaluation needs one window of the longest evaluation length); use a larger corpus or a "
            "shorter --train-length"
        )


def stdlib_root() -> Path:
    """Return the folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_source_files(root: Path) -> list[Path]:
    """List the library's .py files, leaving out test suites and installed packages."""
    files = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root)
        if any(part in _TEST_FOLDERS for part in relative.parts[:-1]):
            continue
        if relative.name.startswith("test_") or relative.name == "conftest.py":
            continue
        if path.is_file():
            files.append(path)
    return files


def _load_stdlib_corpus() -> Corpus:
    root = stdlib_root()
    files = stdlib_source_files(root)
    if not files:
        raise CorpusError(
            f"found no Python source files under the standard library folder {str(root)!r}; "
            "pass a text corpus with --corpus PATH"
        )

    # Files in the order of a hash of their relative paths: a fixed, well-mixed order.
    ordered = sorted(files, key=lambda p: _path_hash(p.relative_to(root).as_posix()))
    validation: list[bytes] = []
    train: list[bytes] = []
    validation_bytes = train_bytes = 0
    for path in ordered:
        data = path.read_bytes()
        if not data or b"\0" in data[:BINARY_PROBE_BYTES]:
            continue
        if validation_bytes < DEFAULT_VALIDATION_BYTES:
            validation.append(data)
            validation_bytes += len(data)
        elif validation_bytes + train_bytes < DEFAULT_CORPUS_BYTES:
            train.append(data)
            train_bytes += len(data)
        else:
            break
    used = len(validation) + len(train)
    logger.info("standard library corpus: %d of %d files from %s", used, len(files), root)
    return Corpus("python-stdlib", _to_tensor(b"".join(train)), _to_tensor(b"".join(validation)), used)


def _load_many(name: str, files: list[Path], root: Path | None) -> Corpus:
    texts: list[tuple[str, bytes]] = []
    binary = empty = 0
    for path in files:
        data = _read_text_file(path, explicit=False)
        if data is None:
            binary += 1
        elif not data:
            empty += 1
        else:
            key = path.relative_to(root).as_posix() if root is not None else path.as_posix()
            texts.append((key, data))
    if not texts:
        raise CorpusError(
            f"corpus {name!r} has no usable text: found {len(files)} files, {binary} binary and {empty} empty; "
            "the study needs text files"
        )
    if binary:
        logger.warning("corpus %s: skipped %d binary files", name, binary)
    if len(texts) == 1:
        return _split_single_file(name, texts[0][1])

    # Hold out whole files: walk them in hash order until a tenth of the bytes is held out.
    total = sum(len(data) for _, data in texts)
    ordered = sorted(texts, key=lambda item: _path_hash(item[0]))
    validation: list[bytes] = []
    train: list[bytes] = []
    held_out = 0
    for _, data in ordered:
        if held_out < SINGLE_FILE_VALIDATION_FRACTION * total and len(validation) < len(texts) - 1:
            validation.append(data)
            held_out += len(data)
        else:
            train.append(data)
    return Corpus(name, _to_tensor(b"".join(train)), _to_tensor(b"".join(validation)), len(texts))


def _split_single_file(name: str, data: bytes | None) -> Corpus:
    if not data:
        raise CorpusError(f"corpus file {name!r} is empty; the study needs text")
    split = int(len(data) * (1.0 - SINGLE_FILE_VALIDATION_FRACTION))
    return Corpus(name, _to_tensor(data[:split]), _to_tensor(data[split:]), 1)


def _read_text_file(path: Path, *, explicit: bool) -> bytes | None:
    """Read a file; return None for a binary one, or raise when the user named it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {error}") from error
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        if explicit:
            raise CorpusError(
                f"corpus file {str(path)!r} looks binary (it contains NUL bytes); the study needs a text file"
            )
        return None
    return data


def _path_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _to_tensor(data: bytes) -> torch.Tensor:
    # bytearray gives torch.frombuffer a writable buffer, which it expects.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
