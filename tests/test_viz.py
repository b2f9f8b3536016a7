"""Figures: files written atomically and readable, axes labelled, plotted data correct."""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from ropekit import RopeConfig, rope_frequencies, viz
from ropekit.viz import _figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Small sizes keep the drawing fast; the defaults only change the resolution.
SMALL = {
    "sinusoidal_channels": {"dim": 16, "num_positions": 40, "channels": (0, 1, 6, 7)},
    "encoding_heatmaps": {"dim": 16, "num_positions": 32},
    "binary_bits": {"num_bits": 5, "num_positions": 32},
    "rope_rotation": {"head_dim": 8, "pairs": (0, 2), "num_positions": 12},
    "rope_wavelengths": {"head_dim": 32, "original_context": 256, "factor": 4.0},
    "rope_long_term_decay": {"head_dim": 32, "original_context": 256, "factor": 4.0, "num_points": 50},
}
DRAW = {
    "sinusoidal_channels": viz.draw_sinusoidal_channels,
    "encoding_heatmaps": viz.draw_encoding_heatmaps,
    "binary_bits": viz.draw_binary_bits,
    "rope_rotation": viz.draw_rotation,
    "rope_wavelengths": viz.draw_wavelengths,
    "rope_long_term_decay": viz.draw_long_term_decay,
}


def study_results() -> dict:
    lengths = (64, 128, 256, 512)
    runs = []
    for index, name in enumerate(["rope", "alibi", "sinusoidal"]):
        evaluations = []
        for length in lengths:
            for protocol in ("non_overlapping", "sliding"):
                loss = 1.0 + 0.1 * index + length / 1000 + (0.05 if protocol == "sliding" else 0.0)
                evaluations.append(
                    {
                        "length": length,
                        "protocol": protocol,
                        "loss": loss,
                        "bits_per_byte": loss / math.log(2),
                        "perplexity": math.exp(loss),
                    }
                )
        runs.append({"name": name, "encoding": name, "attention": "mha", "extension": None, "eval": evaluations[::-1]})
    return {"train_length": 64, "runs": runs}


def assert_axes_labelled(figure) -> None:
    for ax in figure.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel(), f"axes {ax.get_title()!r} has no x label"
        assert ax.get_ylabel(), f"axes {ax.get_title()!r} has no y label"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def assert_svg(path: Path) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"


# ---------------------------------------------------------------- every figure


@pytest.mark.parametrize("name", list(DRAW))
def test_figure_axes_labelled(name):
    assert_axes_labelled(DRAW[name](**SMALL[name]))


@pytest.mark.parametrize("name", list(DRAW))
def test_figure_has_title(name):
    figure = DRAW[name](**SMALL[name])
    titles = [ax.get_title() for ax in figure.axes] + [figure.get_suptitle()]
    assert any(titles)


@pytest.mark.parametrize("name", ["sinusoidal_channels", "rope_wavelengths"])
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_readable_file(tmp_path, name, suffix):
    plot = viz.TUTORIAL_FIGURES[name]
    path = plot(tmp_path / f"{name}{suffix}", **SMALL[name])
    assert path == tmp_path / f"{name}{suffix}"
    if suffix == ".png":
        assert_png(path)
    else:
        assert_svg(path)


def test_write_tutorial_figures_png_and_svg(tmp_path):
    paths = viz.write_tutorial_figures(tmp_path / "figures")
    expected = {f"{stem}.{suffix}" for stem in viz.TUTORIAL_FIGURES for suffix in ("png", "svg")}
    assert {path.name for path in paths} == expected
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(expected)
    for path in paths:
        if path.suffix == ".png":
            assert_png(path)
        else:
            assert_svg(path)


def test_write_tutorial_figures_rejects_format(tmp_path):
    with pytest.raises(ValueError, match="jpeg"):
        viz.write_tutorial_figures(tmp_path, formats=("jpeg",))


def test_plot_leaves_rcparams_unchanged(tmp_path):
    before = dict(matplotlib.rcParams)
    viz.plot_binary_bits(tmp_path / "bits.png", **SMALL["binary_bits"])
    assert dict(matplotlib.rcParams) == before


