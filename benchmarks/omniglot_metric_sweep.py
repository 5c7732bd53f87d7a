"""How the full Omniglot budgets were chosen: a sweep of training ways, shots and lengths, run on a GPU.

Not a speed benchmark: each configuration is trained for about as many episodes as 45-60 minutes buy on
2 CPU cores, with accuracy measured along the way, so that the CPU full runs of
``python -m mapping.reproduce omniglot-metric`` could be given the configuration that learns fastest
per episode. Intermediate marks use 300 test episodes (5w1s and 20w1s; Lake's 400 trials for the
background set); the final mark of a 1200-split run is :func:`mapping.experiments.omniglot_metric.evaluate`
(1000 episodes of each setting). Every configuration runs in its own process, all at once::

    python benchmarks/omniglot_metric_sweep.py --all --device cuda --out sweep.jsonl

The stored sweep (``results/omniglot_metric_sweep_h200.jsonl``) ran on one NVIDIA H200 with torch
2.11.0+cu130 at commit 230a089, 14 processes sharing the GPU; it is exploration, not a result the book
claims. One configuration alone: ``python benchmarks/omniglot_metric_sweep.py OUT NAME METHOD SPLIT WAY
SHOT QUERY EPISODES HALVE_EVERY [JSON overrides] [device]``.
"""
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import torch

from mapping.experiments.omniglot_metric import MetricConfig, accuracy, build, evaluate, lake_error, load_split

CONFIGS = """\
p60w1 protonet vinyals 60 1 5 3800 1300
p30w5 protonet vinyals 30 5 5 4500 1500
p30w1 protonet vinyals 30 1 5 7500 2500
p20w1 protonet vinyals 20 1 5 11000 3700
p60w1h protonet vinyals 60 1 5 3800 800
m20w1 matching vinyals 20 1 5 11000 3700 {"matching_scale":10.0}
m20w1s20 matching vinyals 20 1 5 11000 3700 {"matching_scale":20.0}
m20w5 matching vinyals 20 5 5 6000 2000 {"matching_scale":10.0}
s20w1 siamese vinyals 20 1 5 11000 3700
s20w5 siamese vinyals 20 5 5 6000 2000
b60w1 protonet background 60 1 5 2900 1000
b30w1 protonet background 30 1 5 5800 2000
b20w1 protonet background 20 1 5 8700 2900
b30w5 protonet background 30 5 5 3500 1200"""


def sweep_one(out, name, method, split, way, shot, query, episodes, halve, extra="{}", dev="cuda"):
    way, shot, query, episodes, halve = map(int, (way, shot, query, episodes, halve))
    cfg = MetricConfig(method=method, split=split, train_way=way, train_shot=shot, train_query=query,
                       episodes=episodes, halve_every=halve, **json.loads(extra))
    data = load_split(split)
    torch.manual_seed(0)
    model = build(cfg).to(dev)
    sampler = data["train"].sampler(way, shot, query)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=halve, gamma=0.5)
    marks = sorted({episodes * i // 6 for i in range(1, 7)})
    train_t = 0.0

    def emit(rec):
        rec.update(name=name, config=asdict(cfg))
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")
    for ep in range(1, episodes + 1):
        t0 = time.perf_counter()
        model.train()
        loss = model.meta_loss(sampler.sample(1, g).to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_t += time.perf_counter() - t0
        if ep in marks:
            rec = {"episode": ep, "train_s": train_t, "loss": loss.item()}
            if split == "vinyals":
                for n, k in ((5, 1), (20, 1)):
                    a = accuracy(model, data["test"].sampler(n, k, 5), 300 if ep < episodes else 1000,
                                 torch.Generator().manual_seed(7 + n), dev)
                    rec[f"{n}w{k}s"] = (100 * a).mean().item()
            else:
                rec["lake20"] = lake_error(model, dev)
            emit(rec)
    if split == "vinyals":
        emit({"episode": episodes, "final": evaluate(model, cfg, data, dev), "train_s": train_t})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--all"]:
        args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, args["--out"], *line.split(), args.get("--device", "cuda")]
                                  if len(line.split()) == 9 else
                                  [sys.executable, __file__, args["--out"], *line.split(), "{}", args.get("--device", "cuda")],
                                  env=env) for line in CONFIGS.splitlines()]
        sys.exit(max(p.wait() for p in procs))
    sweep_one(*sys.argv[1:])
