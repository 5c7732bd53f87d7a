"""The counts issue 22 resolves with: lines of ``mapping/experiments/``, ``isinstance`` checks on learner types
and reads of a learner's private attributes outside ``mapping/meta/``, and the public names per subpackage.

    python benchmarks/surface_counts.py [ROOT]      # ROOT: a checkout (default: this one)

It reads the files as text (and imports the subpackages for ``__all__``), so it can count an older checkout.
"""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

LEARNERS = ("MAML", "FOMAML", "MetaSGD", "ANIL", "Reptile", "MetaLearner", "MetricLearner", "PrototypicalNetwork",
            "MatchingNetwork", "SiameseNetwork", "MANN", "Learner")
ISINSTANCE = re.compile(r"isinstance\([^,]+,\s*\(?[^)]*\b(" + "|".join(LEARNERS) + r")\b")
# a learner's private attributes: what mapping/meta's learner classes define with a leading underscore
PRIVATE = re.compile(r"\b(learner|model|maml|reptile|wide|net|self\.learner|meta)\._[a-z]\w*")
SUBPACKAGES = ("data", "nn", "meta", "multitask", "transfer", "experiments")


def counts(root: Path) -> dict:
    files = sorted((root / "mapping").rglob("*.py"))
    experiments = sum(len(f.read_text().splitlines()) for f in (root / "mapping" / "experiments").rglob("*.py"))
    outside = [f for f in files if "meta" not in f.relative_to(root / "mapping").parts[:1]]
    isinstance_hits = [f"{f.relative_to(root)}:{i}" for f in outside
                       for i, line in enumerate(f.read_text().splitlines(), 1) if ISINSTANCE.search(line)]
    private_hits = [f"{f.relative_to(root)}:{i}" for f in outside
                    for i, line in enumerate(f.read_text().splitlines(), 1) if PRIVATE.search(line)]
    sys.path.insert(0, str(root))
    public = {}
    for name in SUBPACKAGES:
        module = importlib.import_module(f"mapping.{name}")
        public[name] = len(getattr(module, "__all__", []))
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"commit": commit, "experiments_lines": experiments, "learner_isinstance": len(isinstance_hits),
            "learner_isinstance_at": isinstance_hits, "private_reads": len(private_hits),
            "private_reads_at": private_hits, "public_names": public}


if __name__ == "__main__":
    print(json.dumps(counts(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()), indent=1))
