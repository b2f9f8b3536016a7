"""The study: corpus loading, batches, evaluation protocols, training, results files, resume, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ropekit.study.batching import training_batch
from ropekit.study.corpus import (
    CorpusError,
    check_corpus_size,
    load_corpus,
    stdlib_root,
    stdlib_source_files,
)
from ropekit.study.evaluation import evaluate, window_plan
from ropekit.study.results import EVAL_FIELDS, RUN_FIELDS
from ropekit.study.runner import StudyOptions, run_study
from ropekit.study.runs import ENCODINGS, EXTENSIONS, LENGTH_MULTIPLES
from ropekit.study.trainer import TrainConfig, decay_progress, learning_rate_at

WORDS = (
    "the a rotary position encoding length model train token byte query key value head layer "
    "attention window context scale frequency angle sine cosine learned integer binary bias"
).split()


def make_text(num_bytes: int, seed: int) -> str:
    """Return pseudo-English text of about ``num_bytes`` bytes: words, commas and lines."""
    rng = random.Random(seed)
    pieces: list[str] = []
    size = 0
    while size < num_bytes:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".\n"
        pieces.append(line)
        size += len(line)
    return "".join(pieces)


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(40_000, seed=1), encoding="utf-8")
    return path


def tiny_options(corpus: Path, out: Path, **overrides) -> StudyOptions:
    values = dict(
        corpus=str(corpus),
        encodings=("rope",),
        extensions=False,
        train_length=16,
        model_size="tiny",
        steps=12,
        batch_size=4,
        warmup_steps=3,
        eval_tokens=64,
        checkpoint_every=5,
        out=str(out),
        device="cpu",
        progress=False,
    )
    values.update(overrides)
    return StudyOptions(**values)


def subprocess_env() -> dict[str, str]:
    """One intra-op thread in every child, so that float sums run in the same order."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Corpus ------------------------------------------------------------------------------


def test_corpus_single_file_holds_out_the_tail(text_corpus):
    corpus = load_corpus(text_corpus)
    data = text_corpus.read_bytes()
    assert bytes(corpus.train.tolist()) + bytes(corpus.validation.tolist()) == data
    assert corpus.validation.numel() == len(data) - int(len(data) * 0.9)


def test_corpus_directory_holds_out_whole_files(tmp_path):
    texts = {f"part{index}.txt": make_text(3000, seed=index) for index in range(10)}
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    corpus = load_corpus(tmp_path)
    validation = bytes(corpus.validation.tolist())
    train = bytes(corpus.train.tolist())
    held_out = [text for text in texts.values() if text.encode() in validation]
    assert held_out, "no whole file is in the validation split"
    for text in held_out:
        assert text.encode() not in train
    assert len(train) + len(validation) == sum(len(text) for text in texts.values())
    assert corpus.files == 10


def test_corpus_directory_skips_hidden_files(tmp_path):
    texts = [make_text(3000, seed=0), make_text(3000, seed=1)]
    (tmp_path / "text.txt").write_text(texts[0], encoding="utf-8")
    (tmp_path / "more.txt").write_text(texts[1], encoding="utf-8")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (tmp_path / ".notes.txt").write_text("hidden\n", encoding="utf-8")
    corpus = load_corpus(tmp_path)
    assert corpus.files == 2
    assert corpus.train.numel() + corpus.validation.numel() == sum(len(text) for text in texts)


def test_corpus_glob_pattern(tmp_path):
    for index in range(3):
        (tmp_path / f"notes{index}.md").write_text(make_text(2000, seed=index), encoding="utf-8")
    (tmp_path / "skip.txt").write_text("not matched\n", encoding="utf-8")
    corpus = load_corpus(str(tmp_path / "*.md"))
    assert corpus.files == 3


def test_corpus_missing_path_raises(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "absent.txt")


