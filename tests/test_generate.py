"""Sampling, generation with the KV cache, and the `ropekit generate` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ropekit.cli import main
from ropekit.models import ByteTokenizer, Decoder, DecoderConfig, load_tokenizer, save_model
from ropekit.models.generation import generate, sample_next


def make_model(**overrides) -> Decoder:
    torch.manual_seed(3)
    fields = dict(vocab_size=256, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  max_position_embeddings=16)
    fields.update(overrides)
    return Decoder(DecoderConfig(**fields)).eval()


def greedy_without_cache(model: Decoder, prompt: list[int], count: int) -> list[int]:
    """Recompute the whole sequence for every new token: the reference for cached decoding."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def test_greedy_is_argmax() -> None:
    logits = torch.randn(3, 50)
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(dim=-1))


def test_top_k_one_is_argmax() -> None:
    logits = torch.randn(4, 50)
    generator = torch.Generator().manual_seed(0)
    sampled = sample_next(logits, temperature=5.0, top_k=1, generator=generator)
    assert torch.equal(sampled, logits.argmax(dim=-1))


def test_top_k_draws_only_top_tokens() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9, -1.0]]).expand(4000, 5)
    generator = torch.Generator().manual_seed(0)
    drawn = set(sample_next(logits, temperature=1.0, top_k=2, generator=generator).tolist())
    assert drawn == {1, 3}


def test_top_p_keeps_smallest_nucleus() -> None:
    # Probabilities 0.4, 0.3, 0.2, 0.1: the tokens ranked above token 2 already hold 0.7 >= 0.5,
    # so only tokens 0 and 1 remain, renormalised to 4/7 and 3/7.
    logits = torch.tensor([0.4, 0.3, 0.2, 0.1]).log().expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    drawn = sample_next(logits, temperature=1.0, top_p=0.5, generator=generator)
    counts = torch.bincount(drawn, minlength=4).double() / len(drawn)
    assert counts[2].item() == 0.0
    assert counts[3].item() == 0.0
    assert abs(counts[0].item() - 4 / 7) < 0.02


def test_temperature_sharpens_distribution() -> None:
    logits = torch.tensor([1.0, 0.0]).expand(20000, 2)
    generator = torch.Generator().manual_seed(0)
    cold = sample_next(logits, temperature=0.5, generator=generator).double().mean().item()
    warm = sample_next(logits, temperature=2.0, generator=generator).double().mean().item()
    # P(token 1) = 1 / (1 + e^(1/T)): 0.119 at T = 0.5 and 0.378 at T = 2.
    assert abs(cold - 0.119) < 0.02
    assert abs(warm - 0.378) < 0.02


