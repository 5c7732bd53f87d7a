"""Normalisation from primitive operations, so that meta-gradients through it are exact under ``vmap``.

Differentiating through :func:`torch.func.grad` of torch's fused normalisation kernels
(``F.layer_norm``, ``F.batch_norm`` with batch statistics, ``F.instance_norm``) inside :func:`torch.func.vmap`
gives wrong second-order gradients (measured on torch 2.13: relative errors of 6e-4 to 2e-2 in MAML's
meta-gradient, silently). The same normalisation written from ``mean``, a biased variance and ``rsqrt``
(Ioffe & Szegedy 2015, Algorithm 1; Ba et al. 2016, eq. 4; Ulyanov et al. 2016, eq. 4) is exact.
:class:`primitive_norms` is a :class:`~torch.overrides.TorchFunctionMode` that routes those functional
calls (and so every ``nn.LayerNorm``, ``nn.InstanceNorm*``, ``nn.BatchNorm*`` and
:class:`~mapping.nn.BatchStatNorm2d` inside a user's unchanged model) to the functions below while a
vmapped meta-loss runs.

Running statistics cannot be updated from inside ``vmap`` (one in-place update per task):
:func:`check_vmappable` names the module and the ways out before the computation starts.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


def _standardise(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over ``dims``, with the biased variance."""
    mean = x.mean(dims, keepdim=True)  # x's shape with 1 on dims
    centred = x - mean  # x's shape
    var = centred.pow(2).mean(dims, keepdim=True)  # x's shape with 1 on dims
    return centred * torch.rsqrt(var + eps)  # x's shape


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, shape: Sequence[int]) -> Tensor:
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (1, -1) + (1,) * (x.dim() - 2)  # broadcast a (C,) vector over (N, C, *spatial)


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``F.layer_norm`` from primitives (Ba et al. 2016, eq. 4): statistics over the last dims."""
    dims = tuple(range(-len(normalized_shape), 0))
    y = _standardise(input, dims, eps)  # input's shape
    return _affine(y, weight, bias, tuple(normalized_shape))


def _running_stats_error(name: str) -> ValueError:
    return ValueError(f"{name} was asked to update running statistics inside a vmapped meta-loss, which cannot "
                      "update a buffer once per task. Put the module in eval() mode, use batch statistics "
                      "only (track_running_stats=False, or Conv4(bn='batch')), or pass execution='loop'")


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float | None = 0.1, eps: float = 1e-5) -> Tensor:
    """``F.batch_norm`` from primitives (Ioffe & Szegedy 2015, Algorithm 1) without the in-place update."""
    shape = _channel_shape(input)
    if training:
        if running_mean is not None or running_var is not None:
            raise _running_stats_error("F.batch_norm")
        y = _standardise(input, (0,) + tuple(range(2, input.dim())), eps)  # (N, C, *spatial)
    else:
        y = (input - running_mean.reshape(shape)) * torch.rsqrt(running_var.reshape(shape) + eps)  # (N, C, *spatial)
    return _affine(y, weight, bias, shape)


def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``F.instance_norm`` from primitives (Ulyanov et al. 2016, eq. 4): statistics per sample and channel."""
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    if running_mean is not None or running_var is not None:
        raise _running_stats_error("F.instance_norm")
    y = _standardise(input, tuple(range(2, input.dim())), eps)  # (N, C, *spatial)
    return _affine(y, weight, bias, _channel_shape(input))


# The kernels measured wrong (tests/test_norms.py keeps a test per route that fails once torch is fixed);
# F.group_norm, F.rms_norm, F.local_response_norm and batch norm with stored statistics are exact already.
ROUTES = {F.layer_norm: layer_norm, F.batch_norm: batch_norm, F.instance_norm: instance_norm}


class primitive_norms(TorchFunctionMode):
    """While active, ``F.layer_norm``, ``F.batch_norm`` and ``F.instance_norm`` run as the primitive-op
    functions of this module (every other call is unchanged).

    >>> import torch, torch.nn.functional as F
    >>> from torch.func import vmap
    >>> norm = lambda x: F.layer_norm(x, x.shape[-1:])
    >>> with primitive_norms():  # exact 2nd derivatives
    ...     out = vmap(norm)(torch.randn(3, 4, 5))
    >>> out.shape
    torch.Size([3, 4, 5])
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        route = ROUTES.get(func)
        return (route or func)(*args, **(kwargs or {}))


def updates_running_stats(module: nn.Module) -> bool:
    """Whether ``module`` updates running statistics when called (batch/instance norm in ``train()``)."""
    norm = isinstance(module, nn.modules.batchnorm._NormBase)
    return norm and module.training and module.track_running_stats and module.running_mean is not None


def check_vmappable(module: nn.Module) -> None:
    """Raise ``ValueError`` naming the first submodule that would update running statistics under ``vmap``."""
    for name, sub in module.named_modules():
        if updates_running_stats(sub):
            where = name or type(module).__name__
            raise ValueError(
                f"module {where!r} ({type(sub).__name__}) is in train() mode with running statistics, which a "
                "vmapped meta-loss cannot update once per task. Three ways out: call .eval() on it (normalise "
                "with the stored statistics), use batch statistics only (track_running_stats=False, or "
                "Conv4(bn='batch')), or pass execution='loop' (running statistics updated task by task, "
                "as learn2learn does)")


__all__ = ["ROUTES", "batch_norm", "check_vmappable", "instance_norm", "layer_norm", "primitive_norms",
           "updates_running_stats"]