def test_corpus_empty_file_raises(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(path)


def test_corpus_binary_file_raises(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CorpusError, match="binary"):
        load_corpus(path)


def test_corpus_directory_without_text_raises(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\0\1\2" * 100)
    (tmp_path / "b.txt").write_bytes(b"")
    with pytest.raises(CorpusError, match="1 binary and 1 empty"):
        load_corpus(tmp_path)


def test_corpus_empty_directory_raises(tmp_path):
    with pytest.raises(CorpusError, match="contains no files"):
        load_corpus(tmp_path)


def test_corpus_too_small_raises(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a short text that cannot fill one evaluation window\n", encoding="utf-8")
    corpus = load_corpus(path)
    with pytest.raises(CorpusError, match="too small"):
        check_corpus_size(corpus, min_train_bytes=1000, min_validation_bytes=513)


def test_study_rejects_too_small_corpus(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text(make_text(500, seed=0), encoding="utf-8")
    with pytest.raises(CorpusError, match="too small"):
        run_study(tiny_options(path, tmp_path / "out"))
    assert not (tmp_path / "out" / "results.json").exists()


def test_stdlib_sources_exclude_test_suites():
    files = stdlib_source_files(stdlib_root())
    relative = [path.relative_to(stdlib_root()).parts for path in files]
    assert files
    assert not [parts for parts in relative if "test" in parts[:-1] or "tests" in parts[:-1]]
    assert not [parts for parts in relative if parts[-1].startswith("test_")]
    assert not [parts for parts in relative if "site-packages" in parts]


@pytest.mark.slow
def test_stdlib_corpus_size_and_determinism():
    first = load_corpus()
    second = load_corpus()
    total = first.train.numel() + first.validation.numel()
    assert first.name == "python-stdlib"
    assert 5_000_000 <= total <= 10_000_000
    assert first.validation.numel() >= 100_000
    assert torch.equal(first.train, second.train)
    assert torch.equal(first.validation, second.validation)


# Batches -----------------------------------------------------------------------------


def test_batch_targets_are_inputs_shifted():
    data = torch.arange(200, dtype=torch.uint8)
    inputs, targets = training_batch(data, seed=3, step=7, batch_size=5, length=11)
    assert inputs.shape == (5, 11)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert torch.equal(targets[:, -1], inputs[:, -1] + 1)


def test_batch_depends_only_on_seed_and_step():
    data = torch.randint(0, 256, (5000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    first = training_batch(data, seed=1, step=42, batch_size=6, length=9)[0]
    torch.manual_seed(123)  # the global generator must not matter
    again = training_batch(data, seed=1, step=42, batch_size=6, length=9)[0]
    other_step = training_batch(data, seed=1, step=43, batch_size=6, length=9)[0]
    other_seed = training_batch(data, seed=2, step=42, batch_size=6, length=9)[0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other_step)
    assert not torch.equal(first, other_seed)


@pytest.mark.parametrize("world_size", [2, 3])
def test_batch_rank_slices_make_the_global_batch(world_size):
    data = torch.randint(0, 256, (3000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    whole = training_batch(data, seed=5, step=2, batch_size=6, length=13)[0]
    parts = [
        training_batch(data, seed=5, step=2, batch_size=6, length=13, rank=rank, world_size=world_size)[0]
        for rank in range(world_size)
    ]
    assert torch.equal(torch.cat(parts), whole)


def test_batch_indivisible_by_world_size_raises():
    data = torch.zeros(100, dtype=torch.uint8)
    with pytest.raises(ValueError, match="divisible"):
        training_batch(data, seed=0, step=0, batch_size=5, length=4, rank=0, world_size=2)


# Evaluation --------------------------------------------------------------------------


class PositionGatedOracle(torch.nn.Module):
    """Predict the next byte of a counting sequence exactly, but only from window position ``gate`` on.

    On data where byte t+1 = byte t + 1 (mod 256), the loss of a scored byte is 0 at window
    positions >= gate and ln 256 (a uniform guess) before it.
    """

    def __init__(self, gate: int) -> None:
        super().__init__()
        self.gate = gate

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        batch, length = inputs.shape
        logits = torch.zeros(batch, length, 256)
        confident = torch.nn.functional.one_hot((inputs + 1) % 256, 256).float() * 1e4
        logits[:, self.gate :] = confident[:, self.gate :]
        return logits


COUNTING = (torch.arange(5000) % 256).to(torch.uint8)


@pytest.mark.parametrize("length", [8, 9, 24])
def test_sliding_scores_only_second_half(length):
    result = evaluate(
        PositionGatedOracle(gate=length // 2), COUNTING, length=length, protocol="sliding", max_tokens=10**6
    )
    assert result.loss == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("length", [8, 9, 24])
def test_non_overlapping_windows_score_every_byte(length):
    gate = length // 2
    result = evaluate(PositionGatedOracle(gate), COUNTING, length=length, protocol="non_overlapping", max_tokens=10**6)
    expected = math.log(256) * gate / length
    assert result.loss == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("length", [8, 9, 31])
def test_sliding_scored_regions_tile_the_text(length):
    starts, scored = window_plan(1000, length, "sliding", max_tokens=10**6)
    first_scored = starts + (length - scored)
    assert torch.equal(first_scored[1:] - first_scored[:-1], torch.full_like(first_scored[1:], scored))
    assert length - scored == length // 2


def test_window_plan_caps_scored_bytes_evenly():
    starts, scored = window_plan(100_000, 64, "non_overlapping", max_tokens=640)
    assert starts.numel() == 10
    assert starts[-1] > 80_000  # spread over the whole split, not only its start


def test_evaluation_metrics_follow_the_loss():
    result = evaluate(PositionGatedOracle(gate=100), COUNTING, length=16, protocol="non_overlapping", max_tokens=64)
    assert result.loss == pytest.approx(math.log(256), rel=1e-6)
    assert result.bits_per_byte == pytest.approx(8.0, rel=1e-6)
    assert result.perplexity == pytest.approx(256.0, rel=1e-5)


def test_evaluation_too_short_data_raises():
    with pytest.raises(ValueError, match="at least 65 bytes"):
        window_plan(40, 64, "sliding", max_tokens=100)


def test_evaluation_unknown_protocol_raises():
    with pytest.raises(ValueError, match="protocol"):
        window_plan(400, 64, "strided", max_tokens=100)


# Training ----------------------------------------------------------------------------


def test_learning_rate_warmup_then_cosine():
    config = TrainConfig(train_length=8, batch_size=2, steps=110, learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=10)

    def rate(step: int) -> float:
        return learning_rate_at(step, decay_progress(step, 0.0, config), config)

    assert rate(0) == pytest.approx(1e-3)
    assert rate(9) == pytest.approx(1e-2)
    assert rate(10) == pytest.approx(1e-2)
    assert rate(60) == pytest.approx(1e-3 + 0.5 * 9e-3)
    assert rate(110) == pytest.approx(1e-3)


def test_learning_rate_follows_time_budget():
    config = TrainConfig(train_length=8, batch_size=2, time_budget=100.0, learning_rate=1e-2, min_learning_rate=1e-3, warmup_steps=10)
    assert decay_progress(500, 25.0, config) == pytest.approx(0.25)
    assert learning_rate_at(500, 0.5, config) == pytest.approx(1e-3 + 0.5 * 9e-3)
    assert learning_rate_at(5, 0.5, config) == pytest.approx(6e-3)


def test_train_config_needs_steps_or_budget():
    with pytest.raises(ValueError, match="exactly one of steps and time_budget"):
        TrainConfig(train_length=8, batch_size=2, steps=10, time_budget=5.0)
    with pytest.raises(ValueError, match="exactly one of steps and time_budget"):
        TrainConfig(train_length=8, batch_size=2)


def test_study_options_reject_unknown_encoding(tmp_path):
    with pytest.raises(ValueError, match="unknown encodings"):
        StudyOptions(encodings=("rope", "xpos"), out=str(tmp_path))


def test_time_budget_run_stops_and_records_its_steps(tmp_path, text_corpus):
    output = run_study(tiny_options(text_corpus, tmp_path / "out", steps=None, time_budget=1.0, warmup_steps=5))
    run = output.results["runs"][0]
    state = torch.load(tmp_path / "out" / "checkpoints" / "rope" / "checkpoint.pt", weights_only=True)
    assert state["finished"]
    assert state["step"] >= 1
    assert state["train_seconds"] >= 1.0
    assert run["train_seconds"] == state["train_seconds"]


# End to end --------------------------------------------------------------------------


def test_quick_study_writes_every_output(tmp_path, text_corpus):
    out = tmp_path / "study"
    options = tiny_options(text_corpus, out, encodings=ENCODINGS, extensions=True, steps=8)
    output = run_study(options)

    for name in ("results.json", "results.csv", "results.md", "train.log", "curves.json", "study.json"):
        assert (out / name).is_file(), name
    for name in ("extrapolation.png", "training.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for encoding in ENCODINGS:
        assert (out / "checkpoints" / encoding / "checkpoint.pt").is_file(), encoding
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(output.results))
    assert set(results) == {"corpus", "train_length", "seed", "device", "runs"}
    assert set(results["corpus"]) == {"name", "train_bytes", "validation_bytes"}
    assert results["corpus"]["name"] == str(text_corpus)
    assert results["corpus"]["train_bytes"] + results["corpus"]["validation_bytes"] == text_corpus.stat().st_size
    assert results["train_length"] == 16
    assert results["seed"] == 0
    assert results["device"] == "cpu"

    names = [run["name"] for run in results["runs"]]
    assert names == [*ENCODINGS[:6], *(f"rope-{key}" for key in EXTENSIONS), *ENCODINGS[6:]]
    lengths = [16 * multiple for multiple in LENGTH_MULTIPLES]
    for run in results["runs"]:
        assert set(run) == {*RUN_FIELDS, "eval"}, run["name"]
        assert run["attention"] == ("mla" if run["name"] == "mla" else "mha")
        assert run["extension"] == (run["name"].split("-")[1] if "-" in run["name"] else None)
        assert isinstance(run["parameters"], int) and run["parameters"] > 0
        assert run["train_seconds"] > 0
        assert run["tokens_per_second"] > 0
        assert math.isfinite(run["final_train_loss"])
        assert [(entry["length"], entry["protocol"]) for entry in run["eval"]] == [
            (length, protocol) for length in lengths for protocol in ("non_overlapping", "sliding")
        ]
        for entry in run["eval"]:
            assert set(entry) == set(EVAL_FIELDS)
            assert entry["bits_per_byte"] == pytest.approx(entry["loss"] / math.log(2))
            assert entry["perplexity"] == pytest.approx(math.exp(entry["loss"]))

    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*RUN_FIELDS, *EVAL_FIELDS]
    assert len(rows) == sum(len(run["eval"]) for run in results["runs"])

    markdown = (out / "results.md").read_text()
    for name in names:
        assert f"| {name} |" in markdown
    assert "rope-yarn" in (out / "train.log").read_text()


def test_extension_runs_differ_from_plain_rope(tmp_path, text_corpus):
    output = run_study(tiny_options(text_corpus, tmp_path / "out", extensions=True, steps=30))
    runs = {run["name"]: run for run in output.results["runs"]}

    def losses(name: str, *, longer: bool) -> list[float]:
        return [entry["loss"] for entry in runs[name]["eval"] if (entry["length"] > 16) == longer]

    for key in ("linear", "ntk", "yarn"):
        assert losses(f"rope-{key}", longer=True) != losses("rope", longer=True), key
        # Static scalings are set for 8x and change the model at the trained length too.
        assert losses(f"rope-{key}", longer=False) != losses("rope", longer=False), key
    assert losses("rope-dynamic", longer=True) != losses("rope", longer=True)
    assert losses("rope-dynamic", longer=False) == losses("rope", longer=False)


def test_seed_makes_a_study_reproducible(tmp_path, text_corpus):
    first = run_study(tiny_options(text_corpus, tmp_path / "one"))
    second = run_study(tiny_options(text_corpus, tmp_path / "two"))
    assert first.results["runs"][0]["eval"] == second.results["runs"][0]["eval"]
    first_state = torch.load(tmp_path / "one" / "checkpoints" / "rope" / "checkpoint.pt", weights_only=True)
    second_state = torch.load(tmp_path / "two" / "checkpoints" / "rope" / "checkpoint.pt", weights_only=True)
    for key, value in first_state["model"].items():
        assert torch.equal(value, second_state["model"][key]), key


def test_resume_with_other_settings_raises(tmp_path, text_corpus):
    run_study(tiny_options(text_corpus, tmp_path / "out"))
    with pytest.raises(ValueError, match="other settings"):
        run_study(tiny_options(text_corpus, tmp_path / "out", steps=20, resume=True))


def test_resume_of_a_finished_study_reuses_its_runs(tmp_path, text_corpus):
    first = run_study(tiny_options(text_corpus, tmp_path / "out"))
    again = run_study(tiny_options(text_corpus, tmp_path / "out", resume=True))
    assert again.results == first.results


def study_command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "study", "--corpus", str(corpus), "--out", str(out), "--encodings", "learned,rope", "--no-extensions",
        "--model-size", "tiny", "--train-length", "16", "--batch-size", "4", "--eval-tokens", "64",
        "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


def final_weights(out: Path, run: str) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / run / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, text_corpus):
    steps = ["--steps", "400", "--checkpoint-every", "10"]
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "ropekit", *study_command(text_corpus, reference, *steps)],
        check=True, env=subprocess_env(), capture_output=True,
    )  # fmt: skip

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ropekit", *study_command(text_corpus, out, *steps)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "checkpoints" / "learned" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the study finished before it could be killed"
    assert not (out / "results.json").exists()

    subprocess.run(
        [sys.executable, "-m", "ropekit", *study_command(text_corpus, out, *steps, "--resume")],
        check=True, env=subprocess_env(), capture_output=True,
    )  # fmt: skip
    for run in ("learned", "rope"):
        expected = final_weights(reference, run)
        resumed = final_weights(out, run)
        for key, value in expected.items():
            assert torch.equal(resumed[key], value), f"{run}: {key}"
    expected_results = json.loads((reference / "results.json").read_text())
    resumed_results = json.loads((out / "results.json").read_text())
    for expected_run, resumed_run in zip(expected_results["runs"], resumed_results["runs"]):
        assert resumed_run["eval"] == expected_run["eval"], expected_run["name"]
        assert resumed_run["final_train_loss"] == expected_run["final_train_loss"], expected_run["name"]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path, text_corpus):
    steps = ["--steps", "15", "--checkpoint-every", "5"]
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, "-m", "ropekit", *study_command(text_corpus, single, *steps)],
        check=True, env=subprocess_env(), capture_output=True,
    )  # fmt: skip

    distributed = tmp_path / "ddp"
    completed = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "ropekit", *study_command(text_corpus, distributed, *steps),
        ],
        env=subprocess_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-6000:]

    for run in ("learned", "rope"):
        expected = final_weights(single, run)
        got = final_weights(distributed, run)
        for key, value in expected.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=f"{run}: {key}")
    single_results = json.loads((single / "results.json").read_text())
    ddp_results = json.loads((distributed / "results.json").read_text())
    for expected_run, got_run in zip(single_results["runs"], ddp_results["runs"]):
        for expected_entry, got_entry in zip(expected_run["eval"], got_run["eval"]):
            assert got_entry["loss"] == pytest.approx(expected_entry["loss"], rel=1e-4), expected_run["name"]


