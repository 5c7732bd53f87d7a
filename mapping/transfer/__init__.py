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
from .adversarial import (DomainAdversarialLoss, DomainDiscriminator, GradientReversal, GradientReversalLayer,
                          dann_lambda, dann_lr, grad_reverse)
from .discrepancy import DEFAULT_KERNELS, CORALLoss, MMDLoss, coral, covariance, mmd
from .inductive import (embed, feature_dim, fine_tune, fine_tune_optimizer, fit, freeze, linear_probe,
                        transfer_accuracy)
from .unsupervised import (ROTATIONS, calibrate_batch_norm, cluster_scores, evaluate_unsupervised, features,
                           pretrain_rotation, random_backbone, rotations, train_rotation)

__all__ = [
    # domain-adversarial training
    "GradientReversal", "GradientReversalLayer", "grad_reverse", "DomainDiscriminator", "DomainAdversarialLoss",
    "dann_lambda", "dann_lr",
    # feature discrepancies
    "MMDLoss", "CORALLoss", "mmd", "coral", "covariance", "DEFAULT_KERNELS",
    # inductive transfer on any extractor (its accuracy is mapping.stats.accuracy of its outputs)
    "fit", "embed", "freeze", "feature_dim", "linear_probe", "fine_tune", "fine_tune_optimizer", "transfer_accuracy",
    # unsupervised transfer
    "ROTATIONS", "rotations", "train_rotation", "pretrain_rotation", "random_backbone", "features",
    "calibrate_batch_norm", "cluster_scores", "evaluate_unsupervised",
]
