"""`ropekit bench rope` end to end at a tiny shape, and the bench target registry."""

from __future__ import annotations

import importlib
import json

import pytest

from ropekit.cli import main
from ropekit.commands.bench import TARGETS


def test_bench_rope_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "out" / "rope.json"

    status = main(
        [
            "bench", "rope", "--shapes", "2x3x4x8", "--kv-heads", "2", "--dtypes", "float32,bfloat16",
            "--modes", "forward,forward+backward", "--peers", "copy,ropekit,transformers,flash-attn",
            "--repeats", "2", "--warmup", "1", "--json", str(path),
        ]
    )  # fmt: skip

    assert status == 0
    table = capsys.readouterr().out
    assert "x copy speed" in table
    assert "x transformers eager" in table
    report = json.loads(path.read_text())
    rows = report["rows"]
    assert len(rows) == 2 * 2 * 4  # dtypes x modes x peers
    assert {row["shape"] for row in rows} == {"2x3x4x8"}
    timed = [row for row in rows if row["status"] == "ok"]
    assert len(timed) == 2 * 2 * 3
    for row in timed:
        assert row["ms"] > 0, row
        assert row["gbps"] > 0, row
        assert row["copy_ratio"] > 0, row
        assert row["eager_ratio"] > 0, row
    for row in timed:
        if row["peer"] != "copy":
            # The output of every timed peer was checked against a float64 rotation.
            limit = 1e-5 if row["dtype"] == "float32" else 0.1
            assert row["max_abs_error"] < limit, row


def test_bench_rope_reports_skipped_peers_with_reason(tmp_path, capsys):
    status = main(["bench", "rope", "--shapes", "1x2x2x4", "--dtypes", "float32", "--modes", "forward",
                   "--peers", "liger", "--repeats", "1", "--warmup", "0", "--device", "cpu"])  # fmt: skip

    assert status == 0
    output = capsys.readouterr().out
    assert "skipped: liger" in output
    assert "CUDA" in output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shapes", "2x3x4"], "invalid shape '2x3x4'"),
        (["--shapes", "2x3x4x7"], "HEAD_DIM even"),
        (["--dtypes", "float8"], "unknown dtype 'float8'"),
        (["--modes", "backward"], "unknown mode 'backward'"),
        (["--peers", "numpy"], "unknown peer 'numpy'"),
        (["--repeats", "0"], "expected a positive integer"),
        (["--kv-heads", "0"], "expected a positive integer"),
        (["--kv-heads", "-2"], "argument --kv-heads: expected a positive integer, got '-2'"),
        (["--kv-heads", "2.5"], "argument --kv-heads: expected a positive integer, got '2.5'"),
        (["--repeats", "2.5"], "argument --repeats: expected a positive integer, got '2.5'"),
        (["--warmup", "-1"], "argument --warmup: expected a non-negative integer, got '-1'"),
        (["--warmup", "0.5"], "argument --warmup: expected a non-negative integer, got '0.5'"),
        (["--threads", "0"], "argument --threads: expected a positive integer, got '0'"),
        (["--threads", "two"], "argument --threads: expected a positive integer, got 'two'"),
        (["--shapes", "0x3x4x8"], "sizes must be positive"),
        (["--shapes", ","], "argument --shapes: expected a comma-separated list of at least one item"),
        (["--dtypes", ""], "argument --dtypes: expected a comma-separated list of at least one item"),
        (["--modes", ","], "argument --modes: expected a comma-separated list of at least one item"),
        (["--peers", ""], "argument --peers: expected a comma-separated list of at least one item"),
    ],
)
def test_bench_rope_rejects_bad_options(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "rope", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_targets_follow_the_command_contract():
    for name, (module_name, help_text) in TARGETS.items():
        module = importlib.import_module(module_name)
        assert callable(module.add_arguments), name
        assert callable(module.run), name
        assert help_text, name


def test_bench_type_errors_hide_function_names(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "rope", "--repeats", "2.5"])

    error = capsys.readouterr().err
    assert "positive_int" not in error
    assert "invalid" not in error


@pytest.mark.parametrize(("kv_heads", "expected"), [("3", "--kv-heads 3 does not divide the 4 query heads"),
                                                     ("8", "--kv-heads 8 does not divide the 4 query heads")])
def test_bench_rope_rejects_indivisible_kv_heads(kv_heads, expected, capsys):
    status = main(["bench", "rope", "--shapes", "2x3x4x8", "--kv-heads", kv_heads, "--dtypes", "float32",
                   "--modes", "forward", "--peers", "copy", "--repeats", "1", "--warmup", "0", "--device", "cpu"])  # fmt: skip

    captured = capsys.readouterr()
    assert status == 2
    assert expected in captured.err
    assert "expected one of 1, 2, 4" in captured.err
    assert captured.out == ""


def test_bench_rope_kv_heads_checked_per_shape(capsys):
    # 2 divides the 4 heads of the first shape but not the 3 heads of the second.
    status = main(["bench", "rope", "--shapes", "1x2x4x8,1x2x3x8", "--kv-heads", "2", "--dtypes", "float32",
                   "--modes", "forward", "--peers", "copy", "--repeats", "1", "--warmup", "0", "--device", "cpu"])  # fmt: skip

    assert status == 2
    assert "shape '1x2x3x8'" in capsys.readouterr().err


def test_bench_rope_rejects_unknown_device(capsys):
    status = main(["bench", "rope", "--shapes", "1x2x2x4", "--dtypes", "float32", "--modes", "forward",
                   "--peers", "copy", "--device", "abacus"])  # fmt: skip

    assert status == 2
    assert "invalid device 'abacus'" in capsys.readouterr().err


def test_bench_help_lists_targets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])

    output = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert f"time ropekit against its peers (targets: {', '.join(TARGETS)})" in output
    assert "bench rope, ..." not in output


def test_bench_rope_rejects_unusable_backend(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("ropekit.kernels.triton_backend.available_for", lambda device: False)
    status = main(["bench", "rope", "--shapes", "1x2x2x4", "--dtypes", "float32", "--modes", "forward",
                   "--repeats", "1", "--warmup", "0", "--device", "cpu", "--backend", "triton"])  # fmt: skip

    assert status == 2
    assert "--backend triton cannot time float32 on cpu" in capsys.readouterr().err


def test_bench_rope_fails_when_a_peer_crashes(monkeypatch, capsys):
    def crash(case):
        raise RuntimeError("peer crashed on purpose")

    monkeypatch.setattr("ropekit.bench.rope.prepare_transformers", crash)
    status = main(["bench", "rope", "--shapes", "1x2x2x4", "--dtypes", "float32", "--modes", "forward",
                   "--repeats", "1", "--warmup", "0", "--device", "cpu", "--peers", "copy,transformers"])  # fmt: skip

    captured = capsys.readouterr()
    assert status == 1
    assert "failed: transformers" in captured.out
    assert "1 row(s) failed" in captured.err


def test_bench_rope_backend_unchecked_without_ropekit(capsys):
    status = main(["bench", "rope", "--shapes", "1x2x2x4", "--dtypes", "float16", "--modes", "forward",
                   "--repeats", "1", "--warmup", "0", "--device", "cpu", "--backend", "cpu", "--peers", "copy"])  # fmt: skip

    assert status == 0
    assert "copy" in capsys.readouterr().out