# Command line ------------------------------------------------------------------------


def parse_study_args(*argv: str):
    import argparse

    from ropekit.commands import study

    parser = argparse.ArgumentParser()
    study.add_arguments(parser)
    return study.options_from_args(parser.parse_args(list(argv)))


def test_cli_quick_sets_small_study():
    from ropekit.study.runner import QUICK

    options = parse_study_args("--quick")
    for key, value in QUICK.items():
        assert getattr(options, key) == value, key


def test_cli_explicit_flag_overrides_quick():
    options = parse_study_args("--quick", "--steps", "7", "--encodings", "alibi, rope")
    assert options.steps == 7
    assert options.encodings == ("alibi", "rope")


def test_cli_time_budget_replaces_steps():
    options = parse_study_args("--time-budget", "170")
    assert options.time_budget == 170.0
    assert options.steps is None


def test_cli_rejects_steps_with_time_budget(tmp_path, capsys):
    from ropekit.cli import main

    code = main(["study", "--steps", "5", "--time-budget", "3", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "choose one" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_reports_missing_corpus(tmp_path, capsys):
    from ropekit.cli import main

    code = main(["study", "--corpus", str(tmp_path / "absent"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "not found" in capsys.readouterr().err


# Trained models, learning rate, output folder and progress ------------------------------


def test_study_writes_models_that_load_and_generate(tmp_path, text_corpus):
    from ropekit.models import load_model, load_tokenizer
    from ropekit.models.generation import generate

    out = tmp_path / "out"
    run_study(tiny_options(text_corpus, out, encodings=("learned", "rope", "mla")))
    for name in ("learned", "rope", "mla"):
        model = load_model(out / "models" / name)
        trained = final_weights(out, name)
        loaded = model.state_dict()
        for key, value in trained.items():
            assert torch.equal(loaded[key], value), f"{name}: {key}"
        tokenizer = load_tokenizer(out / "models" / name)
        prompt = tokenizer.encode("the river")
        new_ids = list(generate(model, prompt, max_new_tokens=5))
        assert len(new_ids) == 5, name
        assert all(0 <= token < 256 for token in new_ids), name


def test_cli_generate_runs_on_a_study_model(tmp_path, text_corpus, capsys):
    from ropekit.cli import main

    out = tmp_path / "out"
    assert main(study_command(text_corpus, out, "--steps", "6", "--encodings", "rope")) == 0
    assert str(out / "models") in capsys.readouterr().out
    code = main(["generate", str(out / "models" / "rope"), "--prompt", "the", "--max-new-tokens", "4"])
    assert code == 0
    assert capsys.readouterr().out.startswith("the")


def test_min_learning_rate_defaults_to_a_tenth_of_the_peak(tmp_path):
    options = StudyOptions(learning_rate=1e-4, out=str(tmp_path))
    assert options.min_learning_rate == pytest.approx(1e-5)


def test_cli_accepts_a_low_learning_rate():
    options = parse_study_args("--learning-rate", "1e-4")
    assert options.train_config().min_learning_rate == pytest.approx(1e-5)


def test_cli_min_learning_rate_option():
    options = parse_study_args("--learning-rate", "1e-3", "--min-learning-rate", "2e-4")
    assert options.train_config().min_learning_rate == 2e-4


@pytest.mark.parametrize("value", ["0", "-1e-3", "nan"])
def test_cli_rejects_non_positive_learning_rate(value):
    with pytest.raises(ValueError, match="--learning-rate"):
        parse_study_args(f"--learning-rate={value}")


def test_cli_rejects_min_learning_rate_above_peak():
    with pytest.raises(ValueError, match="--min-learning-rate"):
        parse_study_args("--min-learning-rate", "1e-2")


def test_cli_rejects_negative_checkpoint_every():
    with pytest.raises(ValueError, match="--checkpoint-every"):
        parse_study_args("--checkpoint-every=-5")


def test_cli_help_states_checkpoint_every_default(capsys):
    import argparse

    from ropekit.commands import study

    parser = argparse.ArgumentParser()
    study.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert "(default 100); 0 writes only the checkpoint at the end" in help_text


def test_checkpoint_every_zero_writes_only_the_final_checkpoint(tmp_path, text_corpus):
    out = tmp_path / "out"
    run_study(tiny_options(text_corpus, out, checkpoint_every=0))
    log = (out / "train.log").read_text()
    assert log.count("rope: checkpoint at step") == 1
    assert "rope: checkpoint at step 12 " in log


def test_study_into_a_folder_with_a_study_raises(tmp_path, text_corpus):
    out = tmp_path / "out"
    run_study(tiny_options(text_corpus, out))
    before = (out / "results.json").read_bytes()
    with pytest.raises(ValueError, match="already contains a study .*--resume.*--overwrite"):
        run_study(tiny_options(text_corpus, out, steps=6))
    assert (out / "results.json").read_bytes() == before


def test_overwrite_replaces_the_study(tmp_path, text_corpus):
    out = tmp_path / "out"
    run_study(tiny_options(text_corpus, out, encodings=("learned", "rope")))
    (out / "notes.txt").write_text("kept")
    run_study(tiny_options(text_corpus, out, steps=6, overwrite=True))
    assert json.loads((out / "study.json").read_text())["steps"] == 6
    assert not (out / "runs" / "learned.json").exists()
    assert not (out / "models" / "learned").exists()
    assert (out / "notes.txt").read_text() == "kept"


def test_resume_without_a_study_raises(tmp_path, text_corpus):
    with pytest.raises(ValueError, match="contains no study"):
        run_study(tiny_options(text_corpus, tmp_path / "empty", resume=True))


def test_cli_rejects_resume_with_overwrite(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_study_args("--resume", "--overwrite", "--out", str(tmp_path))
    assert "not allowed with argument --resume" in capsys.readouterr().err


def test_study_options_reject_resume_with_overwrite(tmp_path):
    with pytest.raises(ValueError, match="resume and overwrite"):
        StudyOptions(resume=True, overwrite=True, out=str(tmp_path))


def test_cli_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, text_corpus, capfd):
    from ropekit.cli import main

    command = [arg for arg in study_command(text_corpus, tmp_path / "out", "--steps", "6") if arg != "--no-progress"]
    assert main(command) == 0
    assert "\r" not in capfd.readouterr().err


def test_cli_progress_flag_forces_bars(tmp_path, text_corpus, capfd):
    from ropekit.cli import main

    command = [arg for arg in study_command(text_corpus, tmp_path / "out", "--steps", "6") if arg != "--no-progress"]
    assert main([*command, "--progress"]) == 0
    assert "\r" in capfd.readouterr().err
