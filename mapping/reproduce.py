"""Full-scale runs that CI cannot afford, written to ``results/<name>.json`` with their provenance.

    python -m mapping.reproduce sinusoid                 # the MAML paper's setup: 70,000 meta-iterations
    python -m mapping.reproduce sinusoid --mode quick    # the book's budget, for a check
    python -m mapping.reproduce omniglot-metric          # ProtoNets, Matching and Siamese networks on Omniglot
    python -m mapping.reproduce omniglot-metric --methods siamese --episodes 9000 --halve-every 3000 \
        --name omniglot_metric_siamese                  # one method with a longer budget, in its own record
    python -m mapping.reproduce transfer                 # DANN on the moons, digits adaptation, Omniglot transfer
    python -m mapping.reproduce background               # chapter 1: data dependence, domain shift, a new alphabet
    python -m mapping.reproduce combine                  # ProtoNets from a random, a transferred and a multi-task start
    python -m mapping.reproduce omniglot-maml --jobs 2 --threads 1   # MAML, first-order MAML, ANIL: 5-way 1-shot
    python -m mapping.reproduce omniglot-maml --setting paper --device cuda   # Finn et al.'s 60,000 iterations
    python -m mapping.reproduce omniglot-mann             # a memory-augmented network against an LSTM
    python -m mapping.reproduce recognizer --model recognizer.pt   # chapter 5: a one-shot recognizer, saved
    python -m mapping.reproduce multitask                # MultiDigits (every MTL method, conv and MLP trunks, 5 seeds) and GradNorm's toy

Interrupted runs resume from checkpoints in ``$MAPPING_CACHE/checkpoints``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable

import torch

from . import budget, results
from .device import get_device, seed_everything
from .paths import cache_dir


def sinusoid(args: argparse.Namespace) -> dict:
    """Sinusoid regression (Finn et al. 2017, §5.1): MAML, first-order MAML, Reptile, Meta-SGD, ANIL and a
    pretrained baseline, fine-tuned on held-out tasks."""
    from .experiments.sinusoid import SinusoidConfig, run
    from .results import config_dict
    overrides = {"seed": args.seed, **({"compile": False} if args.eager else {})}
    if args.methods:
        overrides["methods"] = tuple(args.methods)
    config = SinusoidConfig.for_mode(args.mode, **overrides)
    metrics, _, _ = run(config, args.device, cache_dir("checkpoints") if args.resume else None, progress=None,
                        jobs=args.jobs, threads=args.threads)
    return {"metrics": metrics, "config": {**config_dict(config), "jobs": args.jobs,
                                           "threads_per_job": args.threads or torch.get_num_threads()}}


def omniglot_metric(args: argparse.Namespace) -> dict:
    """Prototypical, Matching and Siamese networks on Omniglot, 5- and 20-way, 1- and 5-shot."""
    from dataclasses import asdict

    from .experiments.omniglot_metric import full_configs, run
    configs = [c for c in full_configs(args.mode) if not args.methods or c.method in args.methods]
    overrides = {k: v for k, v in (("episodes", args.episodes), ("halve_every", args.halve_every)) if v is not None}
    configs = [dataclasses.replace(c, seed=args.seed, amp=args.amp, **overrides) for c in configs]
    metrics = run(configs, args.device, cache_dir("checkpoints") if args.resume else None, progress=None,
                  jobs=args.jobs, threads=args.threads)
    return {"metrics": metrics, "config": {"runs": [asdict(c) for c in configs], "jobs": args.jobs,
                                           "threads_per_job": args.threads or torch.get_num_threads()}}


def omniglot_maml(args: argparse.Namespace) -> dict:
    """MAML, first-order MAML and ANIL (``--methods`` also takes metasgd and reptile) on Omniglot, 5-way 1-shot on
    the CPU budget, or Finn et al.'s four settings at 60,000 iterations with ``--setting paper``."""
    from dataclasses import asdict

    from .experiments.omniglot_maml import cpu_configs, paper_configs, run
    methods = tuple(args.methods) if args.methods else None
    configs = (paper_configs(*(methods,) if methods else ()) if args.setting == "paper"
               else cpu_configs(args.mode, *(methods,) if methods else ()))
    overrides = {"seed": args.seed, **({"iterations": args.iterations} if args.iterations is not None else {})}
    configs = [dataclasses.replace(c, amp=args.amp, **overrides) for c in configs]
    metrics = run(configs, args.device, cache_dir("checkpoints") if args.resume else None, progress=None,
                  jobs=args.jobs, threads=args.threads)
    return {"metrics": metrics, "config": {"runs": [asdict(c) for c in configs], "setting": args.setting,
                                           "jobs": args.jobs,
                                           "threads_per_job": args.threads or torch.get_num_threads()}}


