"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem, and samplers that make them."""
from .episodes import EpisodeSampler
from .files import omniglot_file, omniglot_root
from .lake import LakeResult, LakeRuns, evaluate_lake, load_lake_runs, nearest_neighbour
from .omniglot import OmniglotSplit, lake_split, load_omniglot, rotate, small_split, vinyals_split
from .sampler import EpisodeBatchSampler, EpisodeCollate, random_subsets
from .sinusoid import Sinusoid
from .tasks import TaskBatch, validate_batch

__all__ = ["EpisodeBatchSampler", "EpisodeCollate", "EpisodeSampler", "LakeResult", "LakeRuns", "OmniglotSplit",
           "Sinusoid", "TaskBatch", "evaluate_lake", "lake_split", "load_lake_runs", "load_omniglot",
           "nearest_neighbour", "omniglot_file", "omniglot_root", "random_subsets", "rotate", "small_split",
           "validate_batch", "vinyals_split"]
