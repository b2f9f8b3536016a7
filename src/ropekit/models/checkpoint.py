"""load_model, load_tokenizer and save_model: checkpoints on local paths only.

Three formats are read:
- ropekit's own directories written by ``save_model``: config.json with
  ``"model_type": "ropekit"`` plus model.safetensors (and optionally a tokenizer file);
- Hugging Face directories of the Llama layout (see ``ropekit.models.hf``);
- GGUF files of the llama architecture (see ``ropekit.models.gguf``).
Nothing is ever unpickled and nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ropekit._io import atomic_path, write_text_atomic
from ropekit.models import gguf as gguf_format
from ropekit.models import hf as hf_format
from ropekit.models.config import DecoderConfig
from ropekit.models.decoder import Decoder
from ropekit.models.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    hf_tokenizer_from_directory,
)

logger = logging.getLogger("ropekit.models.checkpoint")

ROPEKIT_MODEL_TYPE = "ropekit"
FORMAT_VERSION = 1
TOKENIZER_FILE = "ropekit_tokenizer.json"

# "owner/name" with the characters the Hugging Face Hub allows; a local path that exists
# always wins over this reading.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

Tokenizer = SentencePieceTokenizer | HFTokenizer | ByteTokenizer


# File suffixes of checkpoint files; a missing path with one of them is a path, never a Hub id.
CHECKPOINT_SUFFIXES = (".gguf", ".json", ".safetensors")


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Return the existing local checkpoint path; explain what went wrong otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    resolved = Path(path).expanduser()
    if resolved.exists():
        return resolved
    # A file name such as models/nope.gguf has the owner/name shape too, but its suffix marks a path.
    if _HUB_ID.match(str(path)) and resolved.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise FileNotFoundError(
            f"{str(path)!r} is not a local path; it looks like a Hugging Face Hub id, but ropekit loads only local "
            "checkpoints. Download it first (for example `huggingface-cli download "
            f"{path} --local-dir DIR`) and pass DIR."
        )
    raise FileNotFoundError(
        f"checkpoint not found: {resolved}; expected a directory with config.json and safetensors files, or a .gguf file"
    )


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and dtype not in _DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; expected one of {', '.join(_DTYPES)}")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_model(
    path: str | os.PathLike[str],
    *,
    rope_scaling: Mapping[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str = "cpu",
) -> Decoder:
    """Load a checkpoint into a ``Decoder`` in eval mode.

    Args:
        path: a ropekit or Hugging Face checkpoint directory, its config.json, or a .gguf file.
        rope_scaling: a RoPE scaling spec such as {"rope_type": "yarn", "factor": 4.0} that
            replaces the checkpoint's own (for context extension); None keeps the checkpoint's.
        dtype: the weights' dtype (torch dtype or its name); None keeps the stored one
            (float32 for GGUF).
        device: where the model is placed.

    Raises:
        FileNotFoundError: the path does not exist (with a hint when it looks like a Hub id),
            or a weights file is missing.
        ValueError: an unsupported architecture or dtype, a truncated or corrupt file, or
            weights whose names or shapes do not match the config.
    """
    checkpoint = resolve_checkpoint(path)
    target_dtype = _resolve_dtype(dtype)
    config, state = _read_checkpoint(checkpoint)
    stored_dtype = next(iter(state.values())).dtype if state else torch.float32

    model = Decoder(config)
    _load_state(model, state, checkpoint)
    model.to(device=device, dtype=target_dtype or stored_dtype)
    if rope_scaling is not None:
        model.set_rope_scaling(rope_scaling)
    logger.info("loaded %s: %d layers, %d parameters", checkpoint, config.num_layers, model.num_parameters())
    return model.eval()


def _read_checkpoint(checkpoint: Path) -> tuple[DecoderConfig, dict[str, torch.Tensor]]:
    """Return the decoder config and the state dict under the decoder's names."""
    if checkpoint.is_file():
        if checkpoint.name == "config.json":
            checkpoint = checkpoint.parent
        elif checkpoint.suffix == ".gguf":
            reader = gguf_format.open_gguf(checkpoint)
            return gguf_format.decoder_config_from_gguf(reader, checkpoint), gguf_format.gguf_state_dict(reader, checkpoint)
        else:
            raise ValueError(
                f"{checkpoint} is neither a .gguf file nor a config.json; pass a checkpoint directory or a GGUF file "
                "(pickled .bin/.pt files are not loaded)"
            )

    # The config is checked before any weights are read, so an unsupported model fails fast.
    values = hf_format.read_json(checkpoint / "config.json", "model config")
    if values.get("model_type") == ROPEKIT_MODEL_TYPE:
        decoder_values = values.get("decoder")
        if not isinstance(decoder_values, dict):
            raise ValueError(f"{checkpoint / 'config.json'} has model_type 'ropekit' but no 'decoder' object")
        config = DecoderConfig.from_dict(decoder_values)
        return config, hf_format.read_safetensors(hf_format.safetensors_files(checkpoint))
    config = hf_format.decoder_config_from_hf(values)
    tensors = hf_format.read_safetensors(hf_format.safetensors_files(checkpoint))
    return config, hf_format.hf_state_dict(tensors, config, values["model_type"])


