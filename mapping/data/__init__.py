"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem."""
from .episodes import EpisodeSampler
from .lake import LakeResult, LakeRuns, evaluate_lake, load_lake_runs
from .omniglot import OmniglotSplit, lake_split, load_omniglot, rotate, small_split, vinyals_split
from .sinusoid import Sinusoid
from .tasks import TaskBatch, validate_batch

__all__ = ["EpisodeSampler", "LakeResult", "LakeRuns", "OmniglotSplit", "Sinusoid", "TaskBatch",
           "evaluate_lake", "lake_split", "load_lake_runs", "load_omniglot", "rotate",
           "small_split", "validate_batch", "vinyals_split"]
