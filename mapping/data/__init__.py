"""Tasks and datasets: one :class:`TaskBatch` for every few-shot problem."""
from .sinusoid import Sinusoid
from .tasks import TaskBatch, validate_batch

__all__ = ["Sinusoid", "TaskBatch", "validate_batch"]
