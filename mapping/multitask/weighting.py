"""Loss weightings for multi-task learning, called inside the user's own training step (LibMTL-style).

Every weighting maps the task losses ``losses`` of shape ``(T,)`` to one scalar to backward,
``sum_i w_i L_i`` plus, for some methods, a term that trains the weighting itself; ``weighting.weights`` holds
the ``(T,)`` weights of the last call (detached). The losses are checked first (1-D, ``T`` entries, finite),
and a call that raises changes no state. Stack per-task scalar losses with ``torch.stack`` or
:func:`mapping.multitask.architectures.task_losses`.

One training step, for every method (``extra`` only for :class:`GradNorm`, the last line only for :class:`FAMO`)::

    total = weighting(losses, **extra)      # (), then
    opt.zero_grad(); total.backward(); opt.step()
    weighting.update(new_losses)            # FAMO: the losses of the same batch after the step

and ``weighting.end_epoch()`` after each epoch for :class:`DynamicWeightAverage`. Learnable weightings
(:class:`UncertaintyWeighting`, :class:`GradNorm`) need ``weighting.parameters()`` in ``opt``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_finite, check_int, check_number


class Weighting(nn.Module):
    """Base class: ``forward(losses)`` with ``losses`` of shape ``(num_tasks,)`` returns the scalar to backward."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_int("num_tasks", num_tasks, 1, why="how many task losses")
        self.weights: Tensor | None = None  # (T,) weights of the last call, None before the first

    def check_losses(self, losses: object, name: str = "losses") -> Tensor:
        """``losses``: a 1-D float tensor of shape ``(num_tasks,)`` with finite entries."""
        t, ok = self.num_tasks, isinstance(losses, Tensor)
        if not ok or losses.dim() != 1 or len(losses) != t or not losses.is_floating_point():
            got = f"shape {tuple(losses.shape)}, {losses.dtype}" if ok else type(losses).__name__
            raise ValueError(f"{name} must be a 1-D float tensor of shape ({t},), one scalar loss per task "
                             f"(torch.stack([loss_0, ..., loss_{t - 1}])), got {got}")
        check_finite(name, losses, "; check that task's data and model outputs, or lower the learning rate")
        return losses

    def combine(self, weights: Tensor, losses: Tensor) -> Tensor:
        """``sum_i w_i L_i`` after checking that ``weights`` are finite; records them in ``self.weights``."""
        check_finite("weights", weights, f" in {type(self).__name__}")
        self.weights = weights.detach().clone()  # (T,)
        return (weights * losses).sum()  # ()