def omniglot_mann(args: argparse.Namespace) -> dict:
    """A memory-augmented network (LRUA) and an LSTM on Omniglot episodes, accuracy by instance (Santoro et al.)."""
    from .results import config_dict
    from .experiments.omniglot_mann import MannConfig, run
    overrides = {"seed": args.seed, **({"iterations": args.iterations} if args.iterations is not None else {}),
                 **({"models": tuple(args.methods)} if args.methods else {})}
    config = MannConfig.for_mode(args.mode, **overrides)
    metrics, curves = run(config, progress=None, checkpoint_dir=cache_dir("checkpoints") if args.resume else None)
    return {"metrics": metrics, "curves": curves, "config": config_dict(config)}


def recognizer(args: argparse.Namespace) -> dict:
    """Chapter 5's one-shot recognizer: ProtoNets on Lake's background set, scored on his 20 runs and on an
    invented writing system; ``--model PATH`` saves it for :meth:`Recognizer.load`."""
    from .results import config_dict
    from .experiments.recognizer import RecognizerConfig, run
    config = RecognizerConfig.for_mode(args.mode, seed=args.seed)
    metrics, model = run(config, device=args.device, checkpoint_dir=cache_dir("checkpoints") if args.resume else None)
    record = {"metrics": metrics, "config": config_dict(config)}
    if args.model:
        record["model"] = str(model.save(args.model))
        print(f"saved the recognizer to {record['model']}")
    return record


def multitask(args: argparse.Namespace) -> dict:
    """MultiDigits with every multi-task method (conv and MLP trunks, several seeds) and GradNorm's toy."""
    from .experiments.multitask import MultitaskConfig, ToyConfig, run_multidigits, run_toy
    from .results import config_dict
    config, toy = MultitaskConfig.for_mode(args.mode), ToyConfig.for_mode(args.mode)
    if args.methods:
        config = dataclasses.replace(config, methods=tuple(args.methods))
    metrics = run_multidigits(config, progress=True)
    configs = {"multidigits": config_dict(config)}
    if config.trunk != "mlp":  # the same run with the MLP trunk, under keys mlp/...
        mlp = dataclasses.replace(config, trunk="mlp")
        metrics.update({f"mlp/{k}": v for k, v in run_multidigits(mlp, progress=True).items()})
        configs["multidigits_mlp"] = config_dict(mlp)
    toy_metrics, curves = run_toy(toy)
    return {"metrics": {**metrics, **toy_metrics}, "curves": {"toy": curves}, "config": {**configs, "toy": config_dict(toy)}}


def transfer(args: argparse.Namespace) -> dict:
    """The inter-twinning moons over rotation angles, digits to shifted digits, and Omniglot's inductive and
    unsupervised transfer, in one record."""
    from .experiments.digits_da import DigitsDAConfig, run_digits
    from .experiments.moons import MoonsConfig, run_sweep
    from .results import config_dict
    from .experiments.transfer_omniglot import TransferConfig, run
    moons, digits, omniglot = (MoonsConfig.for_mode(args.mode), DigitsDAConfig.for_mode(args.mode),
                               TransferConfig.for_mode(args.mode))
    metrics = run_sweep(moons)
    print("moons done", flush=True)
    metrics.update(run_digits(digits)[0])
    print("digits done", flush=True)
    metrics.update(run(omniglot, progress=True))
    return {"metrics": metrics, "config": {"moons": config_dict(moons), "digits": config_dict(digits),
                                           "omniglot": config_dict(omniglot)}}


def combine(args: argparse.Namespace) -> dict:
    """Prototypical Networks meta-trained from a random, an inductively pretrained and a multi-task start, on one
    budget (the book's chapter 2.4)."""
    from .experiments.combine import CombineConfig, run
    from .results import config_dict
    config = CombineConfig.for_mode(args.mode)
    return {"metrics": run(config, progress=True), "config": config_dict(config)}


def background(args: argparse.Namespace) -> dict:
    """The three limitations of chapter 1 (the article's §1.2), each measured."""
    from .experiments.background import BackgroundConfig, run
    from .results import config_dict
    config = BackgroundConfig.for_mode(args.mode)
    return {"metrics": run(config), "config": config_dict(config)}


# Measured with benchmarks/compiled_steps.py (results/benchmark_compiled_steps.json, thread counts side by side):
# a second torch thread speeds the sinusoid's small meta-steps up by 0-30%, so on a CPU its methods train one
# per core, two at once: all six in 6.4 min on 2 cores, against 6.9 min one after another
# on one thread (results/sinusoid.json, results/sinusoid_serial.json).
CPU_DEFAULTS = {"sinusoid": {"jobs": 2, "threads": 1}}

