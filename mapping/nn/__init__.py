"""Backbones (an MLP for regression, the Conv-4 of the few-shot papers, a toy ``Point``) and normalisation from primitive
operations, exact under ``vmap`` (:mod:`mapping.nn.norms`)."""
from .conv4 import BN_POLICIES, BatchStatNorm2d, Conv4, ConvBlock
from .mlp import MLP, sinusoid_mlp
from .point import Point
from .norms import (ROUTES, batch_norm, check_vmappable, instance_norm, layer_norm, primitive_norms,
                    updates_running_stats)

__all__ = ["BN_POLICIES", "BatchStatNorm2d", "Conv4", "ConvBlock", "MLP", "Point", "ROUTES", "batch_norm", "check_vmappable",
           "instance_norm", "layer_norm", "primitive_norms", "sinusoid_mlp", "updates_running_stats"]
