"""save_model and load_model on ropekit's own checkpoints, and the path checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ropekit
from ropekit.models import ByteTokenizer, Decoder, DecoderConfig, SentencePieceTokenizer, load_model, load_tokenizer, save_model
from ropekit.models import checkpoint as checkpoint_module
from ropekit.rope import RopeConfig


def build(**overrides) -> Decoder:
    torch.manual_seed(11)
    fields = dict(vocab_size=53, hidden_size=24, num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=32)
    fields.update(overrides)
    model = Decoder(DecoderConfig(**fields)).eval()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight") and module.weight is not None and module.weight.dim() == 1:
                module.weight.uniform_(0.5, 1.5)  # norms away from 1, so a lost norm shows
    return model


def mla_config():
    from ropekit.attention import MLAConfig

    return MLAConfig(hidden_size=24, num_heads=4, q_lora_rank=8, kv_lora_rank=12, qk_nope_head_dim=6,
                     qk_rope_head_dim=4, v_head_dim=6)


VARIANTS = {
    "rope_half": {},
    "rope_interleaved_scaled": dict(
        rope=RopeConfig(head_dim=6, interleaved=True, theta=500.0, scaling={"rope_type": "linear", "factor": 2.0},
                        max_position_embeddings=32)
    ),
    "partial_rotary_tied": dict(rope=RopeConfig(head_dim=6, rotary_dim=4), tie_embeddings=True),
    "alibi_biases": dict(position_encoding="alibi", qkv_bias=True, output_bias=True, mlp_bias=True),
    "learned": dict(position_encoding="learned"),
    "sliding_window": dict(sliding_window=3, sliding_window_layers=(0,)),
    "mla": dict(attention="mla", mla=None),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_round_trip_gives_identical_logits(name: str, tmp_path: Path) -> None:
    overrides = dict(VARIANTS[name])
    if overrides.get("attention") == "mla":
        overrides["mla"] = mla_config()
    model = build(**overrides)
    save_model(model, tmp_path / "checkpoint")
    loaded = load_model(tmp_path / "checkpoint")
    input_ids = torch.randint(0, 53, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids), model(input_ids))
    assert loaded.config == model.config


def test_round_trip_keeps_dtype(tmp_path: Path) -> None:
    model = build().to(torch.bfloat16)
    save_model(model, tmp_path)
    assert load_model(tmp_path).embed_tokens.weight.dtype == torch.bfloat16


def test_tied_head_is_stored_once(tmp_path: Path) -> None:
    from safetensors import safe_open

    save_model(build(tie_embeddings=True), tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
    assert "lm_head.weight" not in names


def test_loaded_tied_model_shares_matrix(tmp_path: Path) -> None:
    save_model(build(tie_embeddings=True), tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight


def test_config_json_marks_ropekit_format(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "ropekit"
    assert config["decoder"]["num_kv_heads"] == 2


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    save_model(build(), tmp_path, tokenizer=ByteTokenizer())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json", "model.safetensors", "ropekit_tokenizer.json"]


def test_failed_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build()
    save_model(first, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def fail(state, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(build(num_layers=1), tmp_path)
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert after == before


def test_byte_tokenizer_round_trip(tmp_path: Path) -> None:
    save_model(build(vocab_size=256), tmp_path, tokenizer=ByteTokenizer())
    tokenizer = load_tokenizer(tmp_path)
    assert isinstance(tokenizer, ByteTokenizer)
    assert tokenizer.decode(tokenizer.encode("héllo\n")) == "héllo\n"


def test_sentencepiece_tokenizer_round_trip(tmp_path: Path) -> None:
    pieces = ["\u2581", "a", "b", "\u2581a", "\u2581ab"]  # ids 259 to 263
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)] + pieces
    scores = [0.0] * 259 + [0.0, 0.0, 0.0, -1.0, -0.5]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    tokenizer = SentencePieceTokenizer(tokens, scores, types, bos_id=1, eos_id=2, unknown_id=0)
    save_model(build(vocab_size=len(tokens)), tmp_path, tokenizer=tokenizer)
    loaded = load_tokenizer(tmp_path)
    # "ab a" -> [▁ a b ▁ a]; merge the leftmost ▁a (-1.0), then ▁ab (-0.5) beats the
    # second ▁a (-1.0), then the second ▁a; "c" is not in the vocabulary, so byte 0x63.
    assert loaded.encode("ab ac") == [1, 263, 262, 3 + 0x63]
    assert loaded.decode(loaded.encode("ab ac")) == "ab ac"


def test_missing_tokenizer_raises(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_missing_weights_raise(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(tmp_path)


def test_unknown_config_field_raises(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["decoder"]["num_experts"] = 8
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_experts"):
        load_model(tmp_path)


def test_unsupported_dtype_name_raises(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    with pytest.raises(ValueError, match="int8"):
        load_model(tmp_path, dtype="int8")


def test_pickle_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="pickled"):
        load_model(path)


def test_rope_scaling_argument_is_applied(tmp_path: Path) -> None:
    save_model(build(), tmp_path)
    loaded = load_model(tmp_path, rope_scaling={"rope_type": "linear", "factor": 4.0})
    assert loaded.config.rope.scaling["factor"] == 4.0


def test_public_names_resolve() -> None:
    assert ropekit.load_model is load_model
    assert ropekit.save_model is save_model
    assert ropekit.load_tokenizer is load_tokenizer


def test_missing_gguf_path_not_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(FileNotFoundError, match="checkpoint not found: models/nope.gguf"):
        ropekit.load_model("models/nope.gguf")
