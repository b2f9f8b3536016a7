"""The study end to end: corpus, training of every run, evaluation, results files.

Layout of the output folder:
    results.json, results.csv, results.md   the results (see ropekit.study.results)
    extrapolation.png, training.png         figures, when ropekit.viz provides them
    curves.json                             training curves of every trained run
    train.log                               progress records of every run
    study.json                              the settings, checked by --resume
    runs/NAME.json                          the record of each finished run
    checkpoints/NAME/checkpoint.pt          the resumable training state of each run
    models/NAME/                            each trained model as written by ropekit.save_model
                                            (byte tokenizer included), for load_model and generate

Every file is written atomically. A study resumed with the same settings skips finished
runs, continues an interrupted one from its last checkpoint and redoes its evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ropekit._device import resolve_device
from ropekit._io import write_json_atomic
from ropekit.models import ByteTokenizer, save_model
from ropekit.study.corpus import Corpus, check_corpus_size, load_corpus
from ropekit.study.distributed import DistributedContext, barrier, setup_distributed, teardown_distributed
from ropekit.study.evaluation import PROTOCOLS, count_windows, evaluate
from ropekit.study.results import build_results, write_results
from ropekit.study.runs import (
    ENCODINGS,
    EXTENSIONS,
    LENGTH_MULTIPLES,
    MODEL_SIZES,
    RunSpec,
    build_model,
    extension_scaling,
    run_specs,
)
from ropekit.study.trainer import Trainer, TrainConfig

logger = logging.getLogger("ropekit.study.runner")

# Settings of --quick: a smaller model, a shorter context and fewer steps and scored bytes.
QUICK = {"model_size": "mini", "train_length": 32, "steps": 600, "batch_size": 32, "eval_tokens": 2048}

# The cosine decay ends at this fraction of the peak learning rate unless min_learning_rate is set.
MIN_LEARNING_RATE_FRACTION = 0.1

# Files and folders that a study writes into its output folder. --overwrite removes these and nothing else.
STUDY_FILES = (
    "results.json", "results.csv", "results.md", "extrapolation.png", "training.png",
    "curves.json", "train.log", "study.json",
)  # fmt: skip
STUDY_FOLDERS = ("runs", "checkpoints", "models")


@dataclass(frozen=True)
class StudyOptions:
    """Settings of a study; all runs share them.

    Attributes:
        corpus: a text file, a directory or a glob; None for the standard library subset.
        encodings: the runs to train, a subset of ropekit.study.runs.ENCODINGS.
        extensions: evaluate the RoPE run with every training-free extension too.
        train_length: training context length L in bytes; evaluation uses 1, 2, 4 and 8 L.
        model_size: a key of ropekit.study.runs.MODEL_SIZES.
        steps: optimizer steps per run (None when time_budget is set).
        time_budget: training seconds per run (None when steps is set).
        batch_size: sequences per step over all processes.
        learning_rate, min_learning_rate, warmup_steps: the AdamW schedule. The cosine
            decay ends at min_learning_rate, which defaults to MIN_LEARNING_RATE_FRACTION
            times learning_rate.
        eval_tokens: maximum bytes scored per run, length and protocol.
        seed: seed of model initialisation and batch order.
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
        out: the output folder.
        checkpoint_every: steps between checkpoints; 0 writes only the checkpoint at the
            end of each run.
        resume: continue the study found in ``out``.
        overwrite: replace the study found in ``out``, deleting its files first.
        progress: progress bars on stderr: True always, False never, None only when
            stderr is a terminal.
    """

    corpus: str | None = None
    encodings: tuple[str, ...] = ENCODINGS
    extensions: bool = True
    train_length: int = 64
    model_size: str = "small"
    steps: int | None = 600
    time_budget: float | None = None
    batch_size: int = 32
    learning_rate: float = 4e-3
    min_learning_rate: float | None = None
    warmup_steps: int = 50
    eval_tokens: int = 8192
    seed: int = 0
    device: str = "auto"
    out: str = "ropekit-study"
    checkpoint_every: int = 100
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        finite_number = isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
        if not finite_number or self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.min_learning_rate is None:
            # The dataclass is frozen; fill in the default derived from the peak rate.
            object.__setattr__(self, "min_learning_rate", MIN_LEARNING_RATE_FRACTION * self.learning_rate)
        if self.resume and self.overwrite:
            raise ValueError(
                "resume and overwrite are both set; choose one: resume continues the study in out, overwrite replaces it"
            )
        if not self.encodings:
            raise ValueError(f"encodings is empty; choose at least one of {', '.join(ENCODINGS)}")
        unknown = [name for name in self.encodings if name not in ENCODINGS]
        if unknown:
            raise ValueError(f"unknown encodings {unknown}; choose from {', '.join(ENCODINGS)}")
        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"model_size must be one of {', '.join(MODEL_SIZES)}, got {self.model_size!r}")
        if self.train_length < 4:
            raise ValueError(f"train_length must be at least 4 bytes, got {self.train_length}")
        if self.eval_tokens < 1:
            raise ValueError(f"eval_tokens must be positive, got {self.eval_tokens}")
        # TrainConfig checks the training fields, so bad values fail before any work starts.
        self.train_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            train_length=self.train_length,
            batch_size=self.batch_size,
            steps=self.steps,
            time_budget=self.time_budget,
            learning_rate=self.learning_rate,
            min_learning_rate=float(self.min_learning_rate),
            warmup_steps=self.warmup_steps,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )

    def settings_record(self) -> dict[str, Any]:
        """The settings that a resumed study must share with the one it continues."""
        record = dataclasses.asdict(self)
        for key in ("resume", "overwrite", "progress", "device", "out"):
            record.pop(key)
        record["encodings"] = list(self.encodings)
        return record


@dataclass
class StudyOutput:
    """Result of run_study: the results document, the output folder and the figures drawn."""

    results: dict[str, Any]
    out: Path
    figures: list[Path]


def run_study(options: StudyOptions) -> StudyOutput:
    """Train and evaluate every run of ``options``; write the results files.

    Under torchrun every process calls this; rank 0 writes the files.
    """
    context, device = setup_distributed(resolve_device(options.device))
    try:
        return _run_study(options, context, device)
    finally:
        teardown_distributed(context)


def _run_study(options: StudyOptions, context: DistributedContext, device: torch.device) -> StudyOutput:
    out = Path(options.out)
    # Every rank checks the folder, so that an error stops all of them, and all ranks check
    # before rank 0 writes study.json there.
    _check_output_folder(options, out)
    barrier(context)
    corpus = load_corpus(options.corpus)
    longest = options.train_length * max(LENGTH_MULTIPLES)
    check_corpus_size(
        corpus, min_train_bytes=16 * (options.train_length + 1), min_validation_bytes=longest + 1
    )
    if context.is_main:
        if options.overwrite:
            _remove_study_files(out)
        out.mkdir(parents=True, exist_ok=True)
        _check_or_record_settings(options, out)
    barrier(context)

    train_log = _open_train_log(out, context)
    try:
        train_log.info(
            "study: corpus %s (%d training, %d validation bytes), %d process(es) on %s",
            corpus.name, corpus.train.numel(), corpus.validation.numel(), context.world_size, device,
        )
        records: list[dict[str, Any]] = []
        curves: dict[str, list[dict[str, float]]] = {}
        for spec in run_specs(list(options.encodings)):
            run_records, curve = _train_and_evaluate(spec, options, corpus, context, device, out, train_log)
            records.extend(run_records)
            curves[spec.name] = curve
            if context.is_main:
                _write_all(options, corpus, device, records, curves, out)
        results = build_results(
            corpus=corpus.summary(), train_length=options.train_length, seed=options.seed,
            device=str(device), runs=records,
        )
        figures = _draw_figures(results, curves, out) if context.is_main else []
        train_log.info("study: finished %d runs; results in %s", len(records), out)
        # Leave the process group together, after rank 0 has written every file.
        barrier(context)
        return StudyOutput(results=results, out=out, figures=figures)
    finally:
        for handler in list(train_log.handlers):
            train_log.removeHandler(handler)
            handler.close()


def _train_and_evaluate(
    spec: RunSpec,
    options: StudyOptions,
    corpus: Corpus,
    context: DistributedContext,
    device: torch.device,
    out: Path,
    train_log: logging.Logger,
) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    """Train one run (or load its finished record) and evaluate it and its extensions."""
    record_path = out / "runs" / f"{spec.name}.json"
    if options.resume and record_path.is_file():
        saved = json.loads(record_path.read_text(encoding="utf-8"))
        train_log.info("%s: finished earlier, record read from %s", spec.name, record_path)
        return saved["records"], saved["curve"]

    checkpoint = out / "checkpoints" / spec.name / "checkpoint.pt"
    if not options.resume and context.is_main:
        # A fresh study must not pick up the state of an earlier one in the same folder.
        checkpoint.unlink(missing_ok=True)
    barrier(context)

    model = build_model(spec, MODEL_SIZES[options.model_size], options.train_length, options.seed).to(device)
    trainer = Trainer(
        model, corpus.train, options.train_config(), device=device, checkpoint_path=checkpoint,
        context=context, name=spec.name, progress=options.progress, log=train_log,
    )
    if options.resume:
        trainer.resume()
    outcome = trainer.run()
    train_log.info(
        "%s: trained %d steps in %.1f s, %.0f tokens/s, final train loss %.4f",
        spec.name, outcome.steps, outcome.train_seconds, outcome.tokens_per_second, outcome.final_train_loss,
    )
    if context.is_main:
        # Written before evaluation, which sets the RoPE extensions on the model.
        model_dir = save_model(model, out / "models" / spec.name, tokenizer=ByteTokenizer())
        train_log.info("%s: model written to %s", spec.name, model_dir)

    base = {
        "name": spec.name,
        "encoding": spec.encoding,
        "attention": spec.attention,
        "extension": None,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "train_seconds": outcome.train_seconds,
        "tokens_per_second": outcome.tokens_per_second,
        "final_train_loss": outcome.final_train_loss,
    }
    evaluations = [(base, None)]
    if spec.name == "rope" and options.extensions:
        evaluations += [({**base, "name": f"rope-{key}", "extension": key}, key) for key in EXTENSIONS]

    records = []
    for record, extension in evaluations:
        record["eval"] = _evaluate_run(model, record["name"], extension, options, corpus, context, device, train_log)
        records.append(record)
    if len(evaluations) > 1:
        model.set_rope_scaling(None)

    if context.is_main:
        write_json_atomic(record_path, {"records": records, "curve": outcome.curve})
    barrier(context)
    return records, outcome.curve


def _evaluate_run(
    model: torch.nn.Module,
    name: str,
    extension: str | None,
    options: StudyOptions,
    corpus: Corpus,
    context: DistributedContext,
    device: torch.device,
    train_log: logging.Logger,
) -> list[dict[str, Any]]:
    """Evaluate at every length and protocol; return the eval entries of results.json."""
    lengths = [options.train_length * multiple for multiple in LENGTH_MULTIPLES]
    plan = [(length, protocol) for length in lengths for protocol in PROTOCOLS]
    validation_bytes = int(corpus.validation.numel())
    total = sum(
        count_windows(validation_bytes, length, protocol, options.eval_tokens, context.rank, context.world_size)
        for length, protocol in plan
    )
    bar = _progress_bar(total, f"eval {name}", options.progress if context.is_main else False)

    entries = []
    model.eval()
    if extension is not None:
        model.set_rope_scaling(extension_scaling(extension, options.train_length))
    for length, protocol in plan:
        result = evaluate(
            model, corpus.validation, length=length, protocol=protocol, max_tokens=options.eval_tokens,
            device=device, rank=context.rank, world_size=context.world_size,
            on_windows=bar.update if bar is not None else None,
        )
        train_log.info("%s: %s at length %d: %.4f nats/byte", name, protocol, length, result.loss)
        entries.append(result.to_dict())
    if bar is not None:
        bar.close()
    return entries


def _check_output_folder(options: StudyOptions, out: Path) -> None:
    """Raise ValueError unless ``out`` suits the request: a new study, --resume or --overwrite."""
    found = [name for name in ("results.json", "study.json") if (out / name).is_file()]
    if options.resume:
        if not (out / "study.json").is_file():
            raise ValueError(
                f"--resume: {str(out)!r} contains no study (study.json not found); "
                "drop --resume to start a new study there, or pass the --out of the study to continue"
            )
        return
    if found and not options.overwrite:
        raise ValueError(
            f"{str(out)!r} already contains a study ({found[0]}); pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )


def _remove_study_files(out: Path) -> None:
    """Delete the files and folders that a study writes in ``out``; leave anything else."""
    for name in STUDY_FILES:
        (out / name).unlink(missing_ok=True)
    for name in STUDY_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    logger.info("removed the previous study in %s", out)


def _check_or_record_settings(options: StudyOptions, out: Path) -> None:
    path = out / "study.json"
    settings = options.settings_record()
    if options.resume:
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in set(previous) | set(settings) if previous.get(key) != settings.get(key))
        if changed:
            details = ", ".join(f"{key}: {previous.get(key)!r} -> {settings.get(key)!r}" for key in changed)
            raise ValueError(
                f"--resume found a study in {str(out)!r} with other settings ({details}); "
                "resume with the same settings, or drop --resume to start afresh"
            )
        return
    write_json_atomic(path, settings)


def _open_train_log(out: Path, context: DistributedContext) -> logging.Logger:
    """Return the logger whose records go to train.log (rank 0 only)."""
    train_log = logging.getLogger("ropekit.study.train_log")
    train_log.setLevel(logging.INFO)
    # train.log keeps its own records; they do not also go to the stderr handler of "ropekit".
    train_log.propagate = False
    if context.is_main:
        handler = logging.FileHandler(out / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        train_log.addHandler(handler)
    else:
        train_log.addHandler(logging.NullHandler())
    return train_log


def _write_all(
    options: StudyOptions,
    corpus: Corpus,
    device: torch.device,
    records: list[dict[str, Any]],
    curves: dict[str, list[dict[str, float]]],
    out: Path,
) -> None:
    results = build_results(
        corpus=corpus.summary(), train_length=options.train_length, seed=options.seed, device=str(device), runs=records
    )
    write_results(results, out)
    write_json_atomic(out / "curves.json", curves)


def _draw_figures(results: dict[str, Any], curves: dict[str, list[dict[str, float]]], out: Path) -> list[Path]:
    """Draw extrapolation.png and training.png with ropekit.viz, when it provides them."""
    try:
        from ropekit import viz
    except ImportError:
        logger.warning("ropekit.viz is not available; extrapolation.png and training.png were not drawn")
        return []
    figures = []
    pairs = {name: [(point["step"], point["loss"]) for point in curve] for name, curve in curves.items() if curve}
    for function_name, file_name, data in (
        ("plot_extrapolation", "extrapolation.png", results),
        ("plot_training_curves", "training.png", pairs),
    ):
        function = getattr(viz, function_name, None)
        if function is None:
            logger.warning("ropekit.viz has no %s; %s was not drawn", function_name, file_name)
            continue
        # ropekit.viz writes figures atomically (temporary file, then rename).
        figures.append(Path(function(data, out / file_name)))
    return figures


def _progress_bar(total: int, description: str, enabled: bool | None) -> Any:
    """Return a tqdm bar on stderr, or None when ``enabled`` is False.

    With ``enabled`` None, tqdm's ``disable=None`` turns the bar off when stderr is not a
    terminal, so logs and pipes get no carriage-return lines.
    """
    if enabled is False:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=description, unit="window", file=sys.stderr, dynamic_ncols=True, leave=False,
        disable=None if enabled is None else False,
    )  # fmt: skip