class EqualWeighting(Weighting):
    """``sum_i L_i``: every weight is 1 (linear scalarisation, the baseline of every paper below)."""

    def forward(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        return self.combine(torch.ones_like(losses.detach()), losses)  # ()


class RandomWeighting(Weighting):
    """Random loss weighting, RLW (Lin et al. 2022, "Reasonable Effectiveness of Random Weighting", §3).

    Each call draws ``eps ~ N(0, I_T)`` afresh and uses ``w = total * softmax(eps)``. The paper (and LibMTL's
    ``RLW``) normalise to ``sum w = 1``, the default ``total=1.0``; ``total=num_tasks`` puts RLW on the scale of
    :class:`EqualWeighting` (``sum w = T``), so that both can share a learning rate. ``seed`` makes the draws
    reproducible (a private CPU generator); without it the global torch generator is used.
    """

    def __init__(self, num_tasks: int, seed: int | None = None, total: float = 1.0) -> None:
        super().__init__(num_tasks)
        self.total = check_number("total", total, strict=True, why="the sum of the weights")
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def forward(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        eps = torch.randn(self.num_tasks, generator=self.generator, dtype=torch.float64)  # (T,)
        weights = (self.total * F.softmax(eps, 0)).to(losses)  # (T,)
        return self.combine(weights, losses)  # ()


class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018, eqs. (7) and (10), §3.2).

    Learnable ``log_vars`` ``s_i = log sigma_i^2`` (an ``nn.Parameter``: put ``weighting.parameters()`` in the
    optimiser). Implemented: ``total = sum_i exp(-s_i) L_i + s_i``, the practical form of the authors' Keras
    example (yaringal/multi-task-learning-example). The paper's regression form (7) is
    ``sum_i 1/2 exp(-s_i) L_i + 1/2 s_i``, exactly half of it (MTAN's and LibMTL's ``UW`` use that half); its
    classification form (10) is ``exp(-s_i) L_i + 1/2 s_i``. All have the same minimiser in ``s``,
    ``s_i = log L_i``; the half form halves the gradient on the network.
    ``weights`` are ``exp(-s_i)``; ``init`` is the initial ``s`` (0: every weight 1).
    """

    def __init__(self, num_tasks: int, init: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init)))  # (T,) s_i = log sigma_i^2

    def forward(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        check_finite("log_vars", self.log_vars, "; lower the learning rate of the weighting's parameters")
        precision = torch.exp(-self.log_vars)  # (T,) 1 / sigma_i^2
        return self.combine(precision, losses) + self.log_vars.sum()  # ()


def _grad_norms(losses: Tensor, shared: list[Tensor]) -> Tensor:
    """``||grad_W L_i||`` for each task over the parameters ``shared`` together, detached: shape ``(T,)``."""
    if not losses.requires_grad:
        raise ValueError("losses carry no autograd graph (computed under torch.no_grad()?); GradNorm needs the "
                         "gradient of each loss with respect to shared")
    norms = []
    for i in range(len(losses)):
        grads = torch.autograd.grad(losses[i], shared, retain_graph=True, allow_unused=True)
        if all(g is None for g in grads):
            raise ValueError(f"losses[{i}] (task {i}) does not depend on shared; pass the parameters of the last "
                             "layer that every task uses (e.g. list(model.trunk[-1].parameters()))")
        squares = [g.pow(2).sum() for g in grads if g is not None]
        norms.append(torch.stack(squares).sum().sqrt())  # ()
    return torch.stack(norms).detach()  # (T,)


class GradNorm(Weighting):
    """GradNorm (Chen, Badrinarayanan, Lee & Rabinovich 2018, eqs. (1)-(2), §3, Alg. 1).

    Learnable weights ``w`` (an ``nn.Parameter``, initialised to 1). Each call, with ``W`` the parameters
    ``shared`` of the last shared layer:

    * ``G_i = w_i ||grad_W L_i||`` (the norm of the *unweighted* task gradient, detached, times ``w_i``);
    * ``r_i = Lt_i / mean_j Lt_j`` with ``Lt_i = L_i(t) / L_i(0)``, ``L_i(0)`` the losses of the first call;
    * ``L_grad = sum_i |G_i - mean_j(G_j) r_i^alpha|`` (eq. (2)), the target ``mean(G) r_i^alpha`` (eq. (1))
      detached;
    * returns ``sum_i w_i L_i + L_grad - L_grad.detach()``: its *value* is the weighted loss, the network gets
      ``sum_i w_i grad L_i`` (``w`` detached, as in LibMTL, so the task loss gives ``w`` no gradient) and ``w``
      gets exactly ``grad_w L_grad``.

    Protocol: ``opt`` holds the model's parameters and ``weighting.parameters()`` (a group with its own ``lr``,
    e.g. 0.025, is usual); per step ``total = weighting(losses, shared=list(last_shared_layer.parameters()))``,
    ``opt.zero_grad(); total.backward(); opt.step()``. Renormalisation ``w <- T w / sum(w)`` (after clamping
    to ``min_weight`` > 0) happens at the start of every call, so each step uses weights with ``sum = T``;
    call :meth:`renormalise` after ``opt.step()`` to read normalised weights in between. The first call sets
    ``L_i(0)``; ``reset_initial_losses()`` forgets it. ``alpha`` is the paper's asymmetry (1.5 for NYUv2).
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, min_weight: float = 1e-3) -> None:
        super().__init__(num_tasks)
        self.alpha = check_number("alpha", alpha, why="the restoring force")
        self.min_weight = check_number("min_weight", min_weight, strict=True,
                                       why="the smallest weight")
        self.w = nn.Parameter(torch.ones(num_tasks))  # (T,) w_i, sum = T
        self.initial_losses: Tensor | None = None  # (T,) L_i(0)
        self.grad_loss: Tensor | None = None  # () L_grad of the last call, detached

    @torch.no_grad()
    def renormalise(self) -> None:
        """Clamp ``w`` to at least ``min_weight`` and rescale it to ``sum_i w_i = T``."""
        self.w.clamp_(min=self.min_weight).mul_(self.num_tasks / self.w.sum())

    def reset_initial_losses(self) -> None:
        self.initial_losses = None

    def forward(self, losses: Tensor, shared: Tensor | Iterable[Tensor]) -> Tensor:
        losses = self.check_losses(losses)
        params = [shared] if isinstance(shared, Tensor) else list(shared)
        if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
            raise ValueError("shared must be the parameters of the last shared layer (tensors that require grad), "
                             f"e.g. list(model.trunk[-1].parameters()), got {len(params)} entries")
        check_finite("weights", self.w, " in GradNorm; lower the learning rate of weighting.parameters()")
        initial = self.initial_losses if self.initial_losses is not None else losses.detach()  # (T,)
        if not (initial > 0).all():
            i = int((initial <= 0).nonzero()[0])
            raise ValueError(f"losses[{i}] (task {i}) is {initial[i].item()} at GradNorm's first call; the loss "
                             "ratios L_i(t) / L_i(0) need positive initial losses")
        norms = _grad_norms(losses, params)  # (T,) ||grad_W L_i||
        self.renormalise()
        self.initial_losses = initial
        ratio = losses.detach() / initial  # (T,) Lt_i
        r = ratio / ratio.mean()  # (T,) relative inverse training rate
        g = self.w * norms.to(self.w)  # (T,) G_i, differentiable in w only
        target = (g.mean() * r.to(g) ** self.alpha).detach()  # (T,) mean(G) r_i^alpha
        grad_loss = (g - target).abs().sum()  # () L_grad, eq. (2)
        self.grad_loss = grad_loss.detach()
        return self.combine(self.w.detach(), losses) + (grad_loss - grad_loss.detach())  # ()