@pytest.mark.parametrize("name,value", [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -2)])
def test_sampling_rejects_bad_settings(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        sample_next(torch.randn(1, 5), **{name: value})


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_cached_greedy_equals_recomputation(kv_heads: int) -> None:
    model = make_model(num_kv_heads=kv_heads)
    prompt = [5, 17, 99, 3]
    assert list(generate(model, prompt, max_new_tokens=12)) == greedy_without_cache(model, prompt, 12)


def test_alibi_cached_greedy_equals_recomputation() -> None:
    model = make_model(position_encoding="alibi")
    prompt = [1, 2, 3]
    assert list(generate(model, prompt, max_new_tokens=10)) == greedy_without_cache(model, prompt, 10)


def test_seed_makes_sampling_repeatable() -> None:
    model = make_model()
    first = list(generate(model, [7, 8], max_new_tokens=15, temperature=1.5, seed=11))
    again = list(generate(model, [7, 8], max_new_tokens=15, temperature=1.5, seed=11))
    other = list(generate(model, [7, 8], max_new_tokens=15, temperature=1.5, seed=12))
    assert first == again
    assert first != other


def test_generation_stops_at_eos() -> None:
    model = make_model()
    tokens = list(generate(model, [4, 5], max_new_tokens=10))
    eos = tokens[2]
    assert list(generate(model, [4, 5], max_new_tokens=10, eos_id=eos)) == tokens[: tokens.index(eos) + 1]


def test_generate_rejects_empty_prompt() -> None:
    with pytest.raises(ValueError, match="prompt_ids"):
        list(generate(make_model(), [], max_new_tokens=3))


def test_cli_greedy_stdout_is_decoded_text(stories260k: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer = load_tokenizer(stories260k)
    from ropekit.models import load_model

    expected_ids = [tokenizer.bos_id] + list(
        generate(load_model(stories260k), [tokenizer.bos_id], max_new_tokens=25, eos_id=tokenizer.eos_id)
    )
    assert main(["generate", str(stories260k), "--max-new-tokens", "25"]) == 0
    captured = capsys.readouterr()
    assert captured.out == tokenizer.decode(expected_ids) + "\n"
    assert captured.out.startswith("Once upon a time")
    assert "tokens/s" in captured.err
    assert "KV cache" in captured.err


def test_cli_prompt_is_echoed(stories260k: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(stories260k), "--prompt", "Tom had a red ball.", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("Tom had a red ball.")


def test_cli_sampling_is_repeatable_with_seed(stories260k: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["generate", str(stories260k), "--max-new-tokens", "20", "--temperature", "1.0", "--top-p", "0.9",
                 "--top-k", "50", "--seed", "5"]
    main(arguments)
    first = capsys.readouterr().out
    main(arguments)
    assert capsys.readouterr().out == first


@pytest.fixture
def byte_checkpoint(tmp_path: Path) -> Path:
    return save_model(make_model(), tmp_path / "bytes", tokenizer=ByteTokenizer())


def test_cli_warns_when_prompt_exceeds_context(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = "abcdefghijklmnopqrstuvwxyz"  # 26 byte tokens against a context of 16
    assert main(["generate", str(byte_checkpoint), "--prompt", prompt, "--max-new-tokens", "2"]) == 0
    captured = capsys.readouterr()
    assert "warning: the prompt has 26 tokens but the model's context is 16" in captured.err
    assert captured.out.startswith(prompt)


def test_cli_rope_scaling_silences_warning(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scaling = '{"rope_type": "linear", "factor": 2.0}'
    arguments = ["generate", str(byte_checkpoint), "--prompt", "abcdefghijklmnopqrstuvwxyz", "--max-new-tokens", "2",
                 "--rope-scaling", scaling]
    assert main(arguments) == 0
    assert "warning" not in capsys.readouterr().err


def test_cli_rejects_invalid_rope_scaling_json(byte_checkpoint: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["generate", str(byte_checkpoint), "--rope-scaling", "{yarn"])
    assert raised.value.code == 2


def test_cli_hub_id_fails_without_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "Qwen/Qwen2-0.5B"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "looks like a Hugging Face Hub id" in captured.err


def test_cli_mla_model_uses_latent_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ropekit.attention import MLAConfig

    mla = MLAConfig(hidden_size=32, num_heads=4, q_lora_rank=None, kv_lora_rank=8, qk_nope_head_dim=8,
                    qk_rope_head_dim=4, v_head_dim=8)
    model = make_model(attention="mla", mla=mla, num_kv_heads=None)
    directory = save_model(model, tmp_path / "mla", tokenizer=ByteTokenizer())
    assert main(["generate", str(directory), "--prompt", "abc", "--max-new-tokens", "6"]) == 0
    captured = capsys.readouterr()
    expected = list(generate(model, list(b"abc"), max_new_tokens=6))
    assert captured.out == ByteTokenizer().decode(list(b"abc") + expected) + "\n"
    # (kv_lora_rank 8 + rope key 4) float32 values in each of 2 layers.
    assert "(96 bytes per token)" in captured.err


def test_cli_stdout_ends_with_one_newline(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(byte_checkpoint), "--prompt", "abc", "--max-new-tokens", "0"]) == 0
    assert capsys.readouterr().out == "abc\n"


def test_cli_no_double_newline(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(byte_checkpoint), "--prompt", "abc\n", "--max-new-tokens", "0"]) == 0
    assert capsys.readouterr().out == "abc\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_cli_rejects_cuda_without_cuda(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(byte_checkpoint), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_cli_rejects_unknown_device(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", str(byte_checkpoint), "--device", "foo"]) == 2
    assert "invalid device 'foo'" in capsys.readouterr().err


def test_cli_device_error_writes_nothing_to_stdout(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["generate", str(byte_checkpoint), "--device", "foo"])
    assert capsys.readouterr().out == ""


def test_cli_invalid_rope_scaling_is_a_usage_error(byte_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", str(byte_checkpoint), "--rope-scaling", '{"rope_type": "yarn"}'])

    assert code == 2
    assert capsys.readouterr().err.startswith("ropekit generate: error: scaling of rope_type 'yarn' is missing")