def test_figures_do_not_import_pyplot(tmp_path):
    script = (
        "import sys\n"
        "from ropekit import viz\n"
        f"viz.plot_binary_bits({str(tmp_path / 'bits.svg')!r}, num_bits=3, num_positions=8)\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"


def test_palette_is_okabe_ito():
    assert set(viz.PALETTE) == {
        "#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"
    }


# ---------------------------------------------------------------- atomic writes


def test_save_rejects_unknown_suffix(tmp_path):
    figure = viz.draw_binary_bits(**SMALL["binary_bits"])
    with pytest.raises(ValueError, match=r"\.png, \.svg, \.pdf"):
        viz.save_figure(figure, tmp_path / "bits.jpg")


def test_save_leaves_no_temporary_file(tmp_path):
    viz.save_figure(viz.draw_binary_bits(**SMALL["binary_bits"]), tmp_path / "bits.png")
    assert [p.name for p in tmp_path.iterdir()] == ["bits.png"]


def test_failed_save_keeps_old_file(tmp_path):
    path = tmp_path / "bits.png"
    path.write_bytes(b"old")
    figure = viz.draw_binary_bits(**SMALL["binary_bits"])

    def fail_half_way(handle, **_kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    figure.savefig = fail_half_way
    with pytest.raises(OSError, match="disk full"):
        viz.save_figure(figure, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["bits.png"]


def test_save_creates_missing_folder(tmp_path):
    path = viz.save_figure(viz.draw_binary_bits(**SMALL["binary_bits"]), tmp_path / "a" / "b" / "bits.svg")
    assert_svg(path)


def test_series_style_distinct_past_palette():
    styles = {tuple(_figure.series_style(i).values()) for i in range(2 * len(viz.PALETTE))}
    assert len(styles) == 2 * len(viz.PALETTE)


# ---------------------------------------------------------------- plotted data


def test_sinusoidal_channels_data():
    figure = viz.draw_sinusoidal_channels(dim=16, num_positions=40, channels=(0, 7))
    lines = figure.axes[0].get_lines()
    positions = np.arange(40)
    np.testing.assert_allclose(lines[0].get_ydata(), np.sin(positions), rtol=0, atol=1e-15)
    np.testing.assert_allclose(lines[1].get_ydata(), np.cos(positions * 10000.0 ** (-6 / 16)), rtol=0, atol=1e-15)


def test_sinusoidal_channels_rejects_channel():
    with pytest.raises(ValueError, match="channel 16"):
        viz.draw_sinusoidal_channels(dim=16, channels=(16,))


def test_binary_bits_image():
    figure = viz.draw_binary_bits(num_bits=4, num_positions=16)
    image = np.asarray(figure.axes[0].get_images()[0].get_array())  # [bit, position]
    expected = np.array([[(p >> bit) & 1 for p in range(16)] for bit in range(4)], dtype=float)
    np.testing.assert_array_equal(image, expected)


def test_binary_bits_rejects_too_many_positions():
    with pytest.raises(ValueError, match="num_positions=33"):
        viz.draw_binary_bits(num_bits=5, num_positions=33)


def test_heatmaps_one_panel_per_encoding():
    figure = viz.draw_encoding_heatmaps(dim=16, num_positions=32)
    titles = [ax.get_title() for ax in figure.axes if ax.get_images()]
    assert len(titles) == 5
    assert [t.split()[0].rstrip(",") for t in titles] == ["integer", "binary", "sinusoidal", "learned", "ALiBi"]


def test_heatmaps_keep_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    viz.draw_encoding_heatmaps(dim=8, num_positions=16)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("pair", [0, 1, 3])
def test_rotation_points_on_circle_at_angle(pair):
    head_dim, theta = 8, 10000.0
    figure = viz.draw_rotation(head_dim=head_dim, theta=theta, pairs=(pair,), num_positions=12)
    offsets = figure.axes[0].collections[0].get_offsets()
    expected_angles = np.arange(12) * theta ** (-2 * pair / head_dim)
    np.testing.assert_allclose(offsets[:, 0], np.cos(expected_angles), rtol=0, atol=1e-12)
    np.testing.assert_allclose(offsets[:, 1], np.sin(expected_angles), rtol=0, atol=1e-12)


def test_rotation_rejects_pair():
    with pytest.raises(ValueError, match="pair 4"):
        viz.draw_rotation(head_dim=8, pairs=(4,))


def test_figure_scalings_cover_every_type():
    rope_types = {None if spec is None else spec["rope_type"] for spec in viz.figure_scalings().values()}
    assert rope_types == {None, "linear", "ntk", "dynamic", "yarn", "llama3", "longrope"}


def test_wavelengths_default_and_linear():
    head_dim, theta, factor = 32, 10000.0, 4.0
    figure = viz.draw_wavelengths(
        scalings={"default": None, "linear": {"rope_type": "linear", "factor": factor}},
        head_dim=head_dim,
        theta=theta,
        original_context=256,
        factor=factor,
    )
    default_line, linear_line = figure.axes[0].get_lines()[:2]
    expected = 2 * np.pi * theta ** (np.arange(0, head_dim, 2) / head_dim)
    np.testing.assert_allclose(default_line.get_ydata(), expected, rtol=1e-12)
    np.testing.assert_allclose(linear_line.get_ydata(), factor * expected, rtol=1e-12)


def test_wavelengths_one_line_per_scaling():
    figure = viz.draw_wavelengths(**SMALL["rope_wavelengths"])
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels[:7] == list(viz.figure_scalings())


def test_wavelengths_no_extended_line_without_extension():
    figure = viz.draw_wavelengths(scalings={"default": None}, head_dim=16, original_context=128, factor=1.0)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == ["default", "trained context 128"]


def test_wavelengths_ntk_keeps_fastest_pair():
    figure = viz.draw_wavelengths(**SMALL["rope_wavelengths"])
    lines = {line.get_label(): line.get_ydata() for line in figure.axes[0].get_lines()}
    assert lines["NTK-aware"][0] == pytest.approx(lines["default"][0], rel=1e-12)
    assert lines["NTK-aware"][-1] == pytest.approx(4.0 * lines["default"][-1], rel=1e-9)


def test_upper_bound_at_distance_zero():
    # Every partial sum S_i has i terms equal to 1, so the mean of |S_i| over i = 1..n is (n + 1) / 2.
    bound = viz.relative_upper_bound(torch.rand(10, dtype=torch.float64), torch.tensor([0]))
    assert bound.item() == pytest.approx(5.5, rel=1e-15)


def test_upper_bound_matches_direct_sum():
    inv_freq = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    distances = torch.tensor([1, 7, 100, 4096])
    bound = viz.relative_upper_bound(inv_freq, distances)
    for row, distance in enumerate(distances.tolist()):
        partial_sums = [
            abs(sum(complex(math.cos(distance * f), math.sin(distance * f)) for f in inv_freq[:i].tolist()))
            for i in range(1, 9)
        ]
        assert bound[row].item() == pytest.approx(sum(partial_sums) / 8, rel=1e-12)


def test_long_term_decay_default_curve():
    figure = viz.draw_long_term_decay(
        scalings={"default": None}, head_dim=16, theta=10000.0, original_context=64, factor=2.0, num_points=20
    )
    line = figure.axes[0].get_lines()[0]
    inv_freq = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    expected = viz.relative_upper_bound(inv_freq, torch.tensor(line.get_xdata()))
    np.testing.assert_allclose(line.get_ydata(), expected.numpy(), rtol=1e-12)
    assert line.get_xdata()[0] == 1.0
    assert line.get_xdata()[-1] == 128.0


def test_long_term_decay_scales_by_attention_factor_squared():
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    figure = viz.draw_long_term_decay(
        scalings={"YaRN": yarn}, head_dim=32, theta=10000.0, original_context=256, factor=4.0, num_points=30
    )
    line = figure.axes[0].get_lines()[0]
    config = RopeConfig(head_dim=32, theta=10000.0, scaling=yarn, max_position_embeddings=256)
    inv_freq, _ = rope_frequencies(config, seq_len=1024)
    # YaRN's default attention factor is 0.1 ln(s) + 1 (Peng et al. 2023), and it multiplies
    # both q and k.
    scale = 0.1 * math.log(4.0) + 1.0
    expected = viz.relative_upper_bound(inv_freq, torch.tensor(line.get_xdata())) * scale**2
    np.testing.assert_allclose(line.get_ydata(), expected.numpy(), rtol=1e-12)


# ---------------------------------------------------------------- study figures


def test_extrapolation_lines_per_protocol():
    figure = viz.draw_extrapolation(study_results())
    panels = [ax for ax in figure.axes if ax.get_lines()]
    assert [ax.get_title() for ax in panels] == ["non-overlapping windows", "sliding windows"]
    for ax in panels:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["rope", "alibi", "sinusoidal", "train length 64"]


def test_extrapolation_points_sorted_by_length():
    figure = viz.draw_extrapolation(study_results())
    alibi = figure.axes[1].get_lines()[1]  # sliding panel
    assert list(alibi.get_xdata()) == [64, 128, 256, 512]
    np.testing.assert_allclose(alibi.get_ydata(), [1.0 + 0.1 + length / 1000 + 0.05 for length in (64, 128, 256, 512)])


@pytest.mark.parametrize("metric", ["loss", "bits_per_byte", "perplexity"])
def test_extrapolation_metric_label(metric):
    figure = viz.draw_extrapolation(study_results(), metric=metric)
    assert viz.study.METRICS[metric] == figure.axes[0].get_ylabel()


def test_extrapolation_perplexity_log_scale():
    figure = viz.draw_extrapolation(study_results(), metric="perplexity")
    assert figure.axes[0].get_yscale() == "log"


def test_extrapolation_axes_labelled():
    assert_axes_labelled(viz.draw_extrapolation(study_results()))


def test_extrapolation_diverged_value_is_gap():
    results = study_results()
    results["runs"][0]["eval"][0]["loss"] = float("inf")  # length 512, sliding
    figure = viz.draw_extrapolation(results)
    rope = figure.axes[1].get_lines()[0]
    assert math.isnan(rope.get_ydata()[-1])


def test_extrapolation_single_protocol():
    results = study_results()
    for run in results["runs"]:
        run["eval"] = [e for e in run["eval"] if e["protocol"] == "sliding"]
    figure = viz.draw_extrapolation(results)
    assert [ax.get_title() for ax in figure.axes] == ["sliding windows"]


def test_plot_extrapolation_writes_png(tmp_path):
    assert_png(viz.plot_extrapolation(study_results(), tmp_path / "extrapolation.png"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("runs"), "no 'runs' key"),
        (lambda r: r.__setitem__("runs", []), "non-empty list"),
        (lambda r: r["runs"][1].pop("name"), r"results\['runs'\]\[1\] has no 'name' key"),
        (lambda r: r["runs"][0]["eval"][2].pop("loss"), r"\['eval'\]\[2\] has no 'loss' key"),
        (lambda r: r["runs"][0]["eval"][0].__setitem__("protocol", "strided"), "'strided'"),
        (lambda r: r["runs"][0]["eval"][0].__setitem__("length", 0), r"\['length'\] must be a positive int"),
        (lambda r: r["runs"][0]["eval"][0].__setitem__("loss", "low"), r"\['loss'\] must be a number"),
        (lambda r: r.__setitem__("train_length", -5), r"train_length'\] must be a positive int"),
    ],
)
def test_extrapolation_rejects_malformed_results(mutate, message):
    results = study_results()
    mutate(results)
    with pytest.raises(ValueError, match=message):
        viz.draw_extrapolation(results)


def test_extrapolation_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        viz.draw_extrapolation(study_results(), metric="accuracy")


def test_training_curves_data(tmp_path):
    curves = {"rope": [(0, 5.5), (10, 3.0), (20, 2.5)], "alibi": [(0, 5.4), (20, 2.4)]}
    figure = viz.draw_training_curves(curves)
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["rope", "alibi"]
    assert list(lines[0].get_xdata()) == [0, 10, 20]
    assert list(lines[1].get_ydata()) == [5.4, 2.4]
    assert_axes_labelled(figure)


def test_plot_training_curves_writes_svg(tmp_path):
    assert_svg(viz.plot_training_curves({"rope": [(0, 5.0), (1, 4.0)]}, tmp_path / "training.svg"))


@pytest.mark.parametrize(
    ("curves", "message"),
    [({}, "non-empty mapping"), ({"rope": [(0, 1.0, 2.0)]}, r"curves\['rope'\]\[0\] must be a \(step, loss\) pair")],
)
def test_training_curves_reject_malformed(curves, message):
    with pytest.raises(ValueError, match=message):
        viz.draw_training_curves(curves)


# ---------------------------------------------------------------- run styles


def study_run_names() -> list[str]:
    from ropekit.study.runs import ENCODINGS, EXTENSIONS

    return list(ENCODINGS) + [f"rope-{key}" for key in EXTENSIONS]


def many_runs_results(names: list[str]) -> dict:
    evaluations = [
        {"length": length, "protocol": protocol, "loss": 1.0}
        for length in (64, 128)
        for protocol in ("non_overlapping", "sliding")
    ]
    return {"train_length": 64, "runs": [{"name": name, "eval": evaluations} for name in names]}


def line_style(line) -> tuple:
    return (matplotlib.colors.to_hex(line.get_color()), line.get_linestyle(), line.get_marker())


def test_every_study_run_has_fixed_style():
    assert set(study_run_names()) == set(viz.STUDY_RUN_STYLES)


def test_study_run_styles_pairwise_differ_twice():
    styles = [tuple(viz.style_for_run(name).values()) for name in study_run_names()]
    for first in range(len(styles)):
        for second in range(first + 1, len(styles)):
            differences = sum(a != b for a, b in zip(styles[first], styles[second]))
            assert differences >= 2, (styles[first], styles[second])


def test_run_style_colours_from_palette():
    names = study_run_names() + [f"custom-{index}" for index in range(20)]
    colours = {style["color"] for style in viz.run_styles(names).values()}
    assert colours <= set(viz.PALETTE)


def test_custom_run_style_is_stable():
    assert viz.style_for_run("my-run") == viz.style_for_run("my-run")


def test_custom_run_style_avoids_study_styles():
    reserved = {tuple(style.values()) for style in viz.STUDY_RUN_STYLES.values()}
    assert tuple(viz.style_for_run("my-run").values()) not in reserved


def test_run_styles_distinct_for_many_names():
    names = study_run_names() + [f"custom-{index}" for index in range(60)]
    styles = viz.run_styles(names)
    assert len({tuple(style.values()) for style in styles.values()}) == len(names)


def test_run_styles_ignore_name_order():
    names = [f"custom-{index}" for index in range(30)] + ["rope", "alibi"]
    assert viz.run_styles(names) == viz.run_styles(names[::-1])


def test_extrapolation_twelve_runs_distinct_lines():
    figure = viz.draw_extrapolation(many_runs_results(study_run_names()))
    lines = [line for line in figure.axes[0].get_lines() if not line.get_label().startswith("train length")]
    assert len(lines) == 12
    assert len({line_style(line) for line in lines}) == 12


def test_extrapolation_and_training_share_styles():
    names = ["rope", "alibi", "binary", "mla", "my-run"]
    extrapolation = viz.draw_extrapolation(many_runs_results(names))
    training = viz.draw_training_curves({name: [(0, 5.0), (10, 3.0)] for name in reversed(names)})
    by_name = {line.get_label(): line_style(line) for line in training.axes[0].get_lines()}
    for line in extrapolation.axes[0].get_lines()[: len(names)]:
        assert line_style(line) == by_name[line.get_label()], line.get_label()


def assert_legend_outside_axes(figure) -> None:
    figure.canvas.draw()
    assert len(figure.legends) == 1
    legend_box = figure.legends[0].get_window_extent()
    for ax in figure.axes:
        assert not legend_box.overlaps(ax.get_window_extent()), ax.get_title()


def test_extrapolation_legend_outside_axes():
    assert_legend_outside_axes(viz.draw_extrapolation(many_runs_results(study_run_names())))


def test_training_legend_outside_axes():
    curves = {name: [(0, 5.0), (10, 3.0)] for name in ("none", "rope", "alibi", "mla")}
    assert_legend_outside_axes(viz.draw_training_curves(curves))


def test_extrapolation_legend_lists_runs_once():
    figure = viz.draw_extrapolation(study_results())
    labels = [text.get_text() for text in figure.legends[0].get_texts()]
    assert labels == ["rope", "alibi", "sinusoidal", "train length 64"]
