"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem, samplers that make them, and the
multi-task sets (MultiDigits, GradNorm's toy, Omniglot with three tasks per image), and the domain shifts of
transfer (the inter-twinning moons, shifted digits).

The names below are what a user calls; helpers behind them (file paths and checksums, subset draws, the
textures and rotations of the shifts, Lake's nearest-neighbour baseline) stay in their submodules."""
from .batches import shuffled_batches
from .episodes import EpisodeSampler
from .glyphs import GLYPHS, glyph_drawings
from .lake import LakeResult, LakeRuns, evaluate_lake, load_lake_runs, unseen_runs
from .moons import SHIFT_KINDS, DomainShift, inter_twinning_moons, shifted_digits
from .multidigits import MultiDigits
from .multitask_toys import GradNormToy, MultiTaskDataset, gradnorm_toy
from .omniglot import OmniglotSplit, lake_split, load_omniglot, small_split, vinyals_split
from .omniglot_multitask import OmniglotMultitask, omniglot_multitask
from .sampler import EpisodeBatchSampler, EpisodeCollate
from .sequences import accuracy_by_instance, episode_sequences, offset_labels
from .sinusoid import Sinusoid
from .tasks import TaskBatch

__all__ = [
    # few-shot tasks and their samplers
    "TaskBatch", "EpisodeSampler", "EpisodeBatchSampler", "EpisodeCollate", "Sinusoid",
    # Omniglot, Lake's 20 runs, an invented writing system
    "OmniglotSplit", "load_omniglot", "vinyals_split", "lake_split", "small_split", "LakeRuns", "LakeResult",
    "load_lake_runs", "evaluate_lake", "unseen_runs", "GLYPHS", "glyph_drawings",
    # episodes as sequences (memory-augmented networks)
    "episode_sequences", "offset_labels", "accuracy_by_instance",
    # multi-task data
    "MultiDigits", "MultiTaskDataset", "GradNormToy", "gradnorm_toy", "OmniglotMultitask", "omniglot_multitask",
    "shuffled_batches",
    # domain shifts
    "DomainShift", "inter_twinning_moons", "shifted_digits", "SHIFT_KINDS",
]
