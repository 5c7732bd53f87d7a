"""Knowledge transfer. Domain adaptation (transductive transfer: labelled source, unlabelled target) on the user's
own feature extractor: domain-adversarial training (gradient reversal, DANN's schedules, a domain discriminator
and loss, :mod:`mapping.transfer.adversarial`) and feature discrepancies (multi-kernel MMD, CORAL,
:mod:`mapping.transfer.discrepancy`)."""
from . import adversarial, discrepancy
from .adversarial import *  # noqa: F401,F403
from .discrepancy import *  # noqa: F401,F403

__all__ = sorted({*adversarial.__all__, *discrepancy.__all__})
