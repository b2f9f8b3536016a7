"""GGUF llama loading on the real stories260K model, against a minimal numpy reference."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ropekit
from conftest import SHARED_DATA
from ropekit.models.tokenizers import SentencePieceTokenizer

gguf = pytest.importorskip("gguf")

# Greedy continuation of BOS by stories260K.gguf, as computed by reference_forward below
# (numpy, float64). It decodes to "Once upon a time, there was a little girl named Lily.
# She loved to play outside in the park. One day, she saw a big, red ball."
PINNED_GREEDY_IDS = [
    403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
    315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
    410, 408, 419, 292, 411, 322, 265, 282, 295, 433,
    426, 385, 328, 432, 358, 394, 261, 370, 432, 352,
]  # fmt: skip


def read_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    reader = gguf.GGUFReader(str(path))
    weights = {tensor.name: np.array(tensor.data, dtype=np.float64) for tensor in reader.tensors}
    keys = ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv",
            "attention.layer_norm_rms_epsilon")
    metadata = {key: reader.fields[f"llama.{key}"].contents() for key in keys}
    return weights, metadata


def reference_forward(weights: dict[str, np.ndarray], metadata: dict[str, float], ids: list[int]) -> np.ndarray:
    """Return the logits of the last position: llama with adjacent-pair RoPE, written out plainly.

    Follows llama2.c's run.c: RMSNorm, q/k/v, RoPE on pairs (2i, 2i+1) with angle
    pos * 10000^(-2i/head_dim), causal softmax attention where query head h reads key head
    h // (heads / kv_heads), output projection, RMSNorm, SwiGLU, final RMSNorm, head.
    """
    hidden = int(metadata["embedding_length"])
    heads = int(metadata["attention.head_count"])
    kv_heads = int(metadata["attention.head_count_kv"])
    eps = float(metadata["attention.layer_norm_rms_epsilon"])
    head_dim = hidden // heads
    length = len(ids)

    def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * weight

    def rotate(x: np.ndarray) -> np.ndarray:  # x: [length, heads, head_dim]
        frequencies = 10000.0 ** (-np.arange(0, head_dim, 2) / head_dim)
        angles = np.arange(length)[:, None] * frequencies[None, :]  # [length, head_dim / 2]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    x = weights["token_embd.weight"][ids]  # [length, hidden]
    causal = np.tril(np.ones((length, length), dtype=bool))
    for layer in range(int(metadata["block_count"])):
        w = {name.split(".")[2]: value for name, value in weights.items() if name.startswith(f"blk.{layer}.")}
        h = rms_norm(x, w["attn_norm"])
        q = rotate((h @ w["attn_q"].T).reshape(length, heads, head_dim))
        k = rotate((h @ w["attn_k"].T).reshape(length, kv_heads, head_dim))
        v = (h @ w["attn_v"].T).reshape(length, kv_heads, head_dim)
        attended = np.empty((length, heads, head_dim))
        for head in range(heads):
            kv_head = head // (heads // kv_heads)
            scores = q[:, head] @ k[:, kv_head].T / np.sqrt(head_dim)
            scores = np.where(causal, scores, -np.inf)
            probabilities = np.exp(scores - scores.max(axis=-1, keepdims=True))
            probabilities /= probabilities.sum(axis=-1, keepdims=True)
            attended[:, head] = probabilities @ v[:, kv_head]
        x = x + attended.reshape(length, hidden) @ w["attn_output"].T
        h = rms_norm(x, w["ffn_norm"])
        gate = h @ w["ffn_gate"].T
        x = x + ((gate / (1.0 + np.exp(-gate))) * (h @ w["ffn_up"].T)) @ w["ffn_down"].T
    x = rms_norm(x, weights["output_norm.weight"])
    return x[-1] @ weights["output.weight"].T


@pytest.fixture(scope="module")
def stories_model() -> tuple[Path, ropekit.models.Decoder, SentencePieceTokenizer]:
    """Load the model and tokenizer once for this module (the stories260k fixture is per test)."""
    path = SHARED_DATA / "stories260K.gguf"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path, ropekit.load_model(path), ropekit.load_tokenizer(path)


def greedy(model: ropekit.models.Decoder, prompt: list[int], count: int) -> list[int]:
    """Greedy decoding with the KV cache."""
    cache = model.make_cache(1, len(prompt) + count)
    generated: list[int] = []
    with torch.no_grad():
        logits = model(torch.tensor([prompt]), cache=cache)
        for _ in range(count):
            generated.append(int(logits[0, -1].argmax()))
            logits = model(torch.tensor([[generated[-1]]]), cache=cache)
    return generated


def test_reference_forward_gives_pinned_ids(stories260k: Path) -> None:
    weights, metadata = read_weights(stories260k)
    ids = [1]
    for _ in range(len(PINNED_GREEDY_IDS)):
        ids.append(int(np.argmax(reference_forward(weights, metadata, ids))))
    assert ids[1:] == PINNED_GREEDY_IDS


def test_greedy_from_bos_equals_pinned_ids(stories_model) -> None:
    _, model, tokenizer = stories_model
    assert greedy(model, [tokenizer.bos_id], len(PINNED_GREEDY_IDS)) == PINNED_GREEDY_IDS


def test_greedy_story_is_coherent(stories_model) -> None:
    _, model, tokenizer = stories_model
    text = tokenizer.decode([tokenizer.bos_id] + greedy(model, [tokenizer.bos_id], 60))
    assert text.startswith("Once upon a time, there was a little girl named Lily.")


def test_logits_equal_reference_forward(stories_model) -> None:
    path, model, tokenizer = stories_model
    weights, metadata = read_weights(path)
    ids = tokenizer.encode("Once upon a time, there was a big dog. The dog liked to run.")
    expected = reference_forward(weights, metadata, ids)
    with torch.no_grad():
        actual = model(torch.tensor([ids]))[0, -1].double().numpy()
    assert np.abs(actual - expected).max() <= 1e-4


def test_half_layout_conversion_keeps_logits(stories_model) -> None:
    _, model, tokenizer = stories_model
    config = model.config
    converted = ropekit.models.Decoder(
        dataclasses.replace(config, rope=dataclasses.replace(config.rope, interleaved=False))
    ).eval()
    state = dict(model.state_dict())
    for layer in range(config.num_layers):
        for name, heads in (("q_proj", config.num_heads), ("k_proj", config.num_kv_heads)):
            key = f"layers.{layer}.self_attn.{name}.weight"
            state[key] = ropekit.permute_qk_weights(state[key], heads, config.head_dim, to="half")
    converted.load_state_dict(state)

    # float64, so that the comparison measures the layouts and not float32 summation order
    # (in float32 the two differ by about 1e-5 on logits of size 10).
    ids = torch.tensor([tokenizer.encode("The little bird sang a song to the sun every morning.")])
    with torch.no_grad():
        expected = copy.deepcopy(model).double()(ids)
        assert (converted.double()(ids) - expected).abs().max().item() <= 1e-5


def test_unconverted_half_layout_changes_logits(stories_model) -> None:
    # The control for the test above: the half layout on the stored weights is wrong.
    _, model, tokenizer = stories_model
    config = model.config
    wrong = ropekit.models.Decoder(dataclasses.replace(config, rope=dataclasses.replace(config.rope, interleaved=False)))
    wrong.load_state_dict(model.state_dict())
    ids = torch.tensor([tokenizer.encode("The little bird sang a song.")])
    with torch.no_grad():
        assert (wrong(ids) - model(ids)).abs().max().item() > 1e-2


def reference_encode(tokenizer: SentencePieceTokenizer, text: str) -> list[int]:
    """Encode like llama2.c's encode(): repeatedly merge the best-scoring pair, leftmost first."""
    pieces = {piece: index for index, piece in enumerate(tokenizer.tokens) if tokenizer.token_types[index] == 1}
    symbols: list[str | int] = []
    for character in (" " + text).replace(" ", "\u2581"):
        if character in pieces:
            symbols.append(character)
        else:
            symbols.extend(tokenizer.tokens.index(f"<0x{byte:02X}>") for byte in character.encode("utf-8"))
    while True:
        best = None
        for position in range(len(symbols) - 1):
            left, right = symbols[position], symbols[position + 1]
            if isinstance(left, str) and isinstance(right, str) and left + right in pieces:
                score = tokenizer.scores[pieces[left + right]]
                if best is None or score > best[0]:
                    best = (score, position)
        if best is None:
            break
        position = best[1]
        symbols[position : position + 2] = [symbols[position] + symbols[position + 1]]
    return [1] + [pieces[symbol] if isinstance(symbol, str) else symbol for symbol in symbols]


