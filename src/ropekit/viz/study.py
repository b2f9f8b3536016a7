"""Figures of a study: extrapolation curves and training curves."""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from typing import Any

from ropekit.viz._figure import LINE_STYLES, PALETTE, new_figure, save_figure

BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY_BLUE, BLACK, YELLOW = PALETTE

# Line markers, filled and readable at 4 points. The first eight mark the trained runs,
# the last four the RoPE extensions.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "d")

# Fixed styles of the runs a study trains and evaluates (see ropekit.study.runs). Trained
# runs are solid lines with distinct colours and markers. The training-free RoPE
# extensions are dashed, each with its own colour and a marker no trained run uses, so any
# two runs differ in at least two of colour, line style and marker.
STUDY_RUN_STYLES: dict[str, dict[str, str]] = {
    "none": {"color": BLACK, "linestyle": "-", "marker": "o"},
    "integer": {"color": ORANGE, "linestyle": "-", "marker": "s"},
    "binary": {"color": SKY_BLUE, "linestyle": "-", "marker": "^"},
    "sinusoidal": {"color": GREEN, "linestyle": "-", "marker": "D"},
    "learned": {"color": YELLOW, "linestyle": "-", "marker": "v"},
    "rope": {"color": BLUE, "linestyle": "-", "marker": "P"},
    "alibi": {"color": VERMILLION, "linestyle": "-", "marker": "X"},
    "mla": {"color": PURPLE, "linestyle": "-", "marker": "*"},
    "rope-linear": {"color": ORANGE, "linestyle": "--", "marker": "<"},
    "rope-ntk": {"color": GREEN, "linestyle": "--", "marker": ">"},
    "rope-dynamic": {"color": VERMILLION, "linestyle": "--", "marker": "h"},
    "rope-yarn": {"color": SKY_BLUE, "linestyle": "--", "marker": "d"},
}


