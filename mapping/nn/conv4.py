"""The Conv-4 backbone of few-shot image classification, with an explicit batch-norm policy.

Four blocks of ``[3x3 conv, 64 filters, padding 1, batch norm, ReLU, 2x2 max-pool]`` map a
``1x28x28`` Omniglot image to ``64x1x1``, flattened to a 64-dim embedding (Vinyals et al. 2016, §4;
Snell et al. 2017, §3.1; Finn et al. 2017, §5.2). MAML's Omniglot network replaces the max-pool by
stride-2 convolutions (``28 -> 14 -> 7 -> 4 -> 2``) and averages the final ``64x2x2`` map over space
(Finn's ``reduce_mean`` in ``forward_conv``): ``strided=True``.

Batch-norm policy (``bn``), the one choice that changes what a "few-shot" prediction depends on:

* ``"batch"``: always normalise with the statistics of the current call, in training and evaluation
  alike; no running statistics exist. This is the *transductive* setting of MAML's code (TensorFlow
  ``batch_norm`` with ``is_training`` left at True): the prediction for one query depends on the others
  in the same call. It keeps no state, so the module is a pure function of its parameters and works through
  :func:`torch.func.functional_call` inside :func:`torch.func.vmap` over tasks, where each task gets its
  own statistics (``F.batch_norm(x, None, None, weight, bias, training=True)``). Called directly on
  ``(tasks, shots, ...)`` the statistics are pooled over all tasks in the call.
* ``"running"``: :class:`torch.nn.BatchNorm2d`: batch statistics in ``train()`` mode (updating running
  averages in place), running averages in ``eval()`` mode, as in the ProtoNets code. The in-place update
  makes it unusable under ``vmap`` in training mode.
* ``"none"``: no normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_POLICIES = ("batch", "running", "none")


class BatchStatNorm2d(nn.Module):
    """Batch norm that always uses the current batch's statistics and keeps no running averages.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` with mean and (biased) variance over
    ``(batch, H, W)`` per channel (Ioffe & Szegedy 2015, Algorithm 1); train and eval modes agree.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)  # (batch, C, H, W)


def norm_layer(channels: int, bn: str) -> nn.Module:
    """The normalisation of one block under the policy ``bn`` (see the module docstring)."""
    if bn == "batch":
        return BatchStatNorm2d(channels)
    if bn == "running":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvBlock(nn.Module):
    """``3x3 conv (padding 1) -> norm -> ReLU -> 2x2 max-pool``, or a stride-2 conv and no pool."""

    def __init__(self, in_channels: int, out_channels: int, *, bn: str, strided: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2 if strided else 1, padding=1)
        self.norm = norm_layer(out_channels, bn)
        self.pool = nn.Identity() if strided else nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))  # (batch, out_channels, H', W')


def _spatial_out(size: int, strided: bool, blocks: int) -> int:
    for _ in range(blocks):
        size = (size + 1) // 2 if strided else size // 2  # stride-2 conv, padding 1: ceil; max-pool: floor
    return size


class Conv4(nn.Module):
    """Conv-4 embedding ``(..., C, H, W) -> (..., out_dim)``, optionally followed by a linear ``head``.

    ``out_features=None`` returns the embedding (``hidden`` = 64 dims on 28x28 input); ``out_features=n_way``
    adds ``head = Linear(embedding_dim, n_way)`` for MAML/ANIL (``head_names()``). ``hidden`` is the number of
    filters per block (64 in the papers). Parameter names: ``body.<i>.conv.weight``, ``body.<i>.norm.weight``,
    ..., ``head.weight``. Any leading dims of the input are flattened for the convolutions and restored.
    """

    def __init__(self, out_features: int | None = None, *, hidden: int = 64, bn: str = "batch",
                 strided: bool = False, in_channels: int = 1, image_size: int = 28, blocks: int = 4) -> None:
        super().__init__()
        if bn not in BN_POLICIES:
            raise ValueError(f"bn must be one of {BN_POLICIES} (see mapping.nn.conv4), got {bn!r}")
        for name, value in (("hidden", hidden), ("in_channels", in_channels), ("image_size", image_size),
                            ("blocks", blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if out_features is not None and (isinstance(out_features, bool) or not isinstance(out_features, int)
                                         or out_features < 1):
            raise ValueError(f"out_features must be None (embedding only) or a positive int, got {out_features!r}")
        side = _spatial_out(image_size, strided, blocks)
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {blocks} max-pooling blocks")
        widths = (in_channels,) + (hidden,) * blocks
        self.body = nn.Sequential(*(ConvBlock(a, b, bn=bn, strided=strided) for a, b in zip(widths, widths[1:])))
        self.embedding_dim = hidden if strided else hidden * side * side
        self.head = None if out_features is None else nn.Linear(self.embedding_dim, out_features)
        self.out_dim = self.embedding_dim if out_features is None else out_features
        self.bn, self.strided, self.hidden = bn, strided, hidden
        self.input_shape = (in_channels, image_size, image_size)

    def extra_repr(self) -> str:
        return f"bn={self.bn!r}, strided={self.strided}, input_shape={self.input_shape}, out_dim={self.out_dim}"

    def embed(self, x: Tensor) -> Tensor:
        """The embedding before the head: ``(..., C, H, W) -> (..., embedding_dim)``."""
        if not isinstance(x, Tensor) or x.dim() < 3 or tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(f"x must be a tensor of shape (..., {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(getattr(x, 'shape', ()))}")
        lead = x.shape[:-3]
        h = self.body(x.reshape(-1, *self.input_shape))  # (batch, hidden, side, side)
        h = h.mean(dim=(-2, -1)) if self.strided else h.flatten(1)  # (batch, embedding_dim)
        return h.reshape(*lead, self.embedding_dim)  # (..., embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        z = self.embed(x)  # (..., embedding_dim)
        return z if self.head is None else self.head(z)  # (..., out_dim)

    def head_names(self) -> list[str]:
        """Names of the head's parameters, as in ``named_parameters()`` (ANIL's inner-loop parameters)."""
        if self.head is None:
            raise ValueError("this Conv4 has no head; build it with out_features=n_way for MAML/ANIL")
        return [f"head.{n}" for n, _ in self.head.named_parameters()]


__all__ = ["BN_POLICIES", "BatchStatNorm2d", "ConvBlock", "Conv4"]