TEXTS = [
    "Once upon a time, there was a little girl named Lily.",
    "She said, \"Let's play!\"\nThe end.",
    "  two leading spaces and  a double one",
    "naïve café 🙂 émoji",
    "x",
    "tick tock, tick tock, the clock went on and on and on",
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_equals_reference_merges(stories_model, text: str) -> None:
    _, _, tokenizer = stories_model
    assert tokenizer.encode(text) == reference_encode(tokenizer, text)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(stories_model, text: str) -> None:
    _, _, tokenizer = stories_model
    assert tokenizer.decode(tokenizer.encode(text)) == text


# Any text except U+2581, which SentencePiece itself uses for the space and so decodes as one.
ROUND_TRIP_TEXT = st.text(alphabet=st.characters(blacklist_characters="\u2581", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None)
@given(text=ROUND_TRIP_TEXT)
def test_decode_of_encode_is_identity(stories_model, text: str) -> None:
    _, _, tokenizer = stories_model
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="abcdeilnorst ,.\n", max_size=60))
def test_heap_merges_equal_reference_merges(stories_model, text: str) -> None:
    _, _, tokenizer = stories_model
    assert tokenizer.encode(text) == (reference_encode(tokenizer, text) if text else [1])


def test_newline_uses_byte_fallback(stories_model) -> None:
    _, _, tokenizer = stories_model
    newline_id = tokenizer.tokens.index("<0x0A>")
    assert newline_id in tokenizer.encode("a\nb")


