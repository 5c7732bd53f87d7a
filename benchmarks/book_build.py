"""The book's cost, page by page: every notebook executed in one mode, timed, with its peak memory.

Each notebook of ``_toc.yml`` runs in a fresh kernel as the book build runs it (``nbclient``, the notebook's
folder as working directory, ``MAPPING_MODE`` set), and the record keeps per page the wall seconds, the kernel's
CPU seconds (its own and its subprocesses'), its peak resident memory and its slowest cells. ``--jobs 2`` runs
two pages at a time; ``--load 1`` keeps one busy process per unit spinning meanwhile (a reader's laptop where
something else runs). ``--build`` also times the whole ``jupyter-book build`` of the same tree into a temporary
folder, sampling the resident memory of its whole process tree, and records the size of the HTML it wrote and
the disk the environment, ``$MAPPING_CACHE`` and the Omniglot files take.

    python benchmarks/book_build.py --mode quick --build --cold --out results   # the stored record
    python benchmarks/book_build.py --mode quick --pages book/ch3/maml      # one page, printed only
    python benchmarks/book_build.py --mode quick --build --from-build --cold --out results  # pages timed in the build

``--out results`` writes ``results/benchmark_book_build.json`` (``--name`` to store another variant); the README's
build time, memory and disk figures are read from it (``tests/test_readme_figures.py``).
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
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mapping import results  # noqa: E402
from mapping.report import page_key  # noqa: E402

sys.path.insert(0, str(ROOT / "book" / "_ext"))
from threads import ENV as THREADS_ENV  # noqa: E402

PROBE = ("import json as _j, resource as _r\n"
         "_s, _c = _r.getrusage(_r.RUSAGE_SELF), _r.getrusage(_r.RUSAGE_CHILDREN)\n"
         "print(_j.dumps({'cpu': _s.ru_utime + _s.ru_stime + _c.ru_utime + _c.ru_stime,\n"
         "                'maxrss_kib': max(_s.ru_maxrss, _c.ru_maxrss)}))")


def toc_pages(root: Path = ROOT) -> list[str]:
    """The notebook pages of ``_toc.yml``, in reading order, as paths without suffix (``book/ch3/maml``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = [toc["root"]]
    for chapter in toc["chapters"]:
        entries += [chapter["file"]] + [s["file"] for s in chapter.get("sections", [])]
    return [e for e in entries if (root / f"{e}.ipynb").is_file()]


def first_line(source: str) -> str:
    """The first line of a cell that is not a comment, cut to 60 characters."""
    lines = [s for s in source.splitlines() if s.strip() and not s.lstrip().startswith("#")]
    return (lines[0] if lines else source.strip()[:60])[:60]


def cell_seconds(cell) -> float:
    """A cell's execution time from the timestamps ``nbclient`` records (``record_timing``)."""
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def run_page(page: str, mode: str, root: Path = ROOT, timeout: int = 1800) -> dict:
    """Execute ``<root>/<page>.ipynb`` in a fresh kernel; wall and CPU seconds, peak MiB, slowest cells."""
    import nbformat
    from nbclient import NotebookClient
    path = root / f"{page}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    env = {**THREADS_ENV, **os.environ, "MAPPING_MODE": mode}  # the build's kernel environment (book/_ext)
    client.execute(env=env)
    wall = time.perf_counter() - start
    usage = json.loads(nb.cells[-1].outputs[0]["text"])
    cells = [(i, cell_seconds(c), first_line(c.source)) for i, c in enumerate(nb.cells[:-1])
             if c.cell_type == "code"]
    slowest = sorted(cells, key=lambda c: -c[1])[:3]
    return {"page": page, "wall_seconds": round(wall, 2), "cpu_seconds": round(usage["cpu"], 2),
            "peak_mib": round(usage["maxrss_kib"] / 1024, 1),
            "slowest_cells": [{"cell": i, "seconds": round(s, 2), "line": line} for i, s, line in slowest]}


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, MiB."""
    import psutil
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20


def build_book(mode: str, root: Path = ROOT, keep_html: str | None = None) -> dict:
    """``jupyter-book build`` of ``root`` into a temporary folder: wall seconds, peak MiB of the process tree
    (sampled every 0.5 s), and the MiB of the HTML written (copied to ``keep_html`` when given, e.g. for
    ``benchmarks/screenshots.py`` or ``MAPPING_BOOK_HTML``)."""
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "MAPPING_MODE": mode}
        start = time.perf_counter()
        proc = subprocess.Popen([jb, "build", str(root), "--path-output", out], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak, log = [0.0], []
        reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
        reader.start()
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_mib(proc.pid))
            time.sleep(0.5)
        reader.join()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError("jupyter-book build failed:\n" + "".join(log[-40:]))
        html = Path(out) / "_build" / "html"
        size = sum(f.stat().st_size for f in html.rglob("*") if f.is_file())
        if keep_html:
            shutil.rmtree(keep_html, ignore_errors=True)
            shutil.copytree(html, keep_html)
    return {"wall_seconds": round(wall, 1), "peak_mib": round(peak[0], 1), "html_mib": round(size / 2 ** 20, 1),
            "pages": executed_seconds("".join(log), root)}


def executed_seconds(log: str, root: Path = ROOT) -> dict[str, float]:
    """``{page: seconds}`` from myst-nb's lines ``<root>/<page>.ipynb: Executed notebook in 12.3 seconds``."""
    found = re.findall(r"(\S+)\.ipynb: Executed notebook in ([\d.]+) seconds", re.sub(r"\x1b\[[0-9;]*m", "", log))
    return {str(Path(path).resolve().relative_to(root.resolve())): float(s) for path, s in found
            if Path(path).resolve().is_relative_to(root.resolve())}


def folder_mib(path: Path) -> float:
    """The size of the files under ``path``, MiB (0 when absent)."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())
                 / 2 ** 20, 1) if Path(path).is_dir() else 0.0


def disk() -> dict:
    """What a reader's disk holds after a build: the environment (``sys.prefix``), ``$MAPPING_CACHE`` and the
    Omniglot files, MiB."""
    from mapping.paths import cache_dir, data_root
    return {"venv_mib": folder_mib(Path(sys.prefix)), "cache_mib": folder_mib(cache_dir()),
            "data_mib": folder_mib(data_root() / "omniglot")}


class Load:
    """``n`` processes spinning on the CPU while the block runs (another program sharing the cores)."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.kill()
            p.wait()


def table(pages: list[dict]) -> str:
    """A plain-text table, slowest page first."""
    lines = [f"{'page':<24} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9}  slowest cell (s)"]
    for p in sorted(pages, key=lambda p: -p["wall_seconds"]):
        top = p["slowest_cells"][0] if p["slowest_cells"] else {"cell": "-", "seconds": 0, "line": ""}
        lines.append(f"{p['page'].removeprefix('book/'):<24} {p['wall_seconds']:>7.1f} {p['cpu_seconds']:>7.1f} "
                     f"{p['peak_mib']:>9.0f}  [{top['cell']}] {top['seconds']:.1f} {top['line'][:40]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("smoke", "quick", "full"), default="quick")
    parser.add_argument("--pages", nargs="+", help="pages without suffix (default: every notebook of _toc.yml)")
    parser.add_argument("--jobs", type=int, default=1, choices=(1, 2, 3, 4), help="pages executed at a time")
    parser.add_argument("--load", type=int, default=0, choices=(0, 1, 2), help="busy processes meanwhile")
    parser.add_argument("--build", action="store_true", help="also time the whole jupyter-book build")
    parser.add_argument("--from-build", action="store_true",
                        help="no page run apart: each page's seconds as the build's log gives them (with --build)")
    parser.add_argument("--cold", action="store_true",
                        help="an empty MAPPING_CACHE for the pages, and another for the build (a fresh clone)")
    parser.add_argument("--out", help="folder for the JSON record (e.g. results); printed only when absent")
    parser.add_argument("--name", default="benchmark_book_build")
    parser.add_argument("--keep-html", metavar="DIR", help="with --build: copy the built HTML to DIR")
    args = parser.parse_args(argv)
    pages = [p.removesuffix(".ipynb") for p in args.pages] if args.pages else toc_pages()
    missing = [p for p in pages if not (ROOT / f"{p}.ipynb").is_file()]
    if missing:
        parser.error(f"--pages: no notebook {missing[0]}.ipynb under {ROOT} (give paths like book/ch3/maml)")
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="book_build_cache_")
    if args.cold:
        os.environ["MAPPING_CACHE"] = os.path.join(scratch, "pages")
    failed = {}

    def attempt(page: str) -> dict | None:
        try:
            return run_page(page, args.mode)
        except Exception as error:  # a failing page is reported; the others still run
            failed[page] = f"{type(error).__name__}: {str(error)[-1500:]}"
            print(f"{page} FAILED: {failed[page]}", flush=True)
            return None

    if args.keep_html and not args.build:
        parser.error("--keep-html keeps the whole build's HTML: give --build too")
    if args.from_build and not args.build:
        parser.error("--from-build reads the pages' seconds from the build: give --build too")
    with Load(args.load), ThreadPoolExecutor(args.jobs) as pool:
        done = [] if args.from_build else [d for d in pool.map(attempt, pages) if d is not None]
    pages_wall = time.perf_counter() - start
    if done:
        print(table(done))
    if failed:
        print(f"{len(failed)} page(s) failed, no record written: {', '.join(failed)}")
        return 1
    print(f"all pages: {pages_wall:.0f} s ({args.jobs} at a time, {args.load} busy processes)")
    metrics = {page_key(p["page"], k): p[k] for p in done for k in ("wall_seconds", "cpu_seconds", "peak_mib")}
    if done:
        metrics["pages/wall_seconds"] = round(pages_wall, 1)
        metrics["pages/max_wall_seconds"] = max(p["wall_seconds"] for p in done)
    if args.build:
        if args.cold:
            os.environ["MAPPING_CACHE"] = os.path.join(scratch, "build")
        with Load(args.load):
            built = build_book(args.mode, keep_html=args.keep_html)
        print(f"jupyter-book build: {built['wall_seconds']:.0f} s, peak {built['peak_mib']:.0f} MiB, "
              f"HTML {built['html_mib']:.0f} MiB")
        in_build = built.pop("pages")
        metrics.update({f"build/{k}": v for k, v in built.items()})
        metrics.update({f"build/page/{p}/seconds": v for p, v in in_build.items()})
        if args.from_build:
            if sorted(in_build) != sorted(pages):
                raise RuntimeError(f"the build's log names {sorted(in_build)}, the book has {sorted(pages)}")
            metrics.update({page_key(p, "wall_seconds"): v for p, v in in_build.items()})
            metrics["pages/wall_seconds"] = round(sum(in_build.values()), 1)
            metrics["pages/max_wall_seconds"] = max(in_build.values())
            for p, v in sorted(in_build.items(), key=lambda kv: -kv[1]):
                print(f"{p.removeprefix('book/'):<28} {v:7.1f} s in the build")
        metrics.update({f"disk/{k}": v for k, v in disk().items()})
    shutil.rmtree(scratch, ignore_errors=True)
    if args.out:
        command = "python benchmarks/book_build.py " + " ".join(argv if argv is not None else sys.argv[1:])
        record = results.provenance(args.name, command=command, mode=args.mode, seed=0)
        record.update(wall_seconds=round(time.perf_counter() - start, 1), metrics=metrics,
                      config={"jobs": args.jobs, "load": args.load, "cold": args.cold, "cores": os.cpu_count(),
                              "pages_from": "the build's log" if args.from_build else "a kernel each",
                              "openmp": {k: os.environ.get(k, THREADS_ENV.get(k)) for k in
                                         ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}},
                      slowest_cells={p["page"]: p["slowest_cells"] for p in done})
        path = results.write(record, args.out)
        print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
