"""``ropekit demo`` end to end, and ``ropekit plot`` on a results file."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from ropekit.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTION_TITLES = [
    "1. Why position matters",
    "2. Range and magnitude against token embeddings",
    "3. Binary encoding: low bits flip fastest",
    "4. RoPE rotates instead of adding",
    "5. The relative-position property of RoPE",
    "6. Multi-Head Latent Attention: the latent KV cache",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[int, str, str, Path]:
    out_dir = tmp_path_factory.mktemp("demo") / "figures"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_code = main(["demo", "--out", str(out_dir)])
    return exit_code, stdout.getvalue(), stderr.getvalue(), out_dir


def section(output: str, number: int) -> str:
    start = output.index(SECTION_TITLES[number - 1])
    end = output.index(SECTION_TITLES[number]) if number < len(SECTION_TITLES) else output.index("Figures written")
    return output[start:end]


def number_after(text: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s*([-+0-9.,e]+)", text)
    assert match, f"{label!r} not found in:\n{text}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.slow
def test_demo_exits_zero(demo_run):
    assert demo_run[0] == 0


@pytest.mark.slow
def test_demo_prints_six_sections_in_order(demo_run):
    output = demo_run[1]
    positions = [output.index(title) for title in SECTION_TITLES]
    assert positions == sorted(positions)


@pytest.mark.slow
def test_demo_dog_tokens_distinct_only_with_position(demo_run):
    text = section(demo_run[1], 1)
    assert number_after(text, "no positional encoding") == 0.0
    for name in ("integer (raw)", "binary", "sinusoidal", "learned (at init)"):
        assert number_after(text, name) > 0.0, name


@pytest.mark.slow
def test_demo_raw_integers_drown_tokens(demo_run):
    rows = {}
    for line in section(demo_run[1], 2).splitlines():
        fields = line.rsplit(maxsplit=4)
        if len(fields) == 5 and re.fullmatch(r"-?[0-9]+\.[0-9]+", fields[-1]):
            rows[fields[0].strip()] = float(fields[-1])
    assert len(rows) == 5
    assert rows["integer (raw)"] > 100
    assert max(ratio for name, ratio in rows.items() if name != "integer (raw)") <= 1.0


@pytest.mark.slow
def test_demo_bit_flip_counts(demo_run):
    flips = [int(count) for count in re.findall(r"flips:\s*(\d+)", section(demo_run[1], 3))]
    assert flips == [15, 7, 3, 1]


@pytest.mark.slow
def test_demo_rope_keeps_norms(demo_run):
    assert number_after(section(demo_run[1], 4), "Largest relative change of a norm:") <= 1e-6


@pytest.mark.slow
def test_demo_relative_score_difference(demo_run):
    assert number_after(section(demo_run[1], 5), "max relative score difference:") <= 1e-5


@pytest.mark.slow
def test_demo_deepseek_v3_cache_sizes(demo_run):
    text = section(demo_run[1], 6)
    deepseek = text[text.index("DeepSeek-V3") :]
    assert number_after(deepseek, "MLA") == 576
    assert number_after(deepseek, "MHA") == 40960


@pytest.mark.slow
def test_demo_absorbed_matches_naive(demo_run):
    assert number_after(section(demo_run[1], 6), "max relative difference") <= 1e-5


@pytest.mark.slow
def test_demo_lists_written_figures(demo_run):
    _, output, _, out_dir = demo_run
    listed = [Path(line.strip()) for line in output[output.index("Figures written") :].splitlines()[1:] if line.strip()]
    assert sorted(listed) == sorted(out_dir.iterdir())
    assert len(listed) == 12


@pytest.mark.slow
def test_demo_figures_readable(demo_run):
    for path in demo_run[3].iterdir():
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        else:
            assert ElementTree.parse(path).getroot().tag.endswith("svg"), path


@pytest.mark.slow
def test_demo_progress_on_stderr(demo_run):
    assert "writing figures" in demo_run[2]
    assert "writing figures" not in demo_run[1]


# ---------------------------------------------------------------- ropekit plot


def write_results(path: Path) -> Path:
    runs = []
    for index, name in enumerate(["nope", "rope", "alibi"]):
        evaluations = [
            {
                "length": length,
                "protocol": protocol,
                "loss": 1.5 + index * 0.1 + length / 2000,
                "bits_per_byte": (1.5 + index * 0.1 + length / 2000) / math.log(2),
                "perplexity": math.exp(1.5 + index * 0.1 + length / 2000),
            }
            for length in (64, 128, 256, 512)
            for protocol in ("non_overlapping", "sliding")
        ]
        runs.append({"name": name, "encoding": name, "attention": "mha", "extension": None, "eval": evaluations})
    path.write_text(json.dumps({"train_length": 64, "seed": 0, "runs": runs}), encoding="utf-8")
    return path


def test_plot_default_output_beside_results(tmp_path, capsys):
    results = write_results(tmp_path / "results.json")
    assert main(["plot", str(results)]) == 0
    written = tmp_path / "extrapolation.png"
    assert capsys.readouterr().out.strip() == str(written)
    assert written.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("metric", ["bits_per_byte", "perplexity"])
def test_plot_svg_with_metric(tmp_path, capsys, metric):
    results = write_results(tmp_path / "results.json")
    out = tmp_path / "figures" / f"{metric}.svg"
    assert main(["plot", str(results), "--out", str(out), "--metric", metric]) == 0
    assert ElementTree.parse(out).getroot().tag.endswith("svg")


def test_plot_missing_file(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "absent.json")]) == 2
    assert "failed to read" in capsys.readouterr().err


def test_plot_invalid_json(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text("{not json", encoding="utf-8")
    assert main(["plot", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_plot_results_without_runs(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"train_length": 64}), encoding="utf-8")
    assert main(["plot", str(path)]) == 2
    assert "no 'runs' key" in capsys.readouterr().err
    assert not (tmp_path / "extrapolation.png").exists()


def test_plot_bad_suffix(tmp_path, capsys):
    results = write_results(tmp_path / "results.json")
    assert main(["plot", str(results), "--out", str(tmp_path / "figure.jpg")]) == 2
    assert ".png, .svg, .pdf" in capsys.readouterr().err
