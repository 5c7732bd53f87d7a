"""mapping: meta-learning, multi-task learning and knowledge transfer in PyTorch.

The package behind the executable book *Everything is a mapping* (一切皆是映射). Subpackages:
``mapping.data`` (tasks and datasets), ``mapping.nn`` (backbones and exact normalisation),
``mapping.meta`` (meta-learning), ``mapping.multitask`` (multi-task learning), ``mapping.transfer`` (knowledge
transfer), ``mapping.train`` (the training loop), ``mapping.results`` (results with
provenance), ``mapping.plot``, ``mapping.experiments`` and ``mapping.reproduce``. ``import mapping`` loads
the light ones at once and the others (plotting, experiments) on first use.
"""
import importlib

from . import budget, checkpoint, data, device, meta, multitask, nn, results, stats, train, transfer
from .device import get_device, seed_everything

__version__ = "0.1.0"
_LAZY = ("experiments", "figures", "plot", "reproduce")
__all__ = ["budget", "checkpoint", "data", "device", "experiments", "figures", "get_device", "meta", "multitask", "nn",
           "plot", "reproduce", "results", "seed_everything", "stats", "train", "transfer"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mapping' has no attribute {name!r}")
