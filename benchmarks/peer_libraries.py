"""Does each peer library of chapter 7 install, import and run on this stack (Python 3.11, torch 2.13.0 CPU)?

For each library, in its own fresh virtual environment under a temporary folder:

1. ``python -m venv``; ``pip install torch==2.13.0`` (the CPU wheel that pip takes from local disk);
2. ``pip install <pip name>`` with a constraints file pinning ``torch==2.13.0``, so the resolver cannot silently
   swap torch: a resolution conflict is a failed install, recorded with pip's last error line;
3. the versions pip resolved (``importlib.metadata``: the library, torch, numpy; the venv's python);
4. ``import <module>``;
5. a smoke use of 5-15 lines on CPU that exercises the part chapter 7 compares (MAML clone/adapt/backward,
   a differentiable inner step, a ``params=`` forward, a prototypical forward, a Jacobian-descent step, ...),
   which must print ``SMOKE_OK``.

Each step runs in a subprocess with a timeout; a failure stops that library's later steps, never the other
libraries. TLlib (``tllib``) is not on PyPI per its README (only TestPyPI): its PyPI install is tried and
recorded, then TestPyPI, then, with ``--tllib-source DIR`` (a source tree of thuml/Transfer-Learning-Library),
an install from that tree, so that its runtime behaviour on current NumPy can still be checked.

``python benchmarks/peer_libraries.py [--only NAME ...] [--keep] [--out results]`` writes
``<out>/peer_libraries.json``: per library ``install_ok``, ``import_ok``, ``smoke_ok``, ``version``, ``error``
(the last meaningful error line of the first failed step), the versions and seconds per step.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mapping import results

__all__ = ["LIBRARIES", "SMOKE", "last_error_line", "summarise", "parse_versions", "parse", "main"]

TORCH = "2.13.0"
TESTPYPI = "https://test.pypi.org/simple/"
# name -> (pip requirement, import module). torchjd >= 0.18's UPGrad needs its quadprog projector (an extra):
# with a plain ``pip install torchjd`` the smoke's ``UPGrad()`` raises ImportError ("QuadprogProjector requires
# ['numpy', 'qpsolvers', 'quadprog']"), so the extra its docs name is installed.
LIBRARIES = {"learn2learn": ("learn2learn", "learn2learn"), "higher": ("higher", "higher"),
             "torchmeta": ("torchmeta", "torchmeta"), "torchopt": ("torchopt", "torchopt"),
             "easyfsl": ("easyfsl", "easyfsl"), "LibMTL": ("LibMTL", "LibMTL"),
             "torchjd": ("torchjd[quadprog-projector]", "torchjd"), "tllib": ("tllib", "tllib")}
_HEAD = ("import torch, torch.nn as nn, torch.nn.functional as F\ntorch.manual_seed(0)\n"
         "x, y = torch.randn(8, 2), torch.randn(8, 1)  # (8, 2), (8, 1)\n")
SMOKE = {
    "learn2learn": """import learn2learn as l2l
maml = l2l.algorithms.MAML(nn.Linear(2, 1), lr=0.1)
learner = maml.clone()
learner.adapt(F.mse_loss(learner(x), y))  # one differentiable SGD step
F.mse_loss(learner(x), y).backward()
assert maml.module.weight.grad is not None and torch.isfinite(maml.module.weight.grad).all()
""",
    "higher": """import higher
model = nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with higher.innerloop_ctx(model, opt, copy_initial_weights=False) as (fmodel, diffopt):
    diffopt.step(F.mse_loss(fmodel(x), y))  # one differentiable SGD step
    F.mse_loss(fmodel(x), y).backward()
assert model.weight.grad is not None and torch.isfinite(model.weight.grad).all()
""",
    "torchmeta": """from collections import OrderedDict
from torchmeta.modules import MetaLinear
m = MetaLinear(2, 1)
params = OrderedDict((k, 2 * v) for k, v in m.named_parameters())
out = m(x, params=params)  # (8, 1)
assert torch.allclose(out, x @ params["weight"].T + params["bias"])
out.sum().backward()
assert m.weight.grad is not None
""",
    "torchopt": """import torchopt
net = nn.Linear(2, 1)
theta = list(net.parameters())  # the leaves the meta-gradient must reach
opt = torchopt.MetaSGD(net, lr=0.1)
opt.step(F.mse_loss(net(x), y))  # one differentiable SGD step
F.mse_loss(net(x), y).backward()
assert theta[0].grad is not None and torch.isfinite(theta[0].grad).all()
""",
    "easyfsl": """from easyfsl.methods import PrototypicalNetworks
backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 8))
model = PrototypicalNetworks(backbone)
sx, sy = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])  # (6, 4), (6,)
model.process_support_set(sx, sy)
scores = model(torch.randn(5, 4))  # (5, 3)
assert scores.shape == (5, 3)
F.cross_entropy(scores, torch.tensor([0, 1, 2, 0, 1])).backward()
assert backbone[1].weight.grad is not None
""",
    "LibMTL": """from LibMTL.weighting import EW
from LibMTL.architecture import HPS
from LibMTL.weighting.abstract_weighting import AbsWeighting
from LibMTL.architecture.abstract_arch import AbsArchitecture
assert issubclass(EW, AbsWeighting) and issubclass(HPS, AbsArchitecture)
w, lin = EW(), nn.Linear(2, 2)
w.task_num, w.device = 2, torch.device("cpu")
w.backward(((lin(x) - 1) ** 2).mean(0))  # (2,) task losses, equal weights
assert lin.weight.grad is not None
""",
    "torchjd": """import inspect
from torchjd.aggregation import UPGrad
from torchjd.autojac import backward
lin = nn.Linear(2, 2)
out = lin(x)  # (8, 2)
losses = [F.mse_loss(out[:, 0:1], y), F.mse_loss(out[:, 1:2], -y)]
if "aggregator" in inspect.signature(backward).parameters:  # torchjd <= 0.8: backward(tensors, aggregator)
    backward(losses, UPGrad())
else:  # newer: Jacobians into .jac, then jac_to_grad
    from torchjd.autojac import jac_to_grad
    backward(losses)
    jac_to_grad(list(lin.parameters()), aggregator=UPGrad())
assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
""",
    "tllib": """from tllib.alignment.dann import DomainAdversarialLoss
from tllib.modules.grl import WarmStartGradientReverseLayer
disc = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid())
loss_fn = DomainAdversarialLoss(disc)
feat = nn.Linear(2, 2)
loss = loss_fn(feat(x), feat(-x))  # DANN loss on source and target features
loss.backward()
grl = WarmStartGradientReverseLayer(auto_step=True)
grl(feat(x)).sum().backward()  # the GRL's coefficient uses np.float
assert feat.weight.grad is not None
""",
}
_TAIL = "print('SMOKE_OK')\n"
_VERSIONS = """import importlib.metadata as m, json, platform, sys
def v(d):
    try:
        return m.version(d)
    except m.PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), "torch": v("torch"), "numpy": v("numpy"),
                  "torchvision": v("torchvision"), "version": v(sys.argv[1])}))
"""
_NOISE = re.compile(r"^(note:|hint:|\[end of output\]|\[notice\]|╰─>|WARNING:|error: subprocess-exited|"
                    r"error: metadata-generation-failed|error: resolution-too-deep|[|│ ]*$)")
# pip's wrappers around a build failure: the cause is the compiler's or setup.py's line inside the output
_GENERIC = re.compile(r"^(ERROR: Could not build wheels|ERROR: Failed building wheel|ERROR: Failed to build|"
                      r"× |error: command .* failed with exit code|Failed to build|ERROR: Command errored out)")
_ERROR = re.compile(r"(Error|error:|ERROR|Exception|No matching distribution|Could not|conflict|Traceback|"
                    r"No such file|fatal)")


def last_error_line(stderr: str) -> str:
    """The last line of ``stderr`` that says what went wrong, skipping pip's generic notes and hints.

    A resolution conflict gives its first clashing requirements (``The user requested torch==2.13.0;
    torchmeta 1.8.0 depends on torch<1.10.0 and >=1.4.0``), or without them pip's "Cannot install" line in short;
    a failed C build its compiler's ``fatal error:`` line. Otherwise the last line matching an error pattern (``...Error: ...``, ``ERROR: ...``, ``error: ...``)
    that is not one of pip's notes or build-failure wrappers (then a wrapper line); else the last non-blank
    line; ``""`` for blank output.
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if "The conflict is caused by:" in lines:  # a resolution conflict: the requirements that clash
        cause = lines[lines.index("The conflict is caused by:") + 1:]
        return "; ".join(ln for ln in cause[:3] if "depends on" in ln or "requested" in ln)[:400]
    for ln in lines:  # a C compiler's fatal error inside a failed wheel build says more than pip's wrapper
        if "fatal error:" in ln:
            return ln[:400]
    for ln in lines:  # "Cannot install x==1.1.0, ..., x==1.8.0 because these package versions have conflicting ..."
        releases = re.findall(r"([\w.-]+)==([\w.]+)", ln) if ln.startswith("ERROR: Cannot install") else []
        if releases and "conflicting dependencies" in ln:
            return (f"ERROR: Cannot install {releases[0][0]} {releases[0][1]} to {releases[-1][1]} ({len(releases)} "
                    "releases): conflicting dependencies")
    useful = [ln for ln in lines if not _NOISE.match(ln)]
    for pool in ([ln for ln in useful if not _GENERIC.match(ln)], useful):
        for ln in reversed(pool):
            if _ERROR.search(ln):
                return ln[:400]
    return (useful or lines or [""])[-1][:400]


