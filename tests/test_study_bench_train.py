"""``ropekit bench train``: both peers train the same shape and the table compares them."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from ropekit.bench.train import bench_training, build_llama  # noqa: E402
from ropekit.cli import main  # noqa: E402
from ropekit.study.runs import MODEL_SIZES, RunSpec, build_model  # noqa: E402


def test_llama_peer_has_the_same_parameter_count():
    ropekit_model = build_model(RunSpec("rope", "rope", "mha"), MODEL_SIZES["tiny"], 16, seed=0)
    llama = build_llama(ropekit_model.config)
    assert sum(p.numel() for p in llama.parameters()) == sum(p.numel() for p in ropekit_model.parameters())


def test_llama_peer_logits_match():
    # Equal logits from equal weights show that both peers train the same function.
    ropekit_model = build_model(RunSpec("rope", "rope", "mha"), MODEL_SIZES["tiny"], 16, seed=0)
    llama = build_llama(ropekit_model.config)
    state = {f"model.{key}": value for key, value in ropekit_model.state_dict().items() if key != "lm_head.weight"}
    missing, unexpected = llama.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight"}
    inputs = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(llama(input_ids=inputs).logits, ropekit_model(inputs), rtol=1e-4, atol=1e-4)


def test_bench_rows_report_ratio_against_transformers():
    rows = bench_training("tiny", 16, 2, torch.device("cpu"), warmup=1, repeats=2)
    by_peer = {row["peer"]: row for row in rows}
    assert set(by_peer) == {"ropekit", "transformers"}
    assert by_peer["transformers"]["speedup"] == pytest.approx(1.0)
    ratio = by_peer["ropekit"]["tokens_per_second"] / by_peer["transformers"]["tokens_per_second"]
    assert by_peer["ropekit"]["speedup"] == pytest.approx(ratio)
    for row in rows:
        assert row["tokens_per_second"] == pytest.approx(2 * 16 / (row["ms"] * 1e-3))


@pytest.mark.parametrize(
    ("options", "settings"),
    [
        (["--autocast", "bfloat16"], {"compile": False, "autocast": "bfloat16"}),
        (["--compile"], {"compile": True, "autocast": "none"}),
    ],
)
def test_bench_train_records_treatment(tmp_path, options, settings):
    path = tmp_path / "train.json"
    code = main(["bench", "train", "--model-size", "tiny", "--train-length", "8", "--batch-size", "2",
                 "--repeats", "1", "--warmup", "1", "--device", "cpu", "--json", str(path), *options])  # fmt: skip
    assert code == 0
    data = json.loads(path.read_text())
    assert {key: data["settings"][key] for key in settings} == settings


def test_autocast_step_runs_matmuls_in_bfloat16():
    # The bfloat16 treatment must reach the model: its linear layers see bfloat16 inputs.
    from ropekit.bench.train import make_training_step

    step, _ = make_training_step("ropekit", "tiny", 8, 2, torch.device("cpu"), autocast="bfloat16")
    dtypes = []

    def record(module, inputs, output):
        dtypes.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: record(module, inputs, output) if isinstance(module, torch.nn.Linear) else None
    )
    try:
        step()
    finally:
        handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}


def test_bench_train_command_writes_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    code = main(["bench", "train", "--model-size", "tiny", "--train-length", "16", "--batch-size", "2",
                 "--repeats", "1", "--warmup", "0", "--device", "cpu", "--json", str(path)])  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out
    assert "transformers" in output
    data = json.loads(path.read_text())
    assert data["benchmark"] == "train"
    assert [row["peer"] for row in data["rows"]] == ["ropekit", "transformers"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--train-length", "0"], "argument --train-length: expected a positive integer, got '0'"),
        (["--train-length", "-16"], "argument --train-length: expected a positive integer, got '-16'"),
        (["--train-length", "16.5"], "argument --train-length: expected a positive integer, got '16.5'"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got '0'"),
        (["--batch-size", "2.5"], "argument --batch-size: expected a positive integer, got '2.5'"),
        (["--threads", "-1"], "argument --threads: expected a positive integer, got '-1'"),
    ],
)
def test_bench_train_rejects_bad_options(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", *arguments])

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
