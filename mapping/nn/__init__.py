"""Backbones: an MLP for regression and the Conv-4 of the few-shot papers."""
from .conv4 import BN_POLICIES, BatchStatNorm2d, Conv4
from .mlp import MLP, sinusoid_mlp

__all__ = ["BN_POLICIES", "BatchStatNorm2d", "Conv4", "MLP", "sinusoid_mlp"]
