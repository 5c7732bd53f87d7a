"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem, samplers that make them, and the
multi-task sets (MultiDigits, GradNorm's toy, Omniglot with three tasks per image), and the domain shifts of
transfer (the inter-twinning moons, shifted digits)."""
from .episodes import EpisodeSampler
from .files import omniglot_file, omniglot_root
from .multidigits import MultiDigits, digit_split, overlay
from .multitask_toys import PAPER_SIGMAS, TEN_SIGMAS, GradNormToy, MultiTaskDataset, gradnorm_toy, toy_function
from .moons import (SHIFT_KINDS, DomainShift, inter_twinning_moons, random_texture, rotation_matrix, shift_colours,
                    shifted_digits)
from .lake import LakeResult, LakeRuns, evaluate_lake, load_lake_runs, nearest_neighbour
from .omniglot_multitask import OmniglotMultitask, omniglot_multitask
from .omniglot import OmniglotSplit, lake_split, load_omniglot, rotate, small_split, vinyals_split
from .sampler import EpisodeBatchSampler, EpisodeCollate, random_subsets
from .sinusoid import Sinusoid
from .tasks import TaskBatch, validate_batch

__all__ = ["DomainShift", "EpisodeBatchSampler", "EpisodeCollate", "EpisodeSampler", "GradNormToy", "LakeResult",
           "LakeRuns", "SHIFT_KINDS", "inter_twinning_moons", "random_texture", "rotation_matrix", "shift_colours",
           "shifted_digits",
           "MultiDigits", "MultiTaskDataset", "OmniglotMultitask", "OmniglotSplit", "PAPER_SIGMAS", "TEN_SIGMAS",
           "digit_split", "gradnorm_toy", "omniglot_multitask", "overlay", "toy_function",
           "Sinusoid", "TaskBatch", "evaluate_lake", "lake_split", "load_lake_runs", "load_omniglot",
           "nearest_neighbour", "omniglot_file", "omniglot_root", "random_subsets", "rotate", "small_split",
           "validate_batch", "vinyals_split"]