class DynamicWeightAverage(Weighting):
    """Dynamic weight average, DWA (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention",
    eq. (1)).

    ``w_i(t) = T exp(r_i(t-1) / temperature) / sum_j exp(r_j(t-1) / temperature)`` with
    ``r_i(t-1) = L_i(t-1) / L_i(t-2)`` and ``L_i(t)`` the average over epoch ``t`` of the losses passed to
    ``forward``; every weight is 1 in the first two epochs. Protocol: call ``forward`` every step and
    :meth:`end_epoch` once at the end of each epoch (the weights change only there).
    """

    def __init__(self, num_tasks: int, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        self.temperature = check_number("temperature", temperature, strict=True)
        self.history: list[Tensor] = []  # epoch averages L(t-2), L(t-1), each (T,)
        self._sum: Tensor | None = None  # (T,) sum of this epoch's losses
        self._count = 0

    def epoch_weights(self, like: Tensor) -> Tensor:
        """The weights of the current epoch, shape ``(T,)``, in ``like``'s dtype and device."""
        if len(self.history) < 2:
            return torch.ones_like(like)  # (T,)
        r = self.history[-1] / self.history[-2]  # (T,) r_i(t-1)
        return (self.num_tasks * F.softmax(r / self.temperature, 0)).to(like)  # (T,)

    def forward(self, losses: Tensor) -> Tensor:
        losses = self.check_losses(losses)
        weights = self.epoch_weights(losses.detach())  # (T,)
        check_finite("weights", weights, " in DynamicWeightAverage: an epoch average loss was 0")
        loss = self.combine(weights, losses)  # ()
        self._sum = losses.detach().clone() if self._sum is None else self._sum + losses.detach()  # (T,)
        self._count += 1
        return loss

    def end_epoch(self) -> Tensor:
        """Close the epoch: store and return the average of the losses seen since the last call, ``(T,)``."""
        if self._count == 0:
            raise ValueError("end_epoch() was called with no losses passed to forward since the previous epoch")
        average = self._sum / self._count  # (T,) L_i(t)
        self.history = (self.history + [average])[-2:]
        self._sum, self._count = None, 0
        return average


class FAMO(Weighting):
    """Fast Adaptive Multitask Optimization (Liu, Feng, Stone & Liu 2023, Alg. 1).

    Logits ``xi`` (a buffer, initialised to 0), ``z = softmax(xi)``, shifted losses ``D_i = L_i - m_i + eps``
    (``m`` = ``min_losses``, lower bounds, default 0). ``forward`` returns ``c sum_i z_i log D_i`` with
    ``c = (sum_i z_i / D_i)^-1`` held constant, whose gradient is ``sum_i (c z_i / D_i) grad L_i``: ``weights``
    are those ``c z_i / D_i`` (sum 1). After the model's optimiser step, :meth:`update` takes the losses of the
    same batch at the new parameters, ``delta_i = log D_i(before) - log D_i(after)``, and moves the logits:

        xi <- xi - lr (J_z^T delta + gamma xi),   J_z = diag(z) - z z^T      (Alg. 1, last line)

    Protocol: ``total = famo(losses); opt.zero_grad(); total.backward(); opt.step()``, then
    ``with torch.no_grad(): famo.update(losses_of_same_batch(model))``. ``adam=True`` feeds the same
    ``J_z^T delta + gamma xi`` to Adam (the official code and LibMTL: ``Adam(lr, weight_decay=gamma)``).
    Defaults ``lr=0.025``, ``gamma=1e-3`` as LibMTL (the official example uses ``gamma=0.01``).
    """

    def __init__(self, num_tasks: int, lr: float = 0.025, gamma: float = 1e-3,
                 min_losses: Sequence[float] | Tensor | None = None, eps: float = 1e-8, adam: bool = False) -> None:
        super().__init__(num_tasks)
        self.lr, self.gamma, self.eps = (check_number(n, v)
                                         for n, v in (("lr", lr), ("gamma", gamma), ("eps", eps)))
        self.adam = bool(adam)
        bounds = torch.zeros(num_tasks) if min_losses is None else torch.as_tensor(min_losses).detach().clone()
        if bounds.shape != (num_tasks,):
            raise ValueError(f"min_losses must have shape ({num_tasks},), got {tuple(bounds.shape)}")
        self.register_buffer("min_losses", bounds.double())  # (T,) m_i
        self.register_buffer("logits", torch.zeros(num_tasks, dtype=torch.float64))  # (T,) xi
        self.register_buffer("_m", torch.zeros(num_tasks, dtype=torch.float64))  # (T,) Adam's first moment
        self.register_buffer("_v", torch.zeros(num_tasks, dtype=torch.float64))  # (T,) Adam's second moment
        self._steps = 0
        self._before: Tensor | None = None  # (T,) D of the last forward

    @property
    def z(self) -> Tensor:
        """The task distribution ``softmax(xi)``, shape ``(T,)``."""
        return F.softmax(self.logits, 0)  # (T,)

    def _shifted(self, losses: Tensor, name: str) -> Tensor:
        shifted = losses - self.min_losses.to(losses) + self.eps  # (T,) D_i
        if not (shifted.detach() > 0).all():
            i = int((shifted.detach() <= 0).nonzero()[0])
            raise ValueError(f"{name}[{i}] (task {i}) = {losses[i].item()} is not above min_losses[{i}] = "
                             f"{self.min_losses[i].item()}; FAMO takes log({name} - min_losses)")
        return shifted

    def forward(self, losses: Tensor) -> Tensor:
        shifted = self._shifted(self.check_losses(losses), "losses")  # (T,)
        check_finite("logits", self.logits, " in FAMO; lower lr")
        z = self.z.to(losses)  # (T,)
        c = 1 / (z / shifted.detach()).sum()  # () held constant
        self.combine(c * z / shifted.detach(), losses)  # () unused: checks and records the weights c z_i / D_i
        self._before = shifted.detach()  # (T,)
        return c * (z * shifted.log()).sum()  # ()

    @torch.no_grad()
    def update(self, losses_after: Tensor) -> None:
        """Alg. 1's logit step from the losses of the same batch after the model's step, shape ``(T,)``."""
        if self._before is None:
            raise ValueError("FAMO.update(losses_after) needs a forward(losses) call since the last update")
        after = self._shifted(self.check_losses(losses_after, "losses_after"), "losses_after")  # (T,)
        delta = (self._before.log() - after.log()).to(self.logits)  # (T,) decrease of log D
        z = self.z  # (T,)
        grad = z * (delta - (z * delta).sum()) + self.gamma * self.logits  # (T,) J_z^T delta + gamma xi
        if self.adam:  # torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8
            (b1, b2), self._steps = (0.9, 0.999), self._steps + 1
            self._m.mul_(b1).add_((1 - b1) * grad)  # (T,)
            self._v.mul_(b2).add_((1 - b2) * grad ** 2)  # (T,)
            grad = (self._m / (1 - b1 ** self._steps)) / ((self._v / (1 - b2 ** self._steps)).sqrt() + 1e-8)  # (T,)
        self.logits.sub_(self.lr * grad)
        self._before = None


__all__ = ["FAMO", "DynamicWeightAverage", "EqualWeighting", "GradNorm", "RandomWeighting", "UncertaintyWeighting",
           "Weighting"]
