"""``ropekit study``: compare positional encodings on real text, at 1x to 8x the training length.

Results go to --out (results.json, .csv, .md, figures, checkpoints, models, train.log);
the summary tables go to stdout and progress bars to stderr. Under
``torchrun --nproc-per-node N`` the same command trains with DistributedDataParallel.
"""

from __future__ import annotations

import argparse

# Defaults of the full study, sized so that all eight runs are meant to train and evaluate
# within 15 minutes on a 2-core CPU.
DEFAULT_STEPS = 600
DEFAULT_BATCH_SIZE = 32
DEFAULT_TRAIN_LENGTH = 64
DEFAULT_LEARNING_RATE = 4e-3


# Printed after Ctrl-C: checkpoints are written atomically, so an interrupted study can resume.
INTERRUPT_HINT = "run the same command with --resume to continue from the last checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ropekit.study.runs import ENCODINGS, MODEL_SIZES

    parser.add_argument(
        "--corpus",
        metavar="PATH",
        help="text file, directory of text files, or glob pattern (default: a subset of the Python "
        "standard library sources of this interpreter)",
    )
    parser.add_argument(
        "--encodings",
        metavar="LIST",
        help=f"comma-separated runs to train, from {','.join(ENCODINGS)} (default: all); "
        "'mla' is Multi-Head Latent Attention with decoupled RoPE",
    )
    parser.add_argument(
        "--no-extensions",
        action="store_true",
        help="skip evaluating the RoPE model with the linear, NTK, dynamic NTK and YaRN extensions",
    )
    parser.add_argument("--steps", type=int, help=f"optimizer steps per run (default {DEFAULT_STEPS})")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="train each run for this many seconds instead of a fixed number of steps",
    )
    parser.add_argument(
        "--train-length",
        type=int,
        help=f"training context length in bytes (default {DEFAULT_TRAIN_LENGTH}); evaluation uses 1, 2, 4 and 8 times it",
    )
    parser.add_argument(
        "--model-size", choices=sorted(MODEL_SIZES), help="decoder width and depth shared by all runs (default small)"
    )
    parser.add_argument(
        "--batch-size", type=int, help=f"sequences per step, over all processes (default {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--learning-rate", type=float, help=f"peak AdamW learning rate (default {DEFAULT_LEARNING_RATE:g})"
    )
    parser.add_argument(
        "--min-learning-rate",
        type=float,
        help="learning rate at the end of the cosine decay (default 0.1 x --learning-rate)",
    )
    parser.add_argument(
        "--eval-tokens", type=int, help="maximum bytes scored per run, length and protocol (default 8192)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast study for smoke tests and CI: the mini model at length 32 for 600 steps, "
        "designed to finish within 3 minutes on 2 CPU cores",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    parser.add_argument("--out", default="ropekit-study", metavar="DIR", help="output folder (default ./ropekit-study)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (default 0)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=100,
        metavar="N",
        help="steps between checkpoints (default 100); 0 writes only the checkpoint at the end of each run",
    )
    folder = parser.add_mutually_exclusive_group()
    folder.add_argument("--resume", action="store_true", help="continue the study in --out from its last checkpoints")
    folder.add_argument(
        "--overwrite", action="store_true", help="replace the study in --out, deleting its results, checkpoints and models"
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        help="show progress bars even when stderr is not a terminal (default: only on a terminal)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help="hide the progress bars"
    )


def options_from_args(args: argparse.Namespace) -> object:
    """Build StudyOptions from parsed arguments: --quick values, then explicit flags."""
    from ropekit.study.runner import QUICK, StudyOptions
    from ropekit.study.runs import ENCODINGS

    if args.steps is not None and args.time_budget is not None:
        raise ValueError("--steps and --time-budget both set; choose one (the budget decides the step count)")
    for flag, value in (("--learning-rate", args.learning_rate), ("--min-learning-rate", args.min_learning_rate)):
        if value is not None and not 0 < value < float("inf"):
            raise ValueError(f"{flag} must be a positive number, got {value}")
    peak = args.learning_rate if args.learning_rate is not None else DEFAULT_LEARNING_RATE
    if args.min_learning_rate is not None and args.min_learning_rate > peak:
        raise ValueError(
            f"--min-learning-rate {args.min_learning_rate} is above the peak --learning-rate {peak}; "
            "the cosine decay goes down from the peak to the minimum"
        )
    if args.checkpoint_every < 0:
        raise ValueError(
            f"--checkpoint-every must be 0 (only the final checkpoint) or a positive step count, "
            f"got {args.checkpoint_every}"
        )

    values: dict[str, object] = {
        "steps": DEFAULT_STEPS,
        "batch_size": DEFAULT_BATCH_SIZE,
        "train_length": DEFAULT_TRAIN_LENGTH,
        "learning_rate": DEFAULT_LEARNING_RATE,
    }
    if args.quick:
        values.update(QUICK)
    explicit = {
        "steps": args.steps,
        "train_length": args.train_length,
        "model_size": args.model_size,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "min_learning_rate": args.min_learning_rate,
        "eval_tokens": args.eval_tokens,
    }
    values.update({key: value for key, value in explicit.items() if value is not None})
    if args.time_budget is not None:
        values["time_budget"] = args.time_budget
        values["steps"] = None

    encodings = ENCODINGS
    if args.encodings is not None:
        encodings = tuple(name.strip() for name in args.encodings.split(",") if name.strip())

    return StudyOptions(
        corpus=args.corpus,
        encodings=encodings,
        extensions=not args.no_extensions,
        seed=args.seed,
        device=args.device,
        out=args.out,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=args.progress,
        **values,
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from ropekit.study.corpus import CorpusError
    from ropekit.study.evaluation import PROTOCOLS
    from ropekit.study.results import protocol_table
    from ropekit.study.runner import run_study

    try:
        options = options_from_args(args)
        output = run_study(options)
    except CorpusError as error:
        print(f"ropekit study: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"ropekit study: {error}", file=sys.stderr)
        return 2

    if int(os.environ.get("RANK", "0")) != 0:
        # Under torchrun only rank 0 prints the summary.
        return 0
    for protocol in PROTOCOLS:
        print("\n".join(protocol_table(output.results, protocol)))
        print()
    print(f"results written to {output.out}")
    models = output.out / "models"
    print(f"trained models written to {models}; run one with: ropekit generate {models / 'NAME'} --prompt TEXT")
    return 0
