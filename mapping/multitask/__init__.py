"""Multi-task learning on the user's own models: architectures that share (hard, soft, cross-stitch, MMoE),
loss weightings (equal, random, uncertainty, GradNorm, DWA, FAMO), aggregators of per-task gradients computed
in one pass (PCGrad, MGDA, CAGrad, UPGrad, IMTL-G) behind one call, :func:`mtl_backward`, and tools to look at
gradient conflicts (:mod:`mapping.multitask.analysis`)."""
from .aggregators import MGDA, Aggregator, CAGrad, IMTLG, Mean, PCGrad, UPGrad
from .analysis import (GramianRecorder, conflict_map, gradient_cosines, gramian_cosines, layer_groups,
                       pairwise_cosines, pcgrad_coefficients)
from .architectures import CrossStitch, HardSharing, MMoE, SoftSharing, task_losses
from .backward import mtl_backward
from .jacobian import gramian, task_jacobian
from .weighting import (FAMO, DynamicWeightAverage, EqualWeighting, GradNorm, RandomWeighting, UncertaintyWeighting,
                        Weighting)

__all__ = [
    # architectures that share
    "HardSharing", "SoftSharing", "CrossStitch", "MMoE", "task_losses",
    # loss weightings, one call each
    "Weighting", "EqualWeighting", "RandomWeighting", "UncertaintyWeighting", "GradNorm", "DynamicWeightAverage",
    "FAMO",
    # aggregators of per-task gradients, behind mtl_backward
    "Aggregator", "Mean", "PCGrad", "MGDA", "CAGrad", "UPGrad", "IMTLG", "mtl_backward", "task_jacobian", "gramian",
    # looking at gradient conflicts
    "GramianRecorder", "conflict_map", "gradient_cosines", "gramian_cosines", "layer_groups", "pairwise_cosines",
    "pcgrad_coefficients",
]