def write_vocabulary_gguf(path: Path, add_bos_token: bool | None) -> None:
    """Write a GGUF file with only a six-token SentencePiece vocabulary (BOS 1, EOS 2; " a" encodes as 5)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "\u2581", "a", "\u2581a"])
    writer.add_token_scores([0.0, 0.0, 0.0, -3.0, -2.0, -1.0])
    writer.add_token_types([2, 3, 3, 1, 1, 1])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if add_bos_token is not None:
        writer.add_add_bos_token(add_bos_token)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize(("add_bos_token", "expected"), [(None, [1, 5]), (True, [1, 5]), (False, [5])])
def test_encode_follows_add_bos_token(tmp_path: Path, add_bos_token: bool | None, expected: list[int]) -> None:
    path = tmp_path / "vocabulary.gguf"
    write_vocabulary_gguf(path, add_bos_token)

    tokenizer = ropekit.load_tokenizer(path)

    assert tokenizer.encode("a") == expected


def test_encode_add_bos_overrides_setting(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.gguf"
    write_vocabulary_gguf(path, False)

    tokenizer = ropekit.load_tokenizer(path)

    assert tokenizer.encode("a", add_bos=True) == [1, 5]


def test_add_bos_token_survives_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "vocabulary.gguf"
    write_vocabulary_gguf(path, False)
    tokenizer = ropekit.load_tokenizer(path)

    copy_of = SentencePieceTokenizer.from_dict(tokenizer.to_dict())

    assert copy_of.encode("a") == [5]


def test_decode_omits_special_tokens(stories_model) -> None:
    _, _, tokenizer = stories_model
    ids = tokenizer.encode("The end.")
    assert tokenizer.decode(ids + [tokenizer.eos_id]) == "The end."
    assert tokenizer.decode(ids, skip_special_tokens=False).startswith("<s>")


def test_truncated_gguf_raises(stories260k: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(stories260k.read_bytes()[:200_000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        ropekit.load_model(truncated)


def test_not_a_gguf_file_raises(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="GGUF"):
        ropekit.load_model(fake)


def test_unsupported_quantisation_raises(tmp_path: Path) -> None:
    path = tmp_path / "quantised.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(32)
    writer.add_head_count(4)
    writer.add_feed_forward_length(64)
    blocks = np.zeros((4, 40), dtype=np.uint8)  # one Q8_1 block (40 bytes, 32 values) per row
    writer.add_tensor("token_embd.weight", blocks, raw_dtype=gguf.GGMLQuantizationType.Q8_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="type Q8_1, which gguf .* cannot dequantise"):
        ropekit.load_model(path)


def test_other_architecture_raises(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="unsupported GGUF architecture 'gpt2'"):
        ropekit.load_model(path)


def interleave_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder q/k rows from the half layout to adjacent pairs, as a GGUF converter must.

    In the half layout pair i of a head is rows (i, i + d/2); adjacent pairs put those two
    rows next to each other.
    """
    head_dim = weight.shape[0] // heads
    order = [
        head * head_dim + offset + half
        for head in range(heads)
        for offset in range(head_dim // 2)
        for half in (0, head_dim // 2)
    ]
    return weight[order]


def llama_reference(rope_parameters: dict) -> torch.nn.Module:
    """A small random transformers LlamaForCausalLM (4 query heads, 2 key heads, head_dim 8).

    Weights of standard deviation 0.5 give peaked attention, so a change of RoPE changes the logits.
    """
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=67, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=64, rope_parameters=rope_parameters,
        initializer_range=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def write_llama_gguf(
    path: Path,
    weights: dict[str, np.ndarray],
    theta: float,
    *,
    rope_freqs: np.ndarray | None = None,
    rope_freqs_type: gguf.GGMLQuantizationType | None = None,
    quantisation: gguf.GGMLQuantizationType | None = None,
) -> None:
    """Write transformers Llama weights as a llama GGUF file, as llama.cpp's converter lays them out.

    With ``quantisation``, every 2-D weight is stored in that format; the norms stay F32.
    ``rope_freqs_type`` stores the rope_freqs tensor in another type than F32.
    """
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_block_count(2)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_dimension_count(8)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(1e-5)

    def add(name: str, values: np.ndarray) -> None:
        if quantisation is None or values.ndim == 1:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, quantisation), raw_dtype=quantisation)

    add("token_embd.weight", weights["model.embed_tokens.weight"])
    add("output_norm.weight", weights["model.norm.weight"])
    add("output.weight", weights["lm_head.weight"])
    if rope_freqs is not None and rope_freqs_type is not None:
        stored = gguf.quants.quantize(rope_freqs.astype(np.float32), rope_freqs_type)
        writer.add_tensor("rope_freqs.weight", stored, raw_dtype=rope_freqs_type)
    elif rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    names = {"input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}  # fmt: skip
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        add(f"blk.{layer}.attn_q.weight", interleave_rows(weights[prefix + "self_attn.q_proj.weight"], 4))
        add(f"blk.{layer}.attn_k.weight", interleave_rows(weights[prefix + "self_attn.k_proj.weight"], 2))
        for hf_name, gguf_name in names.items():
            add(f"blk.{layer}.{gguf_name}.weight", weights[prefix + hf_name + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def max_logit_difference(model: torch.nn.Module, reference: torch.nn.Module, length: int = 15) -> float:
    input_ids = torch.randint(0, 67, (1, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(input_ids) - reference(input_ids=input_ids).logits).abs().max().item()


def state_of(reference: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().numpy().copy() for name, tensor in reference.state_dict().items()}


def test_converted_hf_model_equals_transformers(tmp_path: Path) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    path = tmp_path / "converted.gguf"
    write_llama_gguf(path, state_of(reference), 5000.0)

    assert max_logit_difference(ropekit.load_model(path), reference) <= 1e-4


def test_rope_freqs_equal_transformers_llama3(tmp_path: Path) -> None:
    # llama.cpp writes Llama 3.1 scaling as rope_freqs: default inv_freq / llama3 inv_freq per pair.
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    llama3 = {"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}  # fmt: skip
    reference = llama_reference(llama3)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](reference.config, "cpu")
    default = 1.0 / 5000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    rope_freqs = (default / scaled.double()).numpy()
    assert rope_freqs.max() > 1.0  # the scaling changes some pairs, so the test can fail
    path = tmp_path / "llama3.gguf"
    write_llama_gguf(path, state_of(reference), 5000.0, rope_freqs=rope_freqs)

    model = ropekit.load_model(path)

    assert model.config.rope.scaling["rope_type"] == "frequency_factors"
    assert max_logit_difference(model, reference, length=40) <= 1e-4


def test_rope_freqs_change_logits(tmp_path: Path) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    path = tmp_path / "scaled.gguf"
    write_llama_gguf(path, state_of(reference), 5000.0, rope_freqs=np.array([1.0, 1.0, 2.0, 8.0]))

    assert max_logit_difference(ropekit.load_model(path), reference, length=40) > 1e-3


@pytest.mark.parametrize(
    ("rope_freqs", "message"),
    [
        (np.array([1.0, 2.0, 4.0]), "rope_freqs.weight of .* contains 3 factors, but RoPE .* has 4 pairs"),
        (np.array([1.0, 0.0, 4.0, 8.0]), "must contain positive, finite factors, got 0.0 at index 1"),
        (np.array([1.0, 2.0, np.inf, 8.0]), "must contain positive, finite factors, got inf at index 2"),
    ],
)
def test_bad_rope_freqs_name_the_tensor(tmp_path: Path, rope_freqs: np.ndarray, message: str) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    path = tmp_path / "bad.gguf"
    write_llama_gguf(path, state_of(reference), 5000.0, rope_freqs=rope_freqs)

    with pytest.raises(ValueError, match=message):
        ropekit.load_model(path)


@pytest.mark.parametrize("quantisation", ["Q8_0", "Q4_0", "BF16"])
def test_quantised_gguf_equals_dequantised_transformers(tmp_path: Path, quantisation: str) -> None:
    kind = gguf.GGMLQuantizationType[quantisation]
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    weights = state_of(reference)
    path = tmp_path / f"{quantisation}.gguf"
    write_llama_gguf(path, weights, 5000.0, quantisation=kind)
    # The reference gets the same rounded weights, so only layout and mapping errors remain.
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if parameter.dim() == 2:
                rounded = gguf.quants.dequantize(gguf.quants.quantize(weights[name], kind), kind)
                parameter.copy_(torch.from_numpy(rounded))

    assert max_logit_difference(ropekit.load_model(path), reference) <= 1e-4


def test_bf16_weights_equal_torch_rounding(tmp_path: Path) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    weights = state_of(reference)
    path = tmp_path / "bf16.gguf"
    write_llama_gguf(path, weights, 5000.0, quantisation=gguf.GGMLQuantizationType.BF16)

    loaded = ropekit.load_model(path).state_dict()["layers.0.self_attn.v_proj.weight"]

    original = torch.from_numpy(weights["model.layers.0.self_attn.v_proj.weight"])
    assert torch.equal(loaded, original.bfloat16().float())


def test_bf16_rope_freqs_load(tmp_path: Path) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    path = tmp_path / "bf16-freqs.gguf"
    factors = np.array([1.0, 1.5, 4.0, 8.0], dtype=np.float32)  # exact in bfloat16
    write_llama_gguf(path, state_of(reference), 5000.0, rope_freqs=factors, rope_freqs_type=gguf.GGMLQuantizationType.BF16)

    model = ropekit.load_model(path)

    assert model.config.rope.scaling["factors"] == (1.0, 1.5, 4.0, 8.0)


def test_q8_0_weights_close_to_originals(tmp_path: Path) -> None:
    reference = llama_reference({"rope_type": "default", "rope_theta": 5000.0})
    weights = state_of(reference)
    path = tmp_path / "q8.gguf"
    write_llama_gguf(path, weights, 5000.0, quantisation=gguf.GGMLQuantizationType.Q8_0)

    loaded = ropekit.load_model(path).state_dict()["layers.0.mlp.down_proj.weight"]

    original = torch.from_numpy(weights["model.layers.0.mlp.down_proj.weight"])
    # Q8_0 stores each block of 32 values as int8 times max|block| / 127.
    bound = original.abs().max().item() / 127
    assert (loaded - original).abs().max().item() <= bound


def test_mixture_of_experts_gguf_raises(tmp_path: Path) -> None:
    path = tmp_path / "moe.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_expert_count(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match="mixture-of-experts"):
        ropekit.load_model(path)
