"""Tokenizers: SentencePiece-style (from GGUF), Hugging Face tokenizer.json, and raw bytes.

Every tokenizer has ``encode(text, add_bos=None) -> list[int]``, where None means the
tokenizer's own setting,
``decode(ids, skip_special_tokens=True) -> str``, ``vocab_size``, ``bos_id`` and
``eos_id`` (None when the vocabulary has no such token).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ropekit._io import write_text_atomic

logger = logging.getLogger("ropekit.models.tokenizers")

# SentencePiece writes a space as U+2581 LOWER ONE EIGHTH BLOCK inside its pieces.
SPACE_MARK = "\u2581"

# Token types of the GGUF vocabulary (gguf-py's TokenType).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


class SentencePieceTokenizer:
    """A SentencePiece BPE vocabulary with scores, as GGUF llama files embed it.

    Encoding (the SentencePiece BPE algorithm, as llama.cpp and llama2.c run it): spaces
    become U+2581, a space is put in front of the text (``add_space_prefix``), the text is
    split into characters, a character missing from the vocabulary becomes its UTF-8 bytes
    as byte tokens such as <0x0A>, and then the adjacent pair whose concatenation is in the
    vocabulary with the highest score is merged, again and again, leftmost first on ties,
    until no pair is in the vocabulary.

    Args:
        tokens: the piece of every token id.
        scores: merge priority of every token (higher merges first).
        token_types: GGUF token type of every id (1 normal, 2 unknown, 3 control, 6 byte);
            None treats every token as normal except byte tokens spelled <0xXX>.
        bos_id, eos_id, unknown_id: special token ids, or None.
        add_space_prefix: put a space in front of the text before encoding, and drop it
            again when decoding.
        add_bos_token: whether ``encode`` puts the BOS id first when its ``add_bos`` is None
            (GGUF ``tokenizer.ggml.add_bos_token``).
    """

    def __init__(
        self,
        tokens: Sequence[str],
        scores: Sequence[float],
        token_types: Sequence[int] | None = None,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        unknown_id: int | None = None,
        add_space_prefix: bool = True,
        add_bos_token: bool = True,
    ) -> None:
        if len(tokens) != len(scores):
            raise ValueError(f"tokens and scores must have one entry per token, got {len(tokens)} and {len(scores)}")
        if token_types is not None and len(token_types) != len(tokens):
            raise ValueError(f"token_types must have one entry per token, got {len(token_types)} for {len(tokens)} tokens")
        self.tokens = list(tokens)
        self.scores = [float(score) for score in scores]
        self.token_types = list(token_types) if token_types is not None else [_guess_type(piece) for piece in tokens]
        self.bos_id, self.eos_id, self.unknown_id = bos_id, eos_id, unknown_id
        self.add_space_prefix = add_space_prefix
        self.add_bos_token = add_bos_token

        # Only normal and user-defined pieces take part in merges and character lookup, so
        # control tokens such as <s> never come out of plain text.
        # NOTE: SentencePiece matches a multi-character user-defined piece whole before
        # splitting; here it can only arise from merges, which may split it differently.
        self._piece_ids = {
            piece: index
            for index, (piece, kind) in enumerate(zip(self.tokens, self.token_types))
            if kind in (TOKEN_NORMAL, TOKEN_USER_DEFINED)
        }
        self._byte_ids: dict[int, int] = {}
        for index, (piece, kind) in enumerate(zip(self.tokens, self.token_types)):
            if kind == TOKEN_BYTE:
                self._byte_ids[int(piece[3:5], 16)] = index

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Return the token ids of ``text``, with the BOS id first when ``add_bos`` (None: ``add_bos_token``)."""
        if add_bos is None:
            add_bos = self.add_bos_token
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        if not text:
            return ids
        if self.add_space_prefix:
            text = " " + text
        symbols = self._initial_symbols(text.replace(" ", SPACE_MARK))
        return ids + self._merge(symbols)

    def _initial_symbols(self, text: str) -> list[list[int] | str]:
        """Split text into characters; a character missing from the vocabulary becomes byte ids."""
        symbols: list[list[int] | str] = []
        for character in text:
            if character in self._piece_ids:
                symbols.append(character)
                continue
            byte_ids = [self._byte_ids.get(byte) for byte in character.encode("utf-8")]
            if any(index is None for index in byte_ids):
                if self.unknown_id is None:
                    raise ValueError(f"character {character!r} is not in the vocabulary and has no byte fallback")
                byte_ids = [self.unknown_id]
            symbols.append(byte_ids)
        return symbols

    def _merge(self, symbols: list[list[int] | str]) -> list[int]:
        """Merge adjacent pieces by score; byte-fallback symbols never merge.

        Symbols form a linked list; a heap stores candidate pairs ordered by (-score, left
        index), and a popped pair is skipped when either side changed since it was pushed.
        """
        count = len(symbols)
        pieces = [symbol if isinstance(symbol, str) else None for symbol in symbols]
        next_index = list(range(1, count + 1))
        previous_index = list(range(-1, count - 1))
        heap: list[tuple[float, int, int, str, str]] = []

        def push(left: int) -> None:
            right = next_index[left]
            if right >= count or pieces[left] is None or pieces[right] is None:
                return
            merged = pieces[left] + pieces[right]
            index = self._piece_ids.get(merged)
            if index is not None:
                heapq.heappush(heap, (-self.scores[index], left, right, pieces[left], pieces[right]))

        for position in range(count - 1):
            push(position)
        while heap:
            _, left, right, left_piece, right_piece = heapq.heappop(heap)
            if pieces[left] != left_piece or pieces[right] != right_piece or next_index[left] != right:
                continue  # stale: one side was merged into something else since
            pieces[left] = left_piece + right_piece
            pieces[right] = ""  # removed from the list
            next_index[left] = next_index[right]
            if next_index[right] < count:
                previous_index[next_index[right]] = left
            if previous_index[left] >= 0:
                push(previous_index[left])
            push(left)

        ids: list[int] = []
        position = 0
        while position < count:
            symbol = symbols[position]
            if pieces[position] is None:
                ids.extend(symbol)  # byte fallback ids
            else:
                ids.append(self._piece_ids[pieces[position]])
            position = next_index[position]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Return the text of ``ids``: byte tokens become bytes, U+2581 becomes a space."""
        data = bytearray()
        for index in ids:
            index = int(index)
            if not 0 <= index < len(self.tokens):
                raise ValueError(f"token id {index} is outside the vocabulary of {len(self.tokens)} tokens")
            kind = self.token_types[index]
            if kind == TOKEN_BYTE:
                data.append(int(self.tokens[index][3:5], 16))
            elif kind in (TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_UNUSED):
                if not skip_special_tokens:
                    data.extend(self.tokens[index].encode("utf-8"))
            else:
                data.extend(self.tokens[index].replace(SPACE_MARK, " ").encode("utf-8"))
        text = data.decode("utf-8", errors="replace")
        if self.add_space_prefix and text.startswith(" "):
            text = text[1:]
        return text

    def to_dict(self) -> dict[str, Any]:
        """Return the vocabulary as a JSON-serialisable dict (``from_dict`` reads it back)."""
        return {
            "type": "sentencepiece",
            "tokens": self.tokens,
            "scores": self.scores,
            "token_types": self.token_types,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "unknown_id": self.unknown_id,
            "add_space_prefix": self.add_space_prefix,
            "add_bos_token": self.add_bos_token,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SentencePieceTokenizer:
        return cls(
            values["tokens"],
            values["scores"],
            values.get("token_types"),
            bos_id=values.get("bos_id"),
            eos_id=values.get("eos_id"),
            unknown_id=values.get("unknown_id"),
            add_space_prefix=values.get("add_space_prefix", True),
            add_bos_token=values.get("add_bos_token", True),
        )


def _guess_type(piece: str) -> int:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return TOKEN_BYTE
    return TOKEN_NORMAL


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, the vocabulary of ropekit's byte-level study models."""

    vocab_size = 256
    bos_id = None
    eos_id = None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Return the UTF-8 bytes of ``text`` (this vocabulary has no BOS, so add_bos has no effect)."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Return the text of the bytes ``ids``; invalid UTF-8 becomes U+FFFD."""
        invalid = [int(index) for index in ids if not 0 <= int(index) < 256]
        if invalid:
            raise ValueError(f"byte token ids must lie in [0, 256), got {invalid[:5]}")
        return bytes(int(index) for index in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bytes"}


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` run by the ``tokenizers`` package.

    BOS and EOS come from tokenizer_config.json (``bos_token``, ``eos_token``) or config.json
    (``bos_token_id``, ``eos_token_id``). Whether encode adds BOS is decided by the
    tokenizer's own post-processor; ``add_bos=False`` turns all special tokens off, and None
    or True leaves them to the post-processor.
    """

    def __init__(self, path: str | os.PathLike[str], *, bos_id: int | None = None, eos_id: int | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as error:
            raise ImportError(
                "reading tokenizer.json needs the 'tokenizers' package: pip install tokenizers"
            ) from error
        self.path = Path(path)
        try:
            self._tokenizer = Tokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises its own Exception type for bad files
            raise ValueError(f"cannot read {self.path} as a tokenizers tokenizer.json ({error})") from None
        self.bos_id, self.eos_id = bos_id, eos_id

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Return the token ids of ``text`` (special tokens as the post-processor adds them)."""
        return list(self._tokenizer.encode(text, add_special_tokens=add_bos is not False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(index) for index in ids], skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def save(self, directory: Path) -> None:
        """Write tokenizer.json into ``directory`` atomically."""
        write_text_atomic(directory / "tokenizer.json", self._tokenizer.to_str())


def hf_tokenizer_from_directory(directory: Path) -> HFTokenizer:
    """Build an HFTokenizer from tokenizer.json and the special tokens named beside it."""
    tokenizer = HFTokenizer(directory / "tokenizer.json")
    bos_id = eos_id = None
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        bos_id = _special_token_id(tokenizer, config.get("bos_token"))
        eos_id = _special_token_id(tokenizer, config.get("eos_token"))
    model_config_path = directory / "config.json"
    if model_config_path.is_file() and (bos_id is None or eos_id is None):
        model_config = json.loads(model_config_path.read_text(encoding="utf-8"))
        bos_id = bos_id if bos_id is not None else _first_id(model_config.get("bos_token_id"))
        eos_id = eos_id if eos_id is not None else _first_id(model_config.get("eos_token_id"))
    tokenizer.bos_id, tokenizer.eos_id = bos_id, eos_id
    return tokenizer


def _special_token_id(tokenizer: HFTokenizer, token: Any) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return tokenizer.token_id(token) if isinstance(token, str) else None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)
