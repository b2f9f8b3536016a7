"""results.json, results.csv and results.md of a study.

results.json:
    corpus: {name, train_bytes, validation_bytes}
    train_length, seed, device
    runs: [{name, encoding, attention, extension, parameters, train_seconds,
            tokens_per_second, final_train_loss,
            eval: [{length, protocol, loss, bits_per_byte, perplexity}]}]

Losses are in nats per byte. results.csv has one row per (run, evaluation) with the
run's fields repeated; results.md is the same data as Markdown tables.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from ropekit._io import write_json_atomic, write_text_atomic
from ropekit.study.evaluation import PROTOCOLS

RUN_FIELDS = (
    "name",
    "encoding",
    "attention",
    "extension",
    "parameters",
    "train_seconds",
    "tokens_per_second",
    "final_train_loss",
)
EVAL_FIELDS = ("length", "protocol", "loss", "bits_per_byte", "perplexity")


def build_results(
    *, corpus: dict[str, Any], train_length: int, seed: int, device: str, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """Assemble the results.json document."""
    return {
        "corpus": {key: corpus[key] for key in ("name", "train_bytes", "validation_bytes")},
        "train_length": train_length,
        "seed": seed,
        "device": device,
        "runs": [{**{key: run[key] for key in RUN_FIELDS}, "eval": run["eval"]} for run in runs],
    }


def write_results(results: dict[str, Any], out: Path) -> None:
    """Write results.json, results.csv and results.md into ``out``, each atomically."""
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.csv", results_csv(results))
    write_text_atomic(out / "results.md", results_markdown(results))


def results_csv(results: dict[str, Any]) -> str:
    """Return the results as CSV: one row per run and evaluation."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*RUN_FIELDS, *EVAL_FIELDS])
    for run in results["runs"]:
        run_values = ["" if run[key] is None else run[key] for key in RUN_FIELDS]
        for entry in run["eval"]:
            writer.writerow([*run_values, *(entry[key] for key in EVAL_FIELDS)])
    return buffer.getvalue()


def results_markdown(results: dict[str, Any]) -> str:
    """Return the results as Markdown: a header, the training table, one table per protocol."""
    corpus = results["corpus"]
    train_length = results["train_length"]
    lines = [
        "# ropekit study",
        "",
        f"Corpus {corpus['name']}: {corpus['train_bytes']:,} training and {corpus['validation_bytes']:,} "
        f"validation bytes. Training length {train_length}, seed {results['seed']}, device {results['device']}.",
        "",
        "## Training",
        "",
        "| run | encoding | attention | extension | parameters | train seconds | tokens/s | final train loss |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['name']} | {run['encoding']} | {run['attention']} | {run['extension'] or '-'} | "
            f"{run['parameters']:,} | {run['train_seconds']:.1f} | {run['tokens_per_second']:,.0f} | "
            f"{_number(run['final_train_loss'])} |"
        )
    for protocol in PROTOCOLS:
        lines.extend(["", *protocol_table(results, protocol)])
    lines.append("")
    return "\n".join(lines)


def protocol_table(results: dict[str, Any], protocol: str) -> list[str]:
    """Return Markdown lines of the validation loss of every run at every length."""
    lengths = sorted({entry["length"] for run in results["runs"] for entry in run["eval"]})
    train_length = results["train_length"]
    description = {
        "non_overlapping": "non-overlapping windows, every byte scored",
        "sliding": "sliding windows, only bytes with at least half a window of context scored",
    }[protocol]
    header = " | ".join(f"{length} ({length / train_length:g}x)" for length in lengths)
    lines = [
        f"## Validation loss in nats per byte: {description}",
        "",
        f"| run | {header} |",
        "| --- |" + " ---: |" * len(lengths),
    ]
    for run in results["runs"]:
        by_length = {entry["length"]: entry["loss"] for entry in run["eval"] if entry["protocol"] == protocol}
        cells = " | ".join(_number(by_length.get(length)) for length in lengths)
        lines.append(f"| {run['name']} | {cells} |")
    return lines


def _number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}"
