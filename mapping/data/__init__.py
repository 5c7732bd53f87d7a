"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem, samplers that make them, and the
multi-task sets (MultiDigits, GradNorm's toy, Omniglot with three tasks per image), and the domain shifts of
transfer (the inter-twinning moons, shifted digits)."""
from .batches import shuffled_batches
from .episodes import EpisodeSampler
from .files import omniglot_file, omniglot_root
from .multidigits import MultiDigits, digit_split, overlay
from .multitask_toys import PAPER_SIGMAS, TEN_SIGMAS, GradNormToy, MultiTaskDataset, gradnorm_toy, toy_function
from .moons import (SHIFT_KINDS, TEXTURE_HIGH, DomainShift, inter_twinning_moons, random_texture, rotation_matrix,
                    shift_colours, shifted_digits)
from .glyphs import GLYPHS, draw_glyph, glyph_drawings
from .lake import LakeResult, LakeRuns, evaluate_lake, load_lake_runs, nearest_neighbour, unseen_runs
from .omniglot_multitask import OmniglotMultitask, drawings_and_targets, omniglot_multitask
from .omniglot import OmniglotSplit, lake_split, load_omniglot, rotate, small_split, vinyals_split
from .sampler import EpisodeBatchSampler, EpisodeCollate, random_subsets
from .sequences import accuracy_by_instance, episode_sequences, offset_labels
from .sinusoid import Sinusoid
from .tasks import TaskBatch, validate_batch

__all__ = ["digit_split", "DomainShift", "EpisodeBatchSampler", "EpisodeCollate", "EpisodeSampler", "evaluate_lake",
           "gradnorm_toy", "GradNormToy", "inter_twinning_moons", "lake_split", "LakeResult", "LakeRuns",
           "load_lake_runs", "load_omniglot", "MultiDigits", "MultiTaskDataset", "nearest_neighbour",
           "omniglot_file", "omniglot_multitask", "omniglot_root", "OmniglotMultitask", "OmniglotSplit",
           "overlay", "PAPER_SIGMAS", "random_subsets", "random_texture", "rotate", "rotation_matrix",
           "shift_colours", "SHIFT_KINDS", "shifted_digits", "Sinusoid", "small_split", "TaskBatch",
           "TEN_SIGMAS", "TEXTURE_HIGH", "toy_function", "validate_batch", "vinyals_split",
           "accuracy_by_instance", "episode_sequences", "offset_labels", "unseen_runs", "drawings_and_targets",
           "GLYPHS", "draw_glyph", "glyph_drawings", "shuffled_batches"]
