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
