"""One place that picks the device, seeds every random number generator and switches on mixed precision."""
from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else CPU. ``prefer`` (or ``MAPPING_DEVICE``) forces one, e.g. ``"cpu"``."""
    name = prefer or os.environ.get("MAPPING_DEVICE")
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={name!r} asks for CUDA, but torch.cuda.is_available() is False")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


AMP_DTYPES = (torch.bfloat16, torch.float16)


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16):
    """Mixed-precision context (Micikevicius et al. 2018): ``torch.autocast`` on CUDA when ``enabled``, else a
    context that changes nothing, so ``enabled=False`` runs exactly the float32 code.

    CUDA only: asking for it on another device raises ``ValueError`` (CPU autocast in bfloat16 is a
    different speed trade-off that this project does not offer as an option; tests still use
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` directly to run the same code path). ``bfloat16`` (the
    default) keeps float32's exponent range, so gradients need no loss scaling; that matters for MAML, whose
    inner-loop gradients are taken inside the meta-loss where a :func:`grad_scaler` cannot scale them.
    ``float16`` needs :func:`grad_scaler` around a plain ``loss.backward()``.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled (amp) must be a bool, got {enabled!r}")
    if dtype not in AMP_DTYPES:
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype!r}")
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ValueError(f"amp=True needs a CUDA device, got device={str(device)!r}; "
                         "use amp=False (float32) on the CPU")
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(f"dtype=torch.bfloat16 is not supported by {torch.cuda.get_device_name(device)}; "
                         "use dtype=torch.float16 with grad_scaler")
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device | str, enabled: bool,
                dtype: torch.dtype = torch.bfloat16) -> torch.amp.GradScaler:
    """Dynamic loss scaling (Micikevicius et al. 2018, §3.2) for ``float16`` autocast on CUDA; a pass-through
    (``enabled=False``: ``scale`` returns the loss, ``step`` calls ``optimizer.step()``) for bfloat16 or no amp.
    Use as ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()``."""
    with autocast(device, enabled, dtype):  # the same checks as autocast
        pass
    return torch.amp.GradScaler(torch.device(device).type, enabled=enabled and dtype == torch.float16)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a fresh CPU generator seeded with ``seed``.

    Task samplers take that generator explicitly, so a run's data does not depend on how many
    other random numbers the model code drew.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def generator(seed: int, stream: int) -> torch.Generator:
    """A ``torch.Generator`` for stream ``stream`` of ``seed``: independent streams, never shared across seeds
    (NumPy's ``SeedSequence((seed, stream))`` hashes the pair into the generator's seed)."""
    state = np.random.SeedSequence((seed, stream)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def device_name(device: torch.device | None = None) -> str:
    """A human-readable name of the hardware, for provenance: the GPU's name or the CPU model and cores."""
    device = device or get_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {model} ({cores} cores, {torch.get_num_threads()} torch threads)"


__all__ = ["AMP_DTYPES", "autocast", "device_name", "get_device", "grad_scaler", "seed_everything"]