def _combination(index: int) -> dict[str, str]:
    """Return combination ``index`` of PALETTE x LINE_STYLES x MARKERS, colour varying fastest."""
    color = PALETTE[index % len(PALETTE)]
    index //= len(PALETTE)
    linestyle = LINE_STYLES[index % len(LINE_STYLES)]
    marker = MARKERS[(index // len(LINE_STYLES)) % len(MARKERS)]
    return {"color": color, "linestyle": linestyle, "marker": marker}


_COMBINATIONS = len(PALETTE) * len(LINE_STYLES) * len(MARKERS)
_RESERVED = {tuple(style.values()) for style in STUDY_RUN_STYLES.values()}


def _free_style(name: str, used: set[tuple[str, str, str]]) -> dict[str, str]:
    """Return the first combination not in ``used``, starting from one fixed by the CRC-32 of ``name``."""
    start = zlib.crc32(name.encode("utf-8"))
    for step in range(_COMBINATIONS):
        style = _combination(start + step)
        if tuple(style.values()) not in used:
            return style
    return _combination(start)  # more names than combinations: styles repeat


def style_for_run(name: str) -> dict[str, str]:
    """Return the colour, line style and marker of the run called ``name``.

    The runs of a study (``STUDY_RUN_STYLES``) have fixed, distinct styles. Any other name
    gets a style derived from its CRC-32, the same in every figure, that no study run uses.
    Two other names can still share a style; ``run_styles`` resolves that within a figure.
    The colours come from the Okabe-Ito palette, readable with colour blindness.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name in STUDY_RUN_STYLES:
        return dict(STUDY_RUN_STYLES[name])
    return _free_style(name, _RESERVED)


def run_styles(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """Return {name: style} with a distinct style for each name, as ``style_for_run`` gives it.

    Study runs keep their fixed style. Other names are taken in sorted order, and one
    whose style is already used in this figure moves to the next free combination, so the
    result depends only on the set of names, never on their order.
    """
    names = list(dict.fromkeys(names))
    styles = {name: dict(STUDY_RUN_STYLES[name]) for name in names if name in STUDY_RUN_STYLES}
    used = set(_RESERVED)
    for name in sorted(name for name in names if name not in STUDY_RUN_STYLES):
        styles[name] = _free_style(name, used)
        used.add(tuple(styles[name].values()))
    return {name: styles[name] for name in names}


def _legend_outside(figure: Figure) -> None:
    """Draw one legend for all axes to the right of them, so it covers no data."""
    entries: dict[str, Any] = {}
    for ax in figure.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            entries.setdefault(label, handle)
    figure.legend(list(entries.values()), list(entries), loc="outside right upper", fontsize="small")

PROTOCOLS = ("non_overlapping", "sliding")
METRICS = {
    "loss": "loss (nats per byte)",
    "bits_per_byte": "bits per byte",
    "perplexity": "perplexity (per byte)",
}


def _require(mapping: object, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where} must be an object, got {type(mapping).__name__}")
    if key not in mapping:
        raise ValueError(f"{where} has no {key!r} key; a study results file needs it")
    return mapping[key]


def _finite_or_nan(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value) if math.isfinite(value) else math.nan


def extrapolation_series(results: Mapping[str, Any], metric: str = "loss") -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Return {protocol: {run name: [(length, metric value), ...] sorted by length}}.

    Raises ValueError naming the first missing or malformed field. Non-finite values
    (a diverged evaluation) become NaN so that the line shows a gap there.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {tuple(METRICS)}, got {metric!r}")
    runs = _require(results, "runs", "results")
    if not isinstance(runs, Sequence) or isinstance(runs, (str, bytes)) or not runs:
        raise ValueError(f"results['runs'] must be a non-empty list of runs, got {runs!r:.80}")

    series: dict[str, dict[str, list[tuple[int, float]]]] = {protocol: {} for protocol in PROTOCOLS}
    for run_index, run in enumerate(runs):
        where = f"results['runs'][{run_index}]"
        name = str(_require(run, "name", where))
        evaluations = _require(run, "eval", where)
        if not isinstance(evaluations, Sequence) or isinstance(evaluations, (str, bytes)):
            raise ValueError(f"{where}['eval'] must be a list, got {evaluations!r:.80}")
        for eval_index, evaluation in enumerate(evaluations):
            eval_where = f"{where}['eval'][{eval_index}]"
            protocol = _require(evaluation, "protocol", eval_where)
            if protocol not in PROTOCOLS:
                raise ValueError(f"{eval_where}['protocol'] must be one of {PROTOCOLS}, got {protocol!r}")
            length = _require(evaluation, "length", eval_where)
            if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
                raise ValueError(f"{eval_where}['length'] must be a positive int, got {length!r}")
            value = _finite_or_nan(_require(evaluation, metric, eval_where), f"{eval_where}[{metric!r}]")
            series[protocol].setdefault(name, []).append((length, value))

    for by_run in series.values():
        for points in by_run.values():
            points.sort()
    return series


def draw_extrapolation(results: Mapping[str, Any], *, metric: str = "loss") -> Figure:
    """Draw a study's metric against evaluation length, one line per run, one panel per protocol.

    ``results`` is the content of a study's results.json: a "runs" list whose items have
    "name" and "eval" (a list of {"length", "protocol", and the metric}). A "train_length"
    entry, when present, is drawn as a dotted vertical line. Protocols without any
    evaluation are left out.
    """
    series = extrapolation_series(results, metric)
    protocols = [protocol for protocol in PROTOCOLS if series[protocol]]
    if not protocols:
        raise ValueError("results contain no evaluations to plot: every run has an empty 'eval' list")
    train_length = results.get("train_length")
    if train_length is not None and (isinstance(train_length, bool) or not isinstance(train_length, int) or train_length <= 0):
        raise ValueError(f"results['train_length'] must be a positive int or absent, got {train_length!r}")

    styles = run_styles(name for protocol in protocols for name in series[protocol])
    figure, axes = new_figure(1, len(protocols), figsize=(6.0 * len(protocols) + 1.8, 4.5))
    for ax, protocol in zip(axes, protocols):
        for name, points in series[protocol].items():
            lengths = [length for length, _ in points]
            values = [value for _, value in points]
            ax.plot(lengths, values, markersize=5, label=name, **styles[name])
        if train_length is not None:
            ax.axvline(train_length, color="0.4", linestyle=":", linewidth=1.0, label=f"train length {train_length}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({length for points in series[protocol].values() for length, _ in points}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if metric == "perplexity":
            ax.set_yscale("log")
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel(METRICS[metric])
        ax.set_title(f"{protocol.replace('_', '-')} windows")
    _legend_outside(figure)
    figure.suptitle("Extrapolation: models trained at one length, evaluated at longer ones")
    return figure


def plot_extrapolation(results: Mapping[str, Any], path: str | os.PathLike[str], *, metric: str = "loss") -> Path:
    """Save the figure of ``draw_extrapolation`` to ``path`` and return the path."""
    return save_figure(draw_extrapolation(results, metric=metric), path)


def draw_training_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]], *, ylabel: str = "training loss (nats per byte)"
) -> Figure:
    """Draw one training curve per run: ``curves`` maps a run name to (step, loss) pairs.

    Each run has the style ``draw_extrapolation`` gives it, with markers at ten evenly
    spaced places along the line.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must be a non-empty mapping of run name to (step, loss) pairs, got {curves!r:.80}")

    styles = run_styles(str(name) for name in curves)
    figure, (ax,) = new_figure(figsize=(8.8, 4.5))
    for name, points in curves.items():
        steps, losses = [], []
        for point_index, point in enumerate(points):
            if not isinstance(point, Sequence) or len(point) != 2:
                raise ValueError(f"curves[{name!r}][{point_index}] must be a (step, loss) pair, got {point!r}")
            steps.append(point[0])
            losses.append(_finite_or_nan(point[1], f"curves[{name!r}][{point_index}] loss"))
        ax.plot(steps, losses, label=str(name), linewidth=1.2, markevery=0.1, markersize=5, **styles[str(name)])
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title("Training curves")
    _legend_outside(figure)
    return figure


def plot_training_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "training loss (nats per byte)",
) -> Path:
    """Save the figure of ``draw_training_curves`` to ``path`` and return the path."""
    return save_figure(draw_training_curves(curves, ylabel=ylabel), path)
