"""Knowledge transfer (Pan & Yang 2010), on the user's own networks.

* Inductive transfer (labelled target data; :mod:`mapping.transfer.inductive`): any feature extractor pre-trained
  on other classes, then a linear probe, fine-tuning at a lower backbone rate, or training from scratch (the book's
  Omniglot backbone is :mod:`mapping.experiments.omniglot_backbone`).
* Transductive transfer, i.e. domain adaptation (labelled source, unlabelled target): domain-adversarial training
  (gradient reversal, DANN's schedules, a domain discriminator and loss, :mod:`mapping.transfer.adversarial`) and
  feature discrepancies (multi-kernel MMD, CORAL, :mod:`mapping.transfer.discrepancy`).
* Unsupervised transfer (no labels in either domain; :mod:`mapping.transfer.unsupervised`): self-supervised
  rotation prediction, then k-means clustering of new data scored by NMI and ARI.
"""
from . import adversarial, discrepancy, inductive, unsupervised
from .adversarial import *  # noqa: F401,F403
from .discrepancy import *  # noqa: F401,F403
from .inductive import *  # noqa: F401,F403
from .unsupervised import *  # noqa: F401,F403

__all__ = sorted({*adversarial.__all__, *discrepancy.__all__, *inductive.__all__, *unsupervised.__all__})