def _load_state(model: Decoder, state: Mapping[str, torch.Tensor], checkpoint: Path) -> None:
    """Copy ``state`` into ``model``; list every missing, unexpected or mis-shaped tensor."""
    expected = {name: tensor for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: expected {tuple(expected[name].shape)}, found {tuple(state[name].shape)}"
        for name in sorted(set(expected) & set(state))
        if tuple(expected[name].shape) != tuple(state[name].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else ""))
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched[:10])}")
    if problems:
        raise ValueError(f"the weights of {checkpoint} do not match its config: " + "; ".join(problems))
    with torch.no_grad():
        for name, tensor in state.items():
            expected[name].copy_(tensor)


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load the tokenizer of a checkpoint: GGUF vocabulary, tokenizer.json, or ropekit's own.

    Raises FileNotFoundError when the checkpoint has no tokenizer ropekit can read.
    """
    checkpoint = resolve_checkpoint(path)
    if checkpoint.is_file() and checkpoint.suffix == ".gguf":
        reader = gguf_format.open_gguf(checkpoint)
        return gguf_format.tokenizer_from_gguf(reader, checkpoint)
    directory = checkpoint.parent if checkpoint.is_file() else checkpoint
    own = directory / TOKENIZER_FILE
    if own.is_file():
        values = hf_format.read_json(own, "ropekit tokenizer file")
        if values.get("type") == "bytes":
            return ByteTokenizer()
        if values.get("type") == "sentencepiece":
            return SentencePieceTokenizer.from_dict(values)
        raise ValueError(f"{own} names an unknown tokenizer type {values.get('type')!r}; expected 'bytes' or 'sentencepiece'")
    if (directory / "tokenizer.json").is_file():
        return hf_tokenizer_from_directory(directory)
    raise FileNotFoundError(
        f"no tokenizer in {directory}: expected tokenizer.json (Hugging Face) or {TOKENIZER_FILE} (ropekit)"
    )


def save_model(model: Decoder, directory: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None) -> Path:
    """Write ``model`` (and optionally its tokenizer) as a ropekit checkpoint; return the directory.

    Files: model.safetensors (a tied head is stored once, as embed_tokens.weight),
    config.json with ``"model_type": "ropekit"``, and ropekit_tokenizer.json or
    tokenizer.json when a tokenizer is given. Each file goes to a temporary name in the
    same directory first and is renamed into place, so a crash never leaves a half-written
    file. The weights are written before config.json.
    """
    if not isinstance(model, Decoder):
        raise TypeError(f"model must be a ropekit Decoder, got {type(model).__name__}")
    target = Path(directory).expanduser()
    target.mkdir(parents=True, exist_ok=True)

    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")
    with atomic_path(target / hf_format.SINGLE_FILE) as temporary:
        save_file(state, temporary, metadata={"format": "pt"})

    if tokenizer is not None:
        if isinstance(tokenizer, HFTokenizer):
            tokenizer.save(target)
        else:
            write_text_atomic(target / TOKENIZER_FILE, json.dumps(tokenizer.to_dict()))
    config = {"model_type": ROPEKIT_MODEL_TYPE, "format_version": FORMAT_VERSION, "decoder": model.config.to_dict()}
    write_text_atomic(target / "config.json", json.dumps(config, indent=2) + "\n")
    logger.info("saved model to %s", target)
    return target