def summarise(steps: dict[str, dict]) -> dict:
    """Fold the step outcomes of one library into the record the book reads.

    ``steps`` maps a step name (``venv``, ``torch``, ``install``, ``versions``, ``import``, ``smoke``; extra
    install routes are named ``install:<route>``) to ``{"ok": bool, "seconds": float, "error": str}``.
    ``install_ok``: the last install route ran and succeeded; ``error``: the error line of the first failed
    step that decided the outcome (a failed route followed by a working one keeps its line in ``routes``).
    """
    if not isinstance(steps, dict) or not steps:
        raise ValueError("steps must be a non-empty dict 'step name' -> {'ok', 'seconds', 'error'}")
    routes = {k: v for k, v in steps.items() if k == "install" or k.startswith("install:")}
    last_route = list(routes.values())[-1] if routes else None
    setup_ok = all(steps.get(k, {}).get("ok", False) for k in ("venv", "torch"))
    install_ok = bool(setup_ok and last_route and last_route["ok"])
    import_ok = bool(install_ok and steps.get("import", {}).get("ok"))
    smoke_ok = bool(import_ok and steps.get("smoke", {}).get("ok"))
    decisive = [k for k in ("venv", "torch") if k in steps] + ([list(routes)[-1]] if routes else []) + \
        [k for k in ("import", "smoke") if k in steps]
    failed = next((k for k in decisive if not steps[k]["ok"]), None)
    return {"install_ok": install_ok, "import_ok": import_ok, "smoke_ok": smoke_ok,
            "failed_step": failed, "error": steps[failed]["error"] if failed else "",
            "routes": {k: {"ok": v["ok"], "error": v["error"]} for k, v in routes.items()},
            "log_tail": steps[failed].get("log_tail", []) if failed else [],
            "seconds": {k: round(v["seconds"], 2) for k, v in steps.items()}}


def parse_versions(stdout: str) -> dict:
    """The JSON line printed by the version probe (last line of ``stdout``); empty values when absent."""
    for ln in reversed(stdout.strip().splitlines()):
        try:
            found = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(found, dict):
            return found
    return {"python": None, "torch": None, "numpy": None, "version": None}


def _run(cmd: list[str], timeout: float, cwd: Path, marker: str | None = None) -> dict:
    """Run one step; ok when it exits 0 within ``timeout`` (and prints ``marker`` when given)."""
    began = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
        ok = p.returncode == 0 and (marker is None or marker in p.stdout)
        error = "" if ok else last_error_line(p.stderr or p.stdout) or f"exit status {p.returncode}"
        out, tail = p.stdout, [] if ok else (p.stderr or p.stdout).strip().splitlines()[-15:]
    except subprocess.TimeoutExpired:
        ok, error, out, tail = False, f"timed out after {timeout:.0f} s", "", []
    return {"ok": ok, "seconds": time.perf_counter() - began, "error": error, "stdout": out, "log_tail": tail}


def install_routes(name: str, pip_name: str, tllib_source: str | None) -> list[tuple[str, list[str]]]:
    """(step name, pip arguments) of each install route to try, in order, until one works."""
    routes = [("install", [pip_name])]
    if name == "tllib":
        routes.append(("install:testpypi", ["--extra-index-url", TESTPYPI, "--timeout", "30", "--retries", "1",
                                            pip_name]))
        if tllib_source:
            routes.append(("install:source", [str(Path(tllib_source).resolve())]))
    return routes