EXPERIMENTS: dict[str, Callable[[argparse.Namespace], dict]] = {"sinusoid": sinusoid, "combine": combine,
                                                                 "background": background,
                                                                 "omniglot-metric": omniglot_metric,
                                                                 "omniglot-maml": omniglot_maml,
                                                                 "omniglot-mann": omniglot_mann,
                                                                 "recognizer": recognizer,
                                                                 "multitask": multitask, "transfer": transfer}


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (argparse names the flag in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def record_name(text: str) -> str:
    """argparse type: letters, digits and underscores (the record is ``results/<name>.json``)."""
    if not text.replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"expected letters, digits and underscores, got {text!r}")
    return text


def _flags() -> dict[str, argparse.ArgumentParser]:
    """The groups of flags the sub-commands share (argparse parents)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mode", choices=budget.MODES, default="full", help="budget (default: full)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when present)")
    common.add_argument("--out", default=None, help="folder for the JSON (default: the repository's results/)")
    common.add_argument("--no-resume", dest="resume", action="store_false", help="ignore and write no checkpoints")
    common.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads (per job where runs train at once; default torch's, "
                             "sinusoid on a CPU: 1)")
    common.add_argument("--name", type=record_name, default=None,
                        help="record name, i.e. results/<name>.json (default: the experiment's, e.g. omniglot_metric)")
    methods = argparse.ArgumentParser(add_help=False)
    methods.add_argument("--methods", nargs="+", help="a subset of the experiment's methods")
    jobs = argparse.ArgumentParser(add_help=False)
    jobs.add_argument("--jobs", type=positive_int, default=None,
                      help="runs trained at once in worker processes (default 1; sinusoid on a CPU: one per core, "
                           "at most 2)")
    amp = argparse.ArgumentParser(add_help=False)
    amp.add_argument("--amp", action="store_true", help="bfloat16 autocast in training (CUDA only)")
    iterations = argparse.ArgumentParser(add_help=False)
    iterations.add_argument("--iterations", type=positive_int, default=None,
                            help="meta-training iterations of every run (default: the mode's)")
    return {"common": common, "methods": methods, "jobs": jobs, "amp": amp, "iterations": iterations}


# each experiment's flags beyond --mode, --seed, --device, --out, --no-resume and --name
PARENTS = {"sinusoid": ("methods", "jobs"), "omniglot-metric": ("methods", "jobs", "amp"),
           "omniglot-maml": ("methods", "jobs", "amp", "iterations"), "omniglot-mann": ("methods", "iterations"),
           "multitask": ("methods",), "recognizer": (), "transfer": (), "combine": (), "background": ()}


def parser() -> argparse.ArgumentParser:
    """``python -m mapping.reproduce <experiment> [flags]``: one sub-command per experiment, with its flags."""
    top = argparse.ArgumentParser(prog="python -m mapping.reproduce", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="experiment", required=True, metavar="experiment",
                             help=", ".join(sorted(EXPERIMENTS)))
    flags = _flags()
    commands = {}
    for name in sorted(EXPERIMENTS):
        doc = " ".join((EXPERIMENTS[name].__doc__ or "").split())
        commands[name] = sub.add_parser(name, help=doc.split(". ")[0].rstrip(".") or None, description=doc or None,
                                        parents=[flags["common"], *(flags[g] for g in PARENTS[name])])
    commands["sinusoid"].add_argument("--eager", action="store_true",
                                      help="run the meta-steps eagerly (the full mode compiles them)")
    commands["omniglot-metric"].add_argument("--episodes", type=positive_int, default=None,
                                             help="training episodes of every selected run (default: the mode's)")
    commands["omniglot-metric"].add_argument("--halve-every", type=positive_int, default=None,
                                             help="learning-rate halving interval of every selected run")
    commands["omniglot-maml"].add_argument("--setting", choices=("cpu", "paper"), default="cpu",
                                           help="the CPU budget (5-way 1-shot) or Finn et al.'s four settings")
    commands["recognizer"].add_argument("--model", default=None,
                                        help="write the trained recognizer to this file (Recognizer.load reads it)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.device = get_device(args.device)
    defaults = CPU_DEFAULTS.get(args.experiment, {}) if args.device.type == "cpu" else {}
    if "jobs" in vars(args) and args.jobs is None:
        args.jobs = min(defaults.get("jobs", 1), os.cpu_count() or 1)
    if args.threads is None:
        args.threads = defaults.get("threads")
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    command = "python -m mapping.reproduce " + " ".join(argv if argv is not None else sys.argv[1:])
    record = results.provenance(args.name or args.experiment.replace("-", "_"), command=command.strip(), mode=args.mode, seed=args.seed,
                                device=args.device)
    tic = time.perf_counter()
    record.update(EXPERIMENTS[args.experiment](args))
    record["wall_seconds"] = time.perf_counter() - tic
    path = results.write(record, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
