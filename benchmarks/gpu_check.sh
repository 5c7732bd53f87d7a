#!/usr/bin/env bash
# On a machine with a CUDA GPU: every notebook of the book run by nbmake on CUDA (CI's smoke mode) and the
# benchmarks that can use the GPU, then a short table and a JSON summary, results/gpu_check_<card>.json.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # OUT_DIR: where the summary goes (default: results/)
#   GPU_CHECK_DRY_RUN=1 bash benchmarks/gpu_check.sh  # or --dry-run: print the commands, run nothing (no GPU needed)
#
# Benchmarks with a --device flag get --device cuda; those that pick the device with mapping.device.get_device()
# get MAPPING_DEVICE=cuda; the others are CPU-only and are listed as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
OUT_DIR="${1:-results}"
PYTHON="${PYTHON:-python}"
export MAPPING_MODE="${MAPPING_MODE:-smoke}" MAPPING_PROGRESS=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# every notebook named in _toc.yml (the book's pages that are notebooks)
mapfile -t NOTEBOOKS < <(sed -n 's/^ *\(- \)\?\(file\|root\): *\(book\/[^ #]*\).*/\3/p' _toc.yml |
                         while read -r page; do [[ -f "$page.ipynb" ]] && echo "$page.ipynb"; done)

run() {  # print the command; run it unless dry
  echo "+ $*" >&2
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

if [[ "$DRY_RUN" != 1 ]]; then
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no GPU here (nvidia-smi missing or failing); nothing run" >&2; exit 1
  fi
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch.cuda.is_available() is False (a CPU build of torch?); nothing run" >&2; exit 1
  fi
  CARD="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
  DRIVER="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"
  TORCH="$("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
else
  CARD="dry-run" DRIVER="n/a" TORCH="n/a"
fi
echo "card: $CARD, driver: $DRIVER, torch: $TORCH"

# 1. the notebooks, one nbmake run each (so each gets its own pass/fail and time)
: > "$WORK/notebooks.tsv"
for nb in "${NOTEBOOKS[@]}"; do
  start=$(date +%s%N)
  if run env MAPPING_DEVICE=cuda "$PYTHON" -m pytest --nbmake "$nb" -n 0 -q -p no:randomly; then status=pass
  else status=fail; fi
  echo -e "$nb\t$status\t$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN {print (b - a) / 1e9}')" \
    >> "$WORK/notebooks.tsv"
done

# 2. the benchmarks, --quick, on CUDA where they can be
: > "$WORK/benchmarks.tsv"
for script in benchmarks/*.py; do
  name="$(basename "$script" .py)"
  flags=(--quick)
  grep -q 'add_argument("--quick"' "$script" || flags=()
  grep -q 'add_argument("--out"' "$script" && flags+=(--out "$WORK/records")
  if grep -q 'add_argument("--device"' "$script"; then
    cmd=("$PYTHON" "$script" --device cuda "${flags[@]}")
  elif grep -q 'get_device()' "$script"; then
    cmd=(env MAPPING_DEVICE=cuda "$PYTHON" "$script" "${flags[@]}")
  else
    echo "skip $script: CPU-only (no --device, no get_device)"; echo -e "$name\tskipped\t" >> "$WORK/benchmarks.tsv"
    continue
  fi
  if run "${cmd[@]}" > "$WORK/$name.out"; then status=pass; else status=fail; fi
  echo -e "$name\t$status\t$WORK/$name.out" >> "$WORK/benchmarks.tsv"
done

# 3. the table and the JSON summary
[[ "$DRY_RUN" == 1 ]] && { echo "dry run: nothing was run"; exit 0; }
mkdir -p "$OUT_DIR"
SLUG="$(echo "$CARD" | tr '[:upper:]' '[:lower:]' | tr -c 'a-z0-9\n' '_' | sed 's/^nvidia_//; s/_*$//')"
CARD="$CARD" DRIVER="$DRIVER" TORCH="$TORCH" "$PYTHON" - "$WORK" "$OUT_DIR/gpu_check_$SLUG.json" <<'EOF'
import json, os, sys
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
notebooks = [dict(zip(("notebook", "status", "seconds"), line.split("\t")))
             for line in (work / "notebooks.tsv").read_text().splitlines()]
benchmarks = []
for line in (work / "benchmarks.tsv").read_text().splitlines():
    name, status, log = line.split("\t")
    ms = {}
    for text in (Path(log).read_text().splitlines() if log else [])[::-1]:
        try:
            row = json.loads(text)
        except ValueError:
            continue
        ms = {k: round(v, 3) for k, v in (row.get("ms_per_iter") or {}).items() if isinstance(v, (int, float))}
        break
    benchmarks.append({"benchmark": name, "status": status, "ms_per_iter": ms})
passed = sum(n["status"] == "pass" for n in notebooks)
print(f"\nnotebooks on CUDA: {passed} passed, {len(notebooks) - passed} failed")
for n in notebooks:
    print(f"  {n['notebook']:<32} {n['status']:<5} {float(n['seconds']):7.1f} s")
print("benchmarks (--quick):")
for b in benchmarks:
    figures = ", ".join(f"{k} {v:.2f} ms" for k, v in b["ms_per_iter"].items())
    print(f"  {b['benchmark']:<24} {b['status']:<7} {figures}")
summary = {"card": os.environ["CARD"], "driver": os.environ["DRIVER"], "torch": os.environ["TORCH"],
           "mode": os.environ["MAPPING_MODE"], "notebooks": notebooks, "benchmarks": benchmarks}
out.write_text(json.dumps(summary, indent=1) + "\n")
print(f"wrote {out}")
EOF
