"""Multi-task learning on the user's own models: architectures that share (hard, soft, cross-stitch, MMoE),
loss weightings (equal, random, uncertainty, GradNorm, DWA, FAMO), aggregators of per-task gradients computed
in one pass (PCGrad, MGDA, CAGrad, UPGrad, IMTL-G) behind one call, :func:`mtl_backward`, and tools to look at
gradient conflicts (:mod:`mapping.multitask.analysis`)."""
from . import aggregators, analysis, architectures, backward, jacobian, qp_aggregators, weighting
from .aggregators import *  # noqa: F401,F403
from .analysis import *  # noqa: F401,F403
from .architectures import *  # noqa: F401,F403
from .backward import *  # noqa: F401,F403
from .jacobian import *  # noqa: F401,F403
from .qp_aggregators import *  # noqa: F401,F403
from .weighting import *  # noqa: F401,F403

__all__ = sorted({*aggregators.__all__, *analysis.__all__, *architectures.__all__, *backward.__all__,
                  *jacobian.__all__, *qp_aggregators.__all__, *weighting.__all__})