def check_library(name: str, root: Path, args: argparse.Namespace) -> dict:
    """All steps for one library in a fresh venv under ``root``; the venv is removed unless ``--keep``."""
    pip_name, module = LIBRARIES[name]
    venv = root / f"venv-{name}"
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
    constraints = root / "constraints.txt"
    constraints.write_text(f"torch=={TORCH}\n")
    steps = {"venv": _run([sys.executable, "-m", "venv", str(venv)], 300, root)}
    if steps["venv"]["ok"]:
        steps["torch"] = _run(pip + [f"torch=={TORCH}"], args.install_timeout, root)
    if steps.get("torch", {}).get("ok"):
        for step, extra in install_routes(name, pip_name, args.tllib_source):
            steps[step] = _run(pip + ["-c", str(constraints)] + extra, args.install_timeout, root)
            if steps[step]["ok"]:
                break
    versions = {}
    if steps.get("venv", {}).get("ok"):
        probe = _run([py, "-c", _VERSIONS, pip_name.split("[")[0]], 120, root)
        versions = parse_versions(probe["stdout"])
    if summarise(steps)["install_ok"]:
        steps["import"] = _run([py, "-c", f"import {module}"], args.step_timeout, root)
    if steps.get("import", {}).get("ok"):
        steps["smoke"] = _run([py, "-c", _HEAD + SMOKE[name] + _TAIL], args.step_timeout, root, "SMOKE_OK")
    record = summarise(steps)
    record.update(pip_name=pip_name, module=module, version=versions.get("version"),
                  python=versions.get("python"), torch=versions.get("torch"), numpy=versions.get("numpy"),
                  torchvision=versions.get("torchvision"))
    if not args.keep:
        shutil.rmtree(venv, ignore_errors=True)
    return record


def table(records: dict[str, dict]) -> str:
    """One line per library: version, install/import/smoke, total seconds, error."""
    yes = {True: "yes", False: "no"}
    rows = [f"{'library':12} {'version':9} {'install':7} {'import':6} {'smoke':5} {'numpy':7} {'s':>6}  error"]
    for name, r in records.items():
        rows.append(f"{name:12} {str(r['version']):9} {yes[r['install_ok']]:7} {yes[r['import_ok']]:6} "
                    f"{yes[r['smoke_ok']]:5} {str(r['numpy']):7} {sum(r['seconds'].values()):6.0f}  "
                    f"{r['error'][:90]}")
    return "\n".join(rows)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help=f"subset of {list(LIBRARIES)}")
    parser.add_argument("--keep", action="store_true", help="keep the virtual environments (prints where)")
    parser.add_argument("--out", default=None, help="also write <out>/peer_libraries.json with provenance")
    parser.add_argument("--name", default="peer_libraries", help="record name")
    parser.add_argument("--install-timeout", type=float, default=600.0, help="seconds per pip install")
    parser.add_argument("--step-timeout", type=float, default=300.0, help="seconds for import and smoke")
    parser.add_argument("--tllib-source", default=None, help="source tree of thuml/Transfer-Learning-Library "
                        "to install tllib from when PyPI and TestPyPI fail")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(LIBRARIES))
    if unknown:
        raise ValueError(f"--only takes names from {list(LIBRARIES)}, got unknown {unknown}")
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    began = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="peer_libraries_"))
    records = {}
    for name in args.only or LIBRARIES:
        records[name] = check_library(name, root, args)
        print(f"{name}: install {records[name]['install_ok']}, import {records[name]['import_ok']}, smoke "
              f"{records[name]['smoke_ok']} {records[name]['error'][:120]}", file=sys.stderr, flush=True)
    if args.keep:
        print(f"venvs kept under {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(table(records))
    metrics = {f"{n}/{k}": int(r[k]) for n, r in records.items() for k in ("install_ok", "import_ok", "smoke_ok")}
    metrics.update({f"{n}/seconds/{s}": t for n, r in records.items() for s, t in r["seconds"].items()})
    record = results.provenance(args.name, command="python benchmarks/peer_libraries.py "
                                + " ".join(argv if argv is not None else sys.argv[1:]),
                                mode="full", seed=0, device=torch.device("cpu"))
    record.update(metrics=metrics, libraries=records, wall_seconds=time.perf_counter() - began,
                  config={"torch_pin": TORCH, "constraint": f"torch=={TORCH}", "install_timeout_s":
                          args.install_timeout, "step_timeout_s": args.step_timeout, "smoke": SMOKE,
                          "smoke_prelude": _HEAD, "tllib_source": args.tllib_source, "cpu_count": os.cpu_count()})
    if args.out:
        print(f"wrote {results.write(record, args.out)}", file=sys.stderr)
    return record


if __name__ == "__main__":
    main()
