"""Provenance captions name what ran, never the folders of the machine that ran it."""
from mapping import results


def test_portable_shortens_absolute_paths_only():
    assert results.portable("python b.py --out /tmp/runs2 --data /work/shared/data/omniglot") == \
        "python b.py --out …/runs2 --data …/omniglot"
    assert results.portable("python -m mapping.reproduce sinusoid --jobs 1/2 ./rel/x ~/h") == \
        "python -m mapping.reproduce sinusoid --jobs 1/2 ./rel/x ~/h"
    assert results.portable("see /work/main/results/sinusoid.json; (mode full)") == "see …/sinusoid.json; (mode full)"
    for kept in ("--out results", "results/sinusoid.json", "a/tmp/b", "commit c1f8f5b234, 1.3 min"):
        assert results.portable(kept) == kept


def test_describe_uses_the_portable_command():
    record = {"command": "python b.py --out /root/out", "mode": "full", "seed": 0, "device": "cpu",
              "torch": "2.13.0", "commit": "0123456789abcdef", "dirty": False, "wall_seconds": 90.0}
    line = results.describe(record)
    assert "/root" not in line and "--out …/out" in line and "1.5 min" in line
