"""Backbones."""
from .mlp import MLP, sinusoid_mlp

__all__ = ["MLP", "sinusoid_mlp"]
