"""Domain-adversarial training (DANN): the gradient reversal layer, the paper's schedules, a domain discriminator
and the domain-adversarial loss, on the user's own feature extractor.

Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand & Lempitsky 2016, "Domain-adversarial training
of neural networks", JMLR 17(59). §4: the gradient reversal layer ``R_lambda`` is the identity forward,
``R(x) = x``, and multiplies the gradient by ``-lambda`` backward, ``dR/dx = -lambda I``; placed between the
feature extractor ``G_f`` and the domain classifier ``G_d``, one ordinary backward of

    L_y(G_y(G_f(x_s)), y_s) + L_d(G_d(R_lambda(G_f(x))), d)

descends ``L_d`` in the discriminator's parameters and ascends ``lambda L_d`` in the extractor's: the saddle point
of eq. (10)/(13)-(15). :class:`DomainAdversarialLoss` follows the Transfer-Learning-Library's
``tllib.alignment.dann.DomainAdversarialLoss``: ``loss(f_s, f_t)`` scores source features as domain 1 and
target features as domain 0 with binary cross-entropy on logits, and averages the two domains' mean losses.

One DANN step::

    f_s, f_t = extractor(x_s), extractor(x_t)                  # (N_s, d), (N_t, d)
    loss = F.cross_entropy(classifier(f_s), y_s) + adversary(f_s, f_t, progress=step / steps)
    opt.zero_grad(); loss.backward(); opt.step()               # opt holds extractor, classifier, discriminator
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_number

Schedule = Callable[[float], float]


def check_lambda(value: object, name: str = "lambda_") -> float:
    """``value``: a finite real number >= 0 (the reversal strength), or a one-element tensor without gradient
    holding one; returns it as a float."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    return check_number(name, value, 0.0, why="the gradient reversal strength")


def check_progress(progress: object, name: str = "progress") -> float:
    """``progress``: the fraction of training done, a real number in [0, 1]; returns it as a float."""
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 1:
        raise ValueError(f"{name} must be a real number in [0, 1] (the fraction of training done, "
                         f"step / total steps), got {progress!r}")
    return float(progress)


class GradientReversal(torch.autograd.Function):
    """``R_lambda`` (Ganin et al. 2016, §4): forward ``x``, backward ``-lambda * grad``. ``lambda_`` is a float.

    Prefer :func:`grad_reverse`, which checks its arguments; this class works under ``torch.func`` transforms.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, lambda_: float) -> Tensor:
        return x.clone()  # a copy, not a view: the caller may modify it in place

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.lambda_ = inputs[1]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None  # same shape as x


def grad_reverse(x: Tensor, lambda_: float = 1.0) -> Tensor:
    """``R_lambda(x)``: ``x`` unchanged forward; the gradient reaching ``x`` is ``-lambda_`` times the upstream one."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating-point torch.Tensor, got {got}")
    return GradientReversal.apply(x, check_lambda(lambda_))


