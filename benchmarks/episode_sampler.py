"""Is episode sampling ever the bottleneck? Time ``EpisodeSampler.sample`` against one training step.

Side by side in one process, on Omniglot-sized data (4800 classes x 20 drawings x 28 x 28, the 1200-character
split with rotations; random pixels, since only shapes matter for time): sampling a batch of episodes, and one
Prototypical-network training step (Conv-4, Adam) on such a batch. Prints a table and, last, one JSON line with
ms per batch for each and ``ratio`` = training step / sampling (how many times slower training is).

    python benchmarks/episode_sampler.py [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mapping.data import EpisodeSampler
from mapping.device import device_name, get_device
from mapping.meta import PrototypicalNetwork
from mapping.nn import Conv4

SETTINGS = {"5w1s15q x32 tasks": (5, 1, 15, 32), "20w5s15q x1": (20, 5, 15, 1), "60w5s5q x1": (60, 5, 5, 1)}


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="few repeats, for a smoke run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    images = torch.rand(4800, 20, 28, 28)  # (classes, drawings, 28, 28)
    generator = torch.Generator().manual_seed(0)
    model = PrototypicalNetwork(Conv4(bn="running")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    repeats = 3 if args.quick else 15
    rows = {}
    for name, (n, k, q, tasks) in SETTINGS.items():
        sampler = EpisodeSampler(images, n, k, q)
        batch = sampler.sample(tasks, generator).to(device)

        def step():
            loss = model.meta_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        step()  # warm-up
        rows[name] = {"sample_ms": median_ms(lambda: sampler.sample(tasks, generator), repeats),
                      "train_ms": median_ms(step, max(2, repeats // 3))}
    print(f"device: {device_name(device)}   torch {torch.__version__}")
    print(f"{'episodes':<20}{'sample ms':>12}{'train step ms':>16}{'ratio':>10}")
    for name, r in rows.items():
        r["ratio"] = r["train_ms"] / r["sample_ms"]
        print(f"{name:<20}{r['sample_ms']:>12.2f}{r['train_ms']:>16.1f}{r['ratio']:>10.0f}")
    print(json.dumps({"benchmark": "episode_sampler", "device": device_name(device), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "settings": rows}))


if __name__ == "__main__":
    main()
