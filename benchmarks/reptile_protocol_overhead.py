"""Reptile's meta-step before and after the learner protocol (issue 22), side by side in one process.

Before: ``theta - mean_i theta'_i`` assigned to each ``.grad`` by hand (what ``Reptile.meta_grad`` did). After:
``reptile.meta_loss(batch).backward()``, which hands the same tensors to autograd through
:class:`mapping.meta.chunked.Precomputed`. The sinusoid MLP (1-40-40-1), 25 tasks of 10 + 10 points, 5 inner SGD
steps, one torch thread, eager and ``compile=True``; interleaved rounds, the median reported.

    python benchmarks/reptile_protocol_overhead.py
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from mapping.data import Sinusoid
from mapping.meta import Reptile, reptile_direction
from mapping.nn import sinusoid_mlp


def steps(reptile: Reptile):
    """The two ways of taking one Reptile meta-step's gradient."""
    def by_hand(batch):
        x = torch.cat([batch.support_x, batch.query_x], 1)  # (tasks, 20, 1)
        y = torch.cat([batch.support_y, batch.query_y], 1)  # (tasks, 20, 1)
        params = reptile.params()
        adapted, _ = reptile.adapted(x, y)  # {name: (tasks, *shape)}
        direction = reptile_direction(params, adapted)
        for k, p in params.items():
            p.grad = -direction[k]

    def protocol(batch):
        for p in reptile.parameters():
            p.grad = None
        reptile.meta_loss(batch).backward()
    return {"before": by_hand, "after": protocol}


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batches = [Sinusoid.maml().sample(25, 10, 10, g) for _ in range(20)]
    for compile in (False, True):
        torch.manual_seed(0)
        reptile = Reptile(sinusoid_mlp(40), alpha=0.01, steps=5, loss_fn=F.mse_loss, execution="vmap",
                          compile=compile)
        ways = steps(reptile)
        for way in ways.values():  # warm-up, and compilation
            for batch in batches[:5]:
                way(batch)
        times = {name: [] for name in ways}
        for round_ in range(7):
            for name in (list(ways) if round_ % 2 == 0 else list(ways)[::-1]):
                tic = time.perf_counter()
                for _ in range(10):
                    for batch in batches:
                        ways[name](batch)
                times[name].append((time.perf_counter() - tic) / (10 * len(batches)) * 1e3)
        before, after = (statistics.median(times[n]) for n in ways)
        print(f"compile={compile}: before {before:.3f} ms/step, after {after:.3f} ms/step, "
              f"ratio {after / before:.3f}")


if __name__ == "__main__":
    main()
