"""Multi-task architectures built from the user's own modules: hard sharing, soft sharing, cross-stitch, MMoE.

Every architecture maps one input ``x`` to ``{task: output}`` for all its tasks, in the order of
``task_names``. Tasks are named by the keys of the ``heads`` (or ``networks``) mapping, by ``tasks=...``, or
``"0"``, ``"1"``, ... for a sequence. :func:`task_losses` turns the outputs into the ``(T,)`` losses that a
weighting of :mod:`mapping.multitask.weighting` takes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def named_modules(modules: Mapping[str, nn.Module] | Sequence[nn.Module], name: str,
                  tasks: Sequence[str] | None = None) -> nn.ModuleDict:
    """One module per task as a ``ModuleDict`` keyed by task name; ``name`` is the argument for errors."""
    if isinstance(modules, nn.Module) and not isinstance(modules, (nn.ModuleDict, nn.ModuleList)):
        raise ValueError(f"{name} must be a mapping task -> nn.Module or a sequence of nn.Module (one per task), "
                         f"got a single {type(modules).__name__}")
    keyed = isinstance(modules, (Mapping, nn.ModuleDict))
    items = list(modules.items()) if keyed else [(str(i), m) for i, m in enumerate(modules)]
    if not items:
        raise ValueError(f"{name} must hold at least one module (one per task), got none")
    if tasks is not None:
        tasks = [str(t) for t in tasks]
        keys = [k for k, _ in items]
        if len(tasks) != len(items) or (keyed and sorted(keys) != sorted(tasks)):
            raise ValueError(f"{name} has {len(items)} entries {keys} but tasks has {len(tasks)} names {tasks}; "
                             f"give one entry of {name} per task")
        if not keyed:
            items = [(t, m) for t, (_, m) in zip(tasks, items)]
    for key, module in items:
        if not isinstance(key, str):
            raise ValueError(f"{name} must be keyed by task names (str), got the key {key!r}")
        if not isinstance(module, nn.Module):
            raise ValueError(f"{name}[{key!r}] must be an nn.Module, got {type(module).__name__}")
    return nn.ModuleDict(items)


def check_count(heads: nn.ModuleDict, count: int, what: str) -> None:
    if len(heads) != count:
        raise ValueError(f"heads has {len(heads)} entries {list(heads)} but there are {count} {what}; "
                         "give one head per task")


class HardSharing(nn.Module):
    """Hard parameter sharing (Caruana 1997): one ``trunk`` for all tasks, one head per task.

    ``forward(x) = {task: heads[task](trunk(x))}``.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module] | Sequence[nn.Module],
                 tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(trunk, nn.Module):
            raise ValueError(f"trunk must be an nn.Module, got {type(trunk).__name__}")
        self.trunk, self.heads = trunk, named_modules(heads, "heads", tasks)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)  # (N, ...) shared representation
        return {t: head(h) for t, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def task_parameters(self, task: str | None = None) -> list[nn.Parameter]:
        """The parameters of one task's head, or of every head (``task=None``)."""
        if task is None:
            return list(self.heads.parameters())
        if task not in self.heads:
            raise ValueError(f"task must be one of {self.task_names} or None, got {task!r}")
        return list(self.heads[task].parameters())


class SoftSharing(nn.Module):
    """Soft parameter sharing (Duong et al. 2015): one network per task, parameters pulled together by
    :meth:`penalty` (article §2.3.2 ②). The networks must have identical parameter names and shapes.

    Add ``lam * model.penalty()`` to the loss; ``penalty()`` is the plain squared Euclidean distance summed over
    pairs of tasks, ``sum_name sum_{i<j} ||theta_i[name] - theta_j[name]||_F^2``: no 1/2, no mean over pairs.
    """

    def __init__(self, networks: Mapping[str, nn.Module] | Sequence[nn.Module],
                 tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        self.networks = named_modules(networks, "networks", tasks)
        first, *others = self.networks.items()
        ref = {n: p.shape for n, p in first[1].named_parameters()}
        if not ref:
            raise ValueError(f"networks[{first[0]!r}] has no parameters: soft sharing ties parameters together")
        for task, net in others:
            got = {n: p.shape for n, p in net.named_parameters()}
            for n in list(ref) + [n for n in got if n not in ref]:
                if n not in got or n not in ref:
                    where = task if n not in got else first[0]
                    raise ValueError(f"networks must have identical parameters: {n!r} is missing from "
                                     f"networks[{where!r}]")
                if got[n] != ref[n]:
                    raise ValueError(f"networks must have identical parameters: {n!r} has shape "
                                     f"{tuple(got[n])} in networks[{task!r}] but {tuple(ref[n])} in "
                                     f"networks[{first[0]!r}]")

    @property
    def task_names(self) -> list[str]:
        return list(self.networks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {t: net(x) for t, net in self.networks.items()}

    def penalty(self, names: Sequence[str] | None = None) -> Tensor:
        """``sum_{name} sum_{i<j} ||theta_i - theta_j||^2`` over parameter ``names`` (all when ``None``)."""
        params = [dict(net.named_parameters()) for net in self.networks.values()]
        names = list(params[0]) if names is None else list(names)
        unknown = [n for n in names if n not in params[0]]
        if unknown:
            raise ValueError(f"names must be parameter names of the networks, unknown: {unknown}")
        ref = next(iter(params[0].values()))
        zero = torch.zeros((), dtype=ref.dtype, device=ref.device)  # ()
        return sum((((params[i][n] - params[j][n]) ** 2).sum() for n in names  # ()
                    for i in range(len(params)) for j in range(i + 1, len(params))), zero)


class CrossStitch(nn.Module):
    """Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert 2016, eq. (1)).

    ``columns``: one sequence of ``L`` layers per task (``nn.Sequential`` works), all of the same length. After
    layer ``l`` of every column a cross-stitch unit mixes the columns, ``x~^i = sum_j alpha_l[i, j] x^j``, and
    the mixed activations feed layer ``l+1`` (after the last layer: the heads). ``alpha_l`` is one ``T x T``
    matrix per stitch (``channels=None``), or, with ``channels=(C_1, ..., C_L)``, one matrix per channel
    (dim 1 of the activations), the paper's per-channel ``alpha_AB``. ``init=(alpha_S, alpha_D)`` fills the
    diagonal and off-diagonal: the default ``(1.0, 0.0)`` is the identity (independent networks); the paper
    uses e.g. ``(0.9, 0.1)``.
    """

    def __init__(self, columns: Sequence[Sequence[nn.Module]], heads: Mapping[str, nn.Module] | Sequence[nn.Module],
                 init: tuple[float, float] = (1.0, 0.0), channels: Sequence[int] | None = None,
                 tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        self.heads = named_modules(heads, "heads", tasks)
        if isinstance(columns, nn.Module) and not isinstance(columns, nn.ModuleList) or not len(columns):
            raise ValueError("columns must be a sequence with one sequence of layers per task")
        check_count(self.heads, len(columns), "columns")
        depth = len(columns[0])
        for i, column in enumerate(columns):
            if len(column) != depth or depth == 0:
                raise ValueError(f"columns must all have the same positive number of layers: columns[0] has "
                                 f"{depth}, columns[{i}] has {len(column)}")
        self.columns = nn.ModuleList(nn.ModuleList(column) for column in columns)
        if channels is not None and len(channels) != depth:
            raise ValueError(f"channels must give one channel count per layer ({depth}), got {len(channels)}")
        t, (same, other) = len(columns), init
        eye = torch.eye(t)  # (T, T)
        unit = same * eye + other * (1 - eye)  # (T, T)
        shapes = [(t, t)] * depth if channels is None else [(t, t, c) for c in channels]
        self.alphas = nn.ParameterList(nn.Parameter(unit.reshape(t, t, *[1] * (len(s) - 2)).expand(s).clone())
                                       for s in shapes)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def stitch(self, alpha: Tensor, xs: Tensor) -> Tensor:
        """Mix stacked activations ``xs`` of shape ``(T, N, C, ...)`` with ``alpha`` ``(T, T)`` or ``(T, T, C)``."""
        if alpha.dim() == 2:
            return torch.einsum("ij,j...->i...", alpha.to(xs), xs)  # (T, N, C, ...)
        a = alpha.to(xs).reshape(*alpha.shape[:2], 1, alpha.shape[2], *[1] * (xs.dim() - 3))  # (T, T, 1, C, 1...)
        return (a * xs.unsqueeze(0)).sum(1)  # (T, N, C, ...)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        xs = [x] * len(self.columns)
        for layer, alpha in enumerate(self.alphas):
            out = [column[layer](h) for column, h in zip(self.columns, xs)]
            if len({o.shape for o in out}) != 1:
                raise ValueError(f"columns must give activations of one shape at layer {layer} to stitch them, "
                                 f"got {[tuple(o.shape) for o in out]}")
            xs = list(self.stitch(alpha, torch.stack(out)).unbind(0))  # T x (N, C, ...)
        return {t: head(h) for (t, head), h in zip(self.heads.items(), xs)}


class MMoE(nn.Module):
    """Multi-gate mixture-of-experts (Ma, Zhao, Yi, Chen, Hong & Chi 2018, eqs. (5)-(6)).

    ``y_k = h^k(f^k(x))`` with ``f^k(x) = sum_i g^k(x)_i f_i(x)`` and ``g^k(x) = softmax(W_gk x)``: one gate per
    task over the ``n`` ``experts`` (whose outputs share one shape). ``gates``: the input size ``d`` (each gate
    is then ``nn.Linear(d, n, bias=False)``, the paper's ``W_gk``) or one module per task giving ``n`` logits.
    Gates see ``x.flatten(1)``.
    """

    def __init__(self, experts: Sequence[nn.Module], gates: int | Mapping[str, nn.Module] | Sequence[nn.Module],
                 heads: Mapping[str, nn.Module] | Sequence[nn.Module], tasks: Sequence[str] | None = None) -> None:
        super().__init__()
        self.experts = nn.ModuleList(experts)
        if not len(self.experts):
            raise ValueError("experts must hold at least one nn.Module")
        self.heads = named_modules(heads, "heads", tasks)
        n = len(self.experts)
        if isinstance(gates, int) and not isinstance(gates, bool):
            if gates < 1:
                raise ValueError(f"gates must be a positive input size or one gate module per task, got {gates}")
            gates = {t: nn.Linear(gates, n, bias=False) for t in self.heads}
        self.gates = named_modules(gates, "gates", self.task_names if not isinstance(gates, Mapping) else None)
        if sorted(self.gates) != sorted(self.heads):
            raise ValueError(f"heads has tasks {list(self.heads)} but gates has {list(self.gates)}; give one head "
                             "and one gate per task")

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        experts = torch.stack([e(x) for e in self.experts], 1)  # (N, n, ...) f_i(x)
        flat = x.flatten(1)  # (N, d)
        out = {}
        for task, head in self.heads.items():
            g = F.softmax(self.gates[task](flat), -1)  # (N, n) g^k(x)
            if g.shape != experts.shape[:2]:
                raise ValueError(f"gates[{task!r}] must give {len(self.experts)} logits per example (one per "
                                 f"expert), got shape {tuple(g.shape)}")
            mixed = (g.reshape(*g.shape, *[1] * (experts.dim() - 2)) * experts).sum(1)  # (N, ...) f^k(x)
            out[task] = head(mixed)
        return out


def task_losses(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                loss_fns: Mapping[str, LossFn] | LossFn) -> Tensor:
    """``[loss_fns[t](outputs[t], targets[t]) for t in outputs]`` as a tensor of shape ``(T,)``.

    ``loss_fns`` is one callable for every task or a mapping task -> callable; each must return a scalar.
    Keys of ``targets`` and ``loss_fns`` that are not tasks of ``outputs`` are ignored.
    """
    losses = []
    for task, output in outputs.items():
        if task not in targets:
            raise ValueError(f"targets has no entry for task {task!r}; it has {list(targets)}")
        if isinstance(loss_fns, Mapping) and task not in loss_fns:
            raise ValueError(f"loss_fns has no entry for task {task!r}; it has {list(loss_fns)}")
        fn = loss_fns[task] if isinstance(loss_fns, Mapping) else loss_fns
        value = fn(output, targets[task])
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss_fns for task {task!r} must return a scalar (reduction='mean'), got {shape}")
        losses.append(value)
    return torch.stack(losses)  # (T,)


__all__ = ["CrossStitch", "HardSharing", "MMoE", "SoftSharing", "task_losses"]
