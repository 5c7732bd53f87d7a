"""Multi-layer perceptron with a separable ``body`` and ``head`` (ANIL adapts only the head)."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """``sizes = (in, h1, ..., out)``: Linear-activation blocks, then a linear ``head``.

    MAML's sinusoid network is ``MLP((1, 40, 40, 1))`` with ReLU (Finn et al. 2017, §5.1).
    Parameter names are ``body.0.weight``, ..., ``head.weight``, ``head.bias``.
    """

    def __init__(self, sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"sizes must be at least two positive ints (in, ..., out), got {sizes}")
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(fan_in, fan_out), activation()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-2], sizes[-1])
        self.sizes = sizes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))  # (..., out)

    def head_names(self) -> list[str]:
        """Names of the head's parameters, as in ``named_parameters()``."""
        return [f"head.{n}" for n, _ in self.head.named_parameters()]


def sinusoid_mlp(hidden: int = 40, depth: int = 2) -> MLP:
    """The 1-40-40-1 ReLU network of MAML's sinusoid experiment (``hidden=64`` for Reptile's)."""
    return MLP((1,) + (hidden,) * depth + (1,))


__all__ = ["MLP", "sinusoid_mlp"]
