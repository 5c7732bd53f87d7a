"""The hosted-CI workflow and benchmarks/gpu_check.sh: the CPU job runs the README's test command verbatim, the
GPU job runs every notebook on CUDA, and the GPU check (dry run, no GPU needed) names every notebook of the book."""
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from test_project import readme_block

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())


def runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_cpu_job_runs_the_readme_test_command_verbatim():
    job = workflow()["jobs"]["cpu"]
    command = readme_block("Run every test")
    assert any(command in [line.strip() for line in run.splitlines()] for run in runs(job))
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] == 90
    assert "MAPPING_DATA" in job["env"] and any("chromium-driver" in run for run in runs(job))


def test_gpu_job_runs_the_notebooks_with_nbmake_on_cuda_on_a_gpu_runner():
    job = workflow()["jobs"]["gpu"]
    assert "gpu" in job["runs-on"]
    assert job["env"]["MAPPING_DEVICE"] == "cuda"
    assert any("--nbmake book" in run for run in runs(job))
    assert any("bash benchmarks/gpu_check.sh" in run for run in runs(job))
    assert "timeout-minutes" in job


def test_gpu_check_parses_and_its_dry_run_names_every_notebook_of_the_toc():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True,
                         env={**os.environ, "GPU_CHECK_DRY_RUN": "1"})
    text = out.stdout + out.stderr
    pages = re.findall(r"(?:file|root):\s*(book/\S+)", (ROOT / "_toc.yml").read_text())
    notebooks = [p + ".ipynb" for p in pages if (ROOT / (p + ".ipynb")).is_file()]
    assert len(notebooks) >= 10
    for notebook in notebooks:
        assert re.search(rf"MAPPING_DEVICE=cuda \S+ -m pytest --nbmake {re.escape(notebook)}\b", text), notebook
    assert "benchmarks/maml_sinusoid.py --device cuda --quick --out" in text
    assert "nothing was run" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the real run would start")
def test_gpu_check_refuses_to_run_without_a_gpu():
    """On a CPU-only machine (no nvidia-smi, or a CPU build of torch) the real run stops, saying why."""
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                         env={**os.environ, "GPU_CHECK_DRY_RUN": "0", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and ("no GPU" in out.stderr or "is_available() is False" in out.stderr)
    assert "+ " not in out.stderr  # nothing was run
