"""Multi-task toy data: the :class:`MultiTaskDataset` container, and GradNorm's toy regression.

:class:`MultiTaskDataset` holds inputs ``x (N, ...)`` and one target tensor per task; an item is
``(x[i], {task: target[i]})``, the dict of labels per task that LibMTL's ``Trainer`` expects (single
input, several tasks), and ``DataLoader``'s default collate batches the dict. :mod:`.multidigits` and
:mod:`.omniglot_multitask` build on it.

GradNorm's toy example (Chen, Badrinarayanan, Lee & Rabinovich 2018, ICML, §4 "A Toy Example"),
their eq. (3)::

    f_i(x) = sigma_i tanh((B + eps_i) x),   x in R^250,  f_i(x) in R^100,

"B and eps_i are constant matrices with their elements generated IID from N(0, 10) and N(0, 3.5),
respectively. Each task therefore shares information in B but also contains task-specific information
eps_i. The sigma_i are the key parameters within this problem; they are fixed scalars which set the
scales of the outputs f_i." Scales, as the paper gives them: "For T = 2, we choose the values
(sigma_0, sigma_1) = (1.0, 100.0)" (:data:`PAPER_SIGMAS`); "For T = 10, we sample the sigma_i from a
wide normal distribution", with no values given. For ten tasks we offer :data:`TEN_SIGMAS`, our choice:
ten log-spaced scales from 1 to 100 (``10 ** (2 i / 9)``), the range of the T = 2 case, evenly spread
over two orders of magnitude, so that the squared-loss scales ``sigma_i ** 2`` span four.

Choices the paper leaves open, made here:

* ``N(0, 10)`` and ``N(0, 3.5)`` are read as mean and *variance*, the usual notation: entry standard
  deviations ``sqrt(10) ~ 3.16`` and ``sqrt(3.5) ~ 1.87`` (``b_std``, ``eps_std``). The paper does not
  say; public reimplementations (e.g. brianlan/pytorch-grad-norm, LucasBoTang/GradNorm) read them as
  standard deviations, ``np.random.normal(scale=10)``: pass ``b_std=10, eps_std=3.5`` for theirs.
* Inputs are not specified: like brianlan/pytorch-grad-norm we draw ``x ~ U[-1, 1]^250`` and scale each
  to unit L2 norm (``normalise=True``), so that a row of ``(B + eps_i) x`` has standard deviation
  ``sqrt(10 + 3.5) ~ 3.7``: tanh saturates for most of them (``|f_i| > sigma_i / 2`` for about 88% of
  the outputs), not for all (with the standard-deviation reading, 10.6 and about 96%). Targets are not
  normalised: their scales *are* the experiment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..checks import check_int, is_real
from ..device import generator

PAPER_SIGMAS = (1.0, 100.0)  # Chen et al. 2018, §4: (sigma_0, sigma_1) for T = 2
TEN_SIGMAS = tuple(float(10 ** (2 * i / 9)) for i in range(10))  # our choice for T = 10: 1 ... 100, log-spaced


class MultiTaskDataset(Dataset):
    """Inputs ``x (N, ...)`` with targets ``targets[task] (N, ...)``; items are ``(x[i], {task: target[i]})``."""

    def __init__(self, x: Tensor, targets: Mapping[str, Tensor]) -> None:
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise ValueError(f"x must be a torch.Tensor with a leading example dimension, got {type(x).__name__}")
        if not targets:
            raise ValueError("targets must map at least one task name to a tensor")
        for task, y in targets.items():
            if not isinstance(y, Tensor) or y.dim() < 1 or len(y) != len(x):
                raise ValueError(f"targets[{task!r}] must be a torch.Tensor with {len(x)} rows (one per "
                                 f"example of x), got {tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        self.x = x
        self.targets = dict(targets)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.targets)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.x[i], {task: y[i] for task, y in self.targets.items()}


@dataclass(frozen=True)
class GradNormToy:
    """GradNorm's toy problem: the constants of eq. (3) and a train and a test set drawn from it.

    Targets of task ``task{i}`` are ``f_i(x)``, shape ``(N, outputs)``; :meth:`function` recomputes them.
    """

    B: Tensor  # (outputs, inputs), shared by all tasks
    epsilon: Tensor  # (T, outputs, inputs), one per task
    sigma: Tensor  # (T,), the output scales
    train: MultiTaskDataset  # x (N_train, inputs), targets task{i} (N_train, outputs)
    test: MultiTaskDataset  # x (N_test, inputs), targets task{i} (N_test, outputs)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.train.tasks

    def function(self, x: Tensor) -> Tensor:
        """All ``f_i(x)`` for ``x (N, inputs)``: shape ``(N, T, outputs)``."""
        return toy_function(x, self.B, self.epsilon, self.sigma)  # (N, T, outputs)


def toy_function(x: Tensor, B: Tensor, epsilon: Tensor, sigma: Tensor) -> Tensor:
    """Eq. (3), ``f_i(x) = sigma_i tanh((B + eps_i) x)``, for every task i: ``(N, T, outputs)``."""
    pre = torch.einsum("toi,ni->nto", B + epsilon, x)  # (N, T, outputs)
    return sigma[:, None] * torch.tanh(pre)  # (N, T, outputs)


def gradnorm_toy(sigmas: Sequence[float] = PAPER_SIGMAS, *, train: int = 10_000, test: int = 2_000, seed: int = 0,
                 inputs: int = 250, outputs: int = 100, b_std: float = math.sqrt(10.0),
                 eps_std: float = math.sqrt(3.5), normalise: bool = True) -> GradNormToy:
    """GradNorm's toy regression (Chen et al. 2018, §4, eq. 3) with ``T = len(sigmas)`` tasks.

    ``B``, the ``eps_i`` and the inputs are drawn from separate seeded streams, so the test inputs do
    not change with ``train``. See the module docstring for the choices the paper leaves open.
    """
    sigmas = tuple(sigmas) if isinstance(sigmas, (list, tuple)) else sigmas
    if not isinstance(sigmas, tuple) or not sigmas or not all(is_real(s) and 0 < s < math.inf for s in sigmas):
        raise ValueError(f"sigmas must be a non-empty list or tuple of finite positive scales, got {sigmas!r}")
    for name, value in (("train", train), ("test", test), ("inputs", inputs), ("outputs", outputs)):
        check_int(name, value, 1)
    check_int("seed", seed, 0)
    if not isinstance(normalise, bool):
        raise ValueError(f"normalise must be True or False, got {normalise!r}")
    for name, value in (("b_std", b_std), ("eps_std", eps_std)):
        if not (is_real(value) and 0 <= value < math.inf):
            raise ValueError(f"{name} must be a finite non-negative standard deviation, got {value!r}")
    T = len(sigmas)
    B = b_std * torch.randn(outputs, inputs, generator=generator(seed, 0))  # (outputs, inputs)
    epsilon = eps_std * torch.randn(T, outputs, inputs, generator=generator(seed, 1))  # (T, outputs, inputs)
    sigma = torch.tensor(sigmas, dtype=torch.float32)  # (T,)
    sets = []
    for stream, n in ((2, train), (3, test)):
        x = 2 * torch.rand(n, inputs, generator=generator(seed, stream)) - 1  # (n, inputs) in [-1, 1]
        if normalise:
            x = x / x.norm(dim=1, keepdim=True)  # (n, inputs) unit L2 norm
        y = toy_function(x, B, epsilon, sigma)  # (n, T, outputs)
        sets.append(MultiTaskDataset(x, {f"task{i}": y[:, i] for i in range(T)}))
    return GradNormToy(B, epsilon, sigma, *sets)


__all__ = ["GradNormToy", "MultiTaskDataset", "PAPER_SIGMAS", "TEN_SIGMAS", "gradnorm_toy", "toy_function"]