class GradientReversalLayer(nn.Module):
    """:func:`grad_reverse` as a module, for ``nn.Sequential``; set ``layer.lambda_`` to follow a schedule."""

    def __init__(self, lambda_: float = 1.0) -> None:
        super().__init__()
        self.lambda_ = check_lambda(lambda_)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambda_)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """The adaptation factor of Ganin et al. 2016, §5.2.2: ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``.

    ``progress`` p in [0, 1] is the training progress; lambda rises from 0 at p = 0 towards 1 (0.9999 at p = 1 with
    the paper's ``gamma = 10``), "to suppress noisy signal from the domain classifier at the early stages".
    """
    p, gamma = check_progress(progress), check_number("gamma", gamma, strict=True)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def dann_lr(progress: float, mu0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """The learning-rate annealing of Ganin et al. 2016, §5.2.2: ``mu_p = mu0 / (1 + alpha p) ** beta``."""
    p = check_progress(progress)
    mu0 = check_number("mu0", mu0, strict=True)
    alpha, beta = check_number("alpha", alpha), check_number("beta", beta)
    return mu0 / (1.0 + alpha * p) ** beta


class DomainDiscriminator(nn.Module):
    """The domain classifier ``G_d``: an MLP from ``in_features`` to one logit per example, shape ``(N,)``.

    ``hidden``: the widths of the hidden layers (an int for one layer; ``()`` gives logistic regression, the
    shallow DANN's ``G_d`` of §5.1). The default ``(1024, 1024)`` is the paper's domain classifier for deep
    features (§5.2.2, "x -> 1024 -> 1024 -> 2", one logit here). Each hidden layer is ``Linear``, then
    ``BatchNorm1d`` (``batch_norm=True``), ``activation()`` and ``Dropout(dropout)`` when ``dropout > 0``.
    """

    def __init__(self, in_features: int, hidden: int | Sequence[int] = (1024, 1024), *,
                 activation: Callable[[], nn.Module] = nn.ReLU, batch_norm: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int (the feature size), got {in_features!r}")
        widths = [hidden] if isinstance(hidden, int) and not isinstance(hidden, bool) else hidden
        if not isinstance(widths, Sequence) or not all(
                isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"hidden must be a positive int or a sequence of positive ints (layer widths), "
                             f"got {hidden!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        for n_in, n_out in zip([in_features, *widths], widths):
            layers += [nn.Linear(n_in, n_out)] + ([nn.BatchNorm1d(n_out)] if batch_norm else []) + [activation()]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
        self.in_features = in_features
        self.net = nn.Sequential(*layers, nn.Linear(([in_features, *widths])[-1], 1))

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f).squeeze(-1)  # (N,) logits: > 0 says "source"


def in_features_of(module: nn.Module) -> int | None:
    """The input size of ``module`` when it says so: its ``in_features``, or that of a leading ``nn.Linear``."""
    size = getattr(module, "in_features", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[0], nn.Linear):
        return module[0].in_features
    return None


class DomainAdversarialLoss(nn.Module):
    """``L_d`` through a gradient reversal layer (Ganin et al. 2016, §4), shaped like the Transfer-Learning-Library's.

    ``loss(f_s, f_t)`` for source features ``f_s (N_s, d)`` and target features ``f_t (N_t, d)`` of the user's
    extractor: ``0.5 * (BCE(G_d(R(f_s)), 1) + BCE(G_d(R(f_t)), 0))``, each a mean over its domain (so domains of
    different sizes weigh the same). ``discriminator`` maps ``(N, d)`` to ``N`` logits (``(N,)`` or ``(N, 1)``).
    ``lambda_``: a number (constant), a schedule ``progress -> lambda``, or ``None`` for :func:`dann_lambda`;
    with a schedule pass ``progress`` in [0, 1] to each call. After a call, ``domain_accuracy`` holds the
    discriminator's accuracy (mean of the two domains' accuracies, in [0, 1]) and ``last_lambda`` the factor used.
    """

    def __init__(self, discriminator: nn.Module, lambda_: float | Schedule | None = None) -> None:
        super().__init__()
        if not isinstance(discriminator, nn.Module):
            raise ValueError(f"discriminator must be an nn.Module mapping (N, d) features to N logits, "
                             f"got {type(discriminator).__name__}")
        if lambda_ is not None and not callable(lambda_):
            lambda_ = check_lambda(lambda_)
        self.discriminator = discriminator
        self.lambda_ = dann_lambda if lambda_ is None else lambda_
        self.domain_accuracy: float | None = None
        self.last_lambda: float | None = None

    def factor(self, progress: float | None) -> float:
        """The reversal strength for this call: the constant, or the schedule at ``progress``."""
        if not callable(self.lambda_):
            return self.lambda_
        if progress is None:
            raise ValueError("progress must be given (a real number in [0, 1], step / total steps) when lambda_ is "
                             "a schedule; pass lambda_=<number> for a constant reversal strength")
        return check_lambda(self.lambda_(check_progress(progress)), "lambda_(progress)")

    def check_features(self, f_s: object, f_t: object) -> None:
        for name, f, domain in (("f_s", f_s, "source"), ("f_t", f_t, "target")):
            if not isinstance(f, Tensor) or f.dim() != 2 or not f.is_floating_point():
                got = f"shape {tuple(f.shape)}, {f.dtype}" if isinstance(f, Tensor) else type(f).__name__
                raise ValueError(f"{name} must be a 2-D float tensor ({domain} examples, features); flatten "
                                 f"feature maps first, got {got}")
            if len(f) == 0:
                raise ValueError(f"{domain} domain is empty: {name} has 0 rows; give at least one {domain} example")
        if f_s.shape[1] != f_t.shape[1]:
            raise ValueError(f"f_s and f_t must have the same feature size: f_s has {f_s.shape[1]} features, "
                             f"f_t has {f_t.shape[1]}; give both domains' features from the same extractor")
        size = in_features_of(self.discriminator)
        if size is not None and size != f_s.shape[1]:
            raise ValueError(f"f_s and f_t have {f_s.shape[1]} features but the discriminator takes in_features="
                             f"{size}; build the discriminator for the extractor's feature size")

    def forward(self, f_s: Tensor, f_t: Tensor, progress: float | None = None) -> Tensor:
        self.check_features(f_s, f_t)
        lam = self.factor(progress)
        n_s = len(f_s)
        f = grad_reverse(torch.cat([f_s, f_t]), lam)  # (N_s + N_t, d)
        logits = self.discriminator(f)  # (N_s + N_t,) or (N_s + N_t, 1)
        if logits.shape not in ((len(f),), (len(f), 1)):
            raise ValueError(f"discriminator must return one logit per example, shape ({len(f)},) or ({len(f)}, 1), "
                             f"got {tuple(logits.shape)}")
        logits = logits.reshape(-1)  # (N_s + N_t,)
        d_s, d_t = logits[:n_s], logits[n_s:]  # (N_s,), (N_t,)
        loss = 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))  # ()
                      + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))
        with torch.no_grad():
            self.domain_accuracy = 0.5 * ((d_s > 0).double().mean() + (d_t <= 0).double().mean()).item()
        self.last_lambda = lam
        return loss


__all__ = ["DomainAdversarialLoss", "DomainDiscriminator", "GradientReversal", "GradientReversalLayer",
           "dann_lambda", "dann_lr", "grad_reverse"]
