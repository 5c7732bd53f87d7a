"""mapping: meta-learning, multi-task learning and knowledge transfer in PyTorch.

The package behind the executable book *Everything is a mapping* (一切皆是映射). Subpackages:
``mapping.data`` (tasks and datasets), ``mapping.nn`` (backbones), ``mapping.meta`` (meta-learning),
``mapping.train`` (the training loop), ``mapping.results`` (results with provenance), ``mapping.plot``.
"""
from . import budget, checkpoint, data, meta, nn, results
from .device import get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["budget", "checkpoint", "data", "get_device", "meta", "nn", "results", "seed_everything"]
