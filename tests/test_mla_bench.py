"""Smoke test of ``ropekit bench mla`` at a tiny size (timings are not checked)."""

from __future__ import annotations

import json

import pytest

from ropekit.cli import main

pytest.importorskip("transformers")


def test_bench_mla_writes_rows(tmp_path, capsys):
    path = tmp_path / "mla.json"

    exit_code = main(["bench", "mla", "--preset", "tiny", "--contexts", "8,13", "--repeats", "1", "--warmup", "0",
                      "--json", str(path)])

    rows = json.loads(path.read_text())["rows"]
    assert exit_code == 0
    assert [(row["implementation"], row["context"]) for row in rows] == [
        ("ropekit-absorbed", 8), ("ropekit-naive", 8), ("transformers", 8),
        ("ropekit-absorbed", 13), ("ropekit-naive", 13), ("transformers", 13),
    ]
    assert all(row["status"] == "ok" for row in rows)
    assert "decode step ms" in capsys.readouterr().out


def test_bench_mla_decode_agrees_with_transformers(tmp_path):
    path = tmp_path / "mla.json"

    main(["bench", "mla", "--preset", "tiny", "--contexts", "21", "--repeats", "1", "--warmup", "0", "--no-prefill",
          "--json", str(path)])

    rows = [row for row in json.loads(path.read_text())["rows"] if row["implementation"] != "transformers"]
    for row in rows:
        assert row["max_abs_error"] < 1e-5, row["implementation"]
        assert row["cache_values_per_token"] == 32 + 8, row["implementation"]
        assert row["prefill_ms"] is None, row["implementation"]


def test_bench_mla_rejects_bad_contexts(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "mla", "--contexts", "0,4"])

    assert "contexts must be positive integers" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max-score-gib", "-1"], "argument --max-score-gib: expected a positive finite number, got '-1'"),
        (["--max-score-gib", "0"], "argument --max-score-gib: expected a positive finite number, got '0'"),
        (["--max-score-gib", "nan"], "argument --max-score-gib: expected a positive finite number, got 'nan'"),
        (["--max-score-gib", "lots"], "argument --max-score-gib: expected a positive number, got 'lots'"),
        (["--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
        (["--batch", "1.5"], "argument --batch: expected a positive integer, got '1.5'"),
        (["--contexts", "8,2.5"], "contexts must be comma-separated integers"),
        (["--contexts", "-8"], "contexts must be positive integers"),
        (["--implementations", ","], "argument --implementations: expected a comma-separated list of at least one item"),
        (["--repeats", "-1"], "argument --repeats: expected a positive integer, got '-1'"),
        (["--warmup", "-1"], "argument --warmup: expected a non-negative integer, got '-1'"),
    ],
)
def test_bench_mla_rejects_bad_options(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "mla", *arguments])

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
