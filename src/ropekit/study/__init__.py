"""The study: train one decoder per positional encoding on real text, evaluate at 1-8x.

``run_study(StudyOptions(...))`` runs it end to end; ``ropekit study`` is its command
line. Under torchrun the same call trains with DistributedDataParallel.
"""

from ropekit.study.corpus import Corpus, CorpusError, load_corpus
from ropekit.study.evaluation import EvalResult, evaluate
from ropekit.study.runner import StudyOptions, StudyOutput, run_study
from ropekit.study.trainer import TrainConfig, Trainer, TrainOutcome

__all__ = [
    "Corpus",
    "CorpusError",
    "EvalResult",
    "StudyOptions",
    "StudyOutput",
    "TrainConfig",
    "TrainOutcome",
    "Trainer",
    "evaluate",
    "load_corpus",
    "run_study",
]
