"""How the task gradients on the shared parameters agree: cosines, PCGrad's projections, conflict maps.

Task ``i``'s gradient on the shared parameters is row ``g_i`` of the Jacobian ``J`` (T, P)
(:func:`~mapping.multitask.jacobian.task_jacobian`); two tasks *conflict* where ``g_i . g_j < 0``
(Yu et al. 2020, Definition 1: their cosine is negative). Everything here is computed from the Gramian
``G = J J^T`` (T, T), as the aggregators are (:mod:`mapping.multitask.aggregators`):

* :func:`gramian_cosines`, :func:`pairwise_cosines`: the (T, T) matrix ``cos(g_i, g_j) = G_ij / sqrt(G_ii G_jj)``;
* :func:`pcgrad_coefficients`: PCGrad's projected gradients ``g_i^PC = C[i] @ J`` for given orders, so that
  their cosines are ``C G C^T`` normalised (Yu et al. 2020, Algorithm 1);
* :class:`GramianRecorder`: wraps an aggregator and keeps every Gramian that
  :func:`~mapping.multitask.backward.mtl_backward` hands it, so logging costs no extra backward pass;
* :func:`gradient_cosines`: trains a model one ``mtl_backward`` step per batch and logs, per step, the
  cosines of the task gradients, of PCGrad's projections (with a :class:`PCGrad`), and of the update with
  each task gradient;
* :func:`conflict_map`: the cosine matrix averaged over batches, on all shared parameters and layer by layer
  (:func:`layer_groups`), without training;

Mini-batches of a multi-task dataset come from :func:`mapping.data.shuffled_batches`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .aggregators import Mean, PCGrad, check_gramian
from .architectures import task_losses
from .backward import mtl_backward
from .jacobian import check_inputs, jacobian_blocks

__all__ = ["GramianRecorder", "conflict_map", "gradient_cosines", "gramian_cosines", "layer_groups",
           "pairwise_cosines", "pcgrad_coefficients"]


def gramian_cosines(gramian: Tensor) -> Tensor:
    """``C[i, j] = G[i, j] / sqrt(G[i, i] G[j, j])`` (T, T) in float64: symmetric, unit diagonal, in [-1, 1].

    Rows and columns of a task whose gradient is zero (``G[i, i] = 0``) are NaN: its cosines are undefined.
    """
    G = check_gramian(gramian)  # (T, T) float64, symmetric
    norms = G.diagonal().clamp_min(0).sqrt()  # (T,) ||g_i||
    C = (G / (norms[:, None] * norms[None, :])).clamp(-1, 1)  # (T, T)
    zero = norms == 0  # (T,)
    C[zero], C[:, zero] = torch.nan, torch.nan
    C.diagonal()[~zero] = 1.0
    return C


def pairwise_cosines(jacobian: Tensor) -> Tensor:
    """``cos(g_i, g_j)`` (T, T) for the rows of ``jacobian`` (T, P), through the Gramian ``J J^T`` (float64)."""
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ValueError(f"jacobian must be a 2-D tensor (tasks, parameters), got {shape}")
    J = jacobian.detach().double()  # (T, P)
    return gramian_cosines(J @ J.T)  # (T, T)


def pcgrad_coefficients(gramian: Tensor, orders: Sequence[Sequence[int]] | None = None) -> Tensor:
    """The coefficients ``C`` (T, T) of PCGrad's projected gradients, ``g_i^PC = C[i] @ J`` (float64).

    Yu et al. 2020, Algorithm 1: start from ``g_i^PC = g_i``; for each ``j`` in ``orders[i]``, if
    ``g_i^PC . g_j < 0``, set ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j``. PCGrad's update is
    ``sum_i g_i^PC = C.sum(0) @ J``. The paper draws the orders at random; pass ``PCGrad.last_order`` to
    reproduce an aggregator's last call. ``None``: every ``j != i`` in increasing order (with two tasks the
    only order there is). The Gramian of the projected gradients is ``C G C^T``.
    """
    G = check_gramian(gramian)  # (T, T)
    T = G.shape[0]
    if orders is None:
        orders = [[j for j in range(T) if j != i] for i in range(T)]
    if len(orders) != T or any(sorted(o) != [j for j in range(T) if j != i] for i, o in enumerate(orders)):
        raise ValueError(f"orders must hold, for each of the {T} tasks i, a permutation of the other tasks "
                         f"(e.g. PCGrad.last_order), got {orders!r}")
    C = torch.eye(T, dtype=G.dtype)  # (T, T)
    for i, order in enumerate(orders):
        for j in order:
            dot = C[i] @ G[:, j]  # g_i^PC . g_j
            if dot < 0:
                C[i, j] -= dot / G[j, j]
    return C


class GramianRecorder:
    """An aggregator that delegates to ``aggregator`` and keeps a float64 CPU copy of every Gramian it is given.

    Pass it to :func:`~mapping.multitask.backward.mtl_backward` in place of ``aggregator``: the update is
    unchanged, and ``gramians[-1]`` is the last step's ``G = J J^T`` of the task gradients.
    """

    def __init__(self, aggregator) -> None:
        if not callable(getattr(aggregator, "weights", None)):
            raise ValueError(f"aggregator must have a weights(gramian) method, got {type(aggregator).__name__}")
        self.aggregator = aggregator
        self.gramians: list[Tensor] = []

    def weights(self, gramian: Tensor) -> Tensor:
        self.gramians.append(gramian.detach().to("cpu", torch.float64, copy=True))
        return self.aggregator.weights(gramian)  # (T,)

    def __repr__(self) -> str:
        return f"GramianRecorder({self.aggregator!r})"


def _shared(model: nn.Module, shared: Iterable[Tensor] | None) -> list[Tensor]:
    if shared is not None:
        return check_inputs(list(shared), "shared")
    if not callable(getattr(model, "shared_parameters", None)):
        raise ValueError(f"pass shared=...: {type(model).__name__} has no shared_parameters() (HardSharing has)")
    return check_inputs(model.shared_parameters(), "shared")


def gradient_cosines(model: nn.Module, batches: Iterable[tuple[Tensor, Mapping[str, Tensor]]],
                     loss_fns: Mapping[str, Callable] | Callable, aggregator=None, *,
                     shared: Iterable[Tensor] | None = None, optimizer: torch.optim.Optimizer | None = None,
                     lr: float = 1e-3) -> dict[str, Tensor | None]:
    """Train ``model`` one step per batch and log how its task gradients on ``shared`` agree.

    Each step: ``losses = task_losses(model(x), targets, loss_fns)``, then
    ``mtl_backward(losses, shared, aggregator)`` (default :class:`Mean`, the gradient of the mean loss) and
    ``optimizer.step()`` (default Adam over ``model.parameters()`` with ``lr``). ``shared`` defaults to
    ``model.shared_parameters()``. Returns, for S steps and T tasks:

    * ``raw`` (S, T, T): the cosines of the task gradients ``g_i`` before the step;
    * ``projected`` (S, T, T): the cosines of PCGrad's projected gradients ``g_i^PC`` (the orders of that
      step), when ``aggregator`` is a :class:`PCGrad`; else ``None``;
    * ``update`` (S, T): ``cos(d, g_i)``, the update ``d = w^T J`` against each task gradient (negative: the
      step raises task i's loss, to first order);
    * ``losses`` (S, T) and ``weights`` (S, T): the task losses before each step and the aggregator's weights.

    Everything returned is float64 on the CPU, wherever the model runs.
    """
    shared = _shared(model, shared)
    recorder = GramianRecorder(Mean() if aggregator is None else aggregator)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    pcgrad = isinstance(recorder.aggregator, PCGrad)
    raw, projected, update, losses_log, weights_log = [], [], [], [], []
    model.train()
    for x, targets in batches:
        losses = task_losses(model(x), targets, loss_fns)  # (T,)
        optimizer.zero_grad()
        w = mtl_backward(losses, shared, recorder).to("cpu", torch.float64)  # (T,)
        optimizer.step()
        G = recorder.gramians[-1]  # (T, T)
        raw.append(gramian_cosines(G))
        if pcgrad:
            C = pcgrad_coefficients(G, recorder.aggregator.last_order)  # (T, T)
            projected.append(gramian_cosines(C @ G @ C.T))
        Gw = G @ w  # (T,): g_i . d
        update.append(Gw / ((w @ Gw).clamp_min(0).sqrt() * G.diagonal().clamp_min(0).sqrt()))
        losses_log.append(losses.detach().to("cpu", torch.float64))
        weights_log.append(w)
        recorder.gramians.clear()
    if not raw:
        raise ValueError("batches is empty: give at least one (x, targets) batch")
    return {"raw": torch.stack(raw), "projected": torch.stack(projected) if pcgrad else None,
            "update": torch.stack(update), "losses": torch.stack(losses_log), "weights": torch.stack(weights_log)}


def layer_groups(module: nn.Module, depth: int = 1) -> dict[str, list[nn.Parameter]]:
    """The parameters of ``module`` grouped by the submodule ``depth`` levels down that holds them.

    ``depth=1``: one group per child (e.g. each block of a ``Conv4``'s ``body`` with ``module=trunk.body``, or
    each layer of an ``nn.Sequential``); children without parameters are left out; parameters of ``module``
    itself form the group ``""``.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        key = ".".join(name.split(".")[:-1][:depth])
        groups.setdefault(key, []).append(p)
    return groups


def conflict_map(model: nn.Module, batches: Iterable[tuple[Tensor, Mapping[str, Tensor]]],
                 loss_fns: Mapping[str, Callable] | Callable,
                 groups: Mapping[str, Sequence[Tensor]] | None = None) -> dict[str, Tensor]:
    """The cosine matrix (T, T) of the task gradients, averaged over ``batches``, per group of parameters.

    ``groups``: name -> shared parameters (e.g. :func:`layer_groups` of the trunk); default
    ``{"shared": model.shared_parameters()}``. Each batch takes one batched backward for all tasks
    (:func:`~mapping.multitask.jacobian.jacobian_blocks`); a group's Gramian sums its parameters' blocks.
    Returns ``{"all": ..., **{name: ...}}`` (float64, CPU), ``"all"`` over every group's parameters together: the
    mean over batches of each batch's cosines (NaN entries, from a zero gradient, are left out of the mean). The
    model is neither trained nor switched between train and eval mode.
    """
    if groups is None:
        groups = {"shared": _shared(model, None)}
    names = list(groups)
    if not names or "all" in names:
        raise ValueError(f"groups must name at least one group of parameters, none called 'all'; got {names}")
    params = [check_inputs(list(groups[n]), f"groups[{n!r}]") for n in names]
    flat = [p for ps in params for p in ps]
    sums: dict[str, list[Tensor]] = {n: [] for n in ["all"] + names}
    for x, targets in batches:
        losses = task_losses(model(x), targets, loss_fns)  # (T,)
        blocks = jacobian_blocks(losses, flat, retain_graph=False)  # each (T, *p.shape) or None
        T, start, total = losses.shape[0], 0, 0
        for name, ps in zip(names, params):
            part = [b.detach().double().reshape(T, -1) for b in blocks[start:start + len(ps)] if b is not None]
            start += len(ps)
            G = sum(((f @ f.T).cpu() for f in part), torch.zeros(T, T, dtype=torch.float64))  # (T, T) on CPU
            total = total + G
            sums[name].append(gramian_cosines(G))
        sums["all"].append(gramian_cosines(total))
    if not sums["all"]:
        raise ValueError("batches is empty: give at least one (x, targets) batch")
    return {n: torch.stack(c).nanmean(0) for n, c in sums.items()}  # each (T, T)
