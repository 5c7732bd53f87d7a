"""The project's promises about itself: set-up files agree, the README's example and commands hold."""
import math
import re
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    editable = [p for p in pip if p.startswith("-e ")]
    listed = {p.replace(" ", "") for p in pip if not p.startswith("-e ")}
    wanted = {r.replace(" ", "") for r in project["dependencies"] + sum(extras.values(), [])}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject.toml: {wanted - listed}"
    assert len(editable) == 1
    named = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    assert named == set(extras), f"environment.yml installs extras {named}, pyproject.toml has {set(extras)}"
    python = next(d for d in conda if d.startswith("python"))
    minimum = tuple(int(x) for x in project["requires-python"].lstrip(">=").split("."))
    assert tuple(int(x) for x in python.split("=")[1].split(".")) >= minimum


def test_requirements_are_ranges_and_jupyter_book_is_pinned_below_2():
    project = pyproject()["project"]
    for req in project["dependencies"]:
        assert "==" not in req, f"{req}: keep the package's requirements ranges (Colab ships its own torch)"
    assert "jupyter-book>=1.0.4.post1,<2" in project["optional-dependencies"]["book"]


def readme_block(heading, index=0):
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|python)\n(.*?)```", section, re.S)[index].strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_block("Run every test")
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in lines


def test_readme_builds_the_book_into_build_html():
    assert readme_block("Build the book").endswith("jupyter-book build .")


def test_readme_example_runs_as_printed(capsys):
    """The user's own CNN (with batch norm) meta-learns on the user's own data: far above chance (0.2)."""
    code = readme_block("Use `mapping` in your own code")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy on new classes after one step: ([0-9.]+)", out).group(1))
    assert accuracy >= 0.6


def test_readme_dataloader_example_runs_as_printed(capsys):
    exec(compile(readme_block("Use `mapping` in your own code", 1), "README.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip() == "(4, 5, 3, 32, 32) (4, 25) 10"


def test_readme_multitask_example_runs_and_learns_both_tasks():
    """One epoch of hard sharing with UPGrad on MultiDigits: both digits far above chance (0.1)."""
    import torch
    from mapping.data import MultiDigits
    scope = {"__name__": "readme"}
    exec(compile(readme_block("Use `mapping` in your own code", 2), "README.md", "exec"), scope)
    assert scope["weights"].shape == (2,) and scope["weighting"].weights.shape == (2,)
    test = MultiDigits("test", seed=0)
    with torch.no_grad():
        out = scope["model"](test.x)
    for task, y in test.targets.items():
        assert (out[task].argmax(-1) == y).float().mean() > 0.5, task


def test_readme_transfer_example_adapts_without_target_labels(capsys):
    """DANN on the moons rotated by 35 degrees, with no target label: well above source-only training there
    (tests/test_transfer_domain.py measures both)."""
    exec(compile(readme_block("Use `mapping` in your own code", 3), "README.md", "exec"), {"__name__": "readme"})
    accuracy = float(re.search(r"target accuracy ([0-9.]+)", capsys.readouterr().out).group(1))
    assert accuracy >= 0.9


def test_readme_mann_example_runs_as_printed(capsys):
    """The MANN example: one episode batch through the memory, a finite loss near chance before training and
    gradients in every weight."""
    scope = {"__name__": "readme"}
    exec(compile(readme_block("Use `mapping` in your own code", 4), "README.md", "exec"), scope)
    loss = float(re.search(r"loss ([0-9.]+)", capsys.readouterr().out).group(1))
    assert abs(loss - math.log(5)) < 0.1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scope["mann"].parameters())


def test_readme_recognizer_example_runs_as_printed(capsys, tmp_path, monkeypatch):
    """The recognizer example: a name for each new drawing, out of the remembered ones, and a file that loads."""
    from mapping.data import GLYPHS
    from mapping.experiments.recognizer import Recognizer
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("Use `mapping` in your own code", 5), "README.md", "exec"), {"__name__": "readme"})
    names = eval(capsys.readouterr().out)
    assert len(names) == len(GLYPHS) and set(names) <= set(GLYPHS)
    assert Recognizer.load(tmp_path / "my_recognizer.pt").names == list(GLYPHS)


def test_notebooks_are_committed_without_outputs():
    import json
    for path in (ROOT / "book").rglob("*.ipynb"):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, path


def test_every_toc_entry_exists_and_every_page_has_bilingual_title():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for chapter in toc["chapters"]:
        files.append(chapter["file"])
        files += [s["file"] for s in chapter.get("sections", [])]
    for name in files:
        path = next((p for p in (ROOT / f"{name}.ipynb", ROOT / f"{name}.md") if p.exists()), None)
        assert path is not None, name
        text = path.read_text()
        title = re.search(r"^# (.+)$", text if path.suffix == ".md" else "\n".join(
            "".join(c["source"]) for c in __import__("json").loads(text)["cells"] if c["cell_type"] == "markdown"),
            re.M).group(1)
        assert re.search(r"[\u4e00-\u9fff]", title), f"{name}: title {title!r} lacks the article's Chinese heading"


def test_python_version():
    assert sys.version_info >= (3, 10)


def test_readme_data_example_runs_as_printed(capsys):
    import os

    import pytest
    data = Path(os.environ.get("MAPPING_DATA", "/nonexistent")) / "omniglot" / "images_evaluation.zip"
    if not data.is_file():
        pytest.skip("set MAPPING_DATA to a folder with the Omniglot zips")
    exec(compile(readme_block("Data and full runs"), "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "(32, 5, 1, 28, 28) (32, 75, 1, 28, 28)"


def test_notebook_code_lines_fit_the_book_column():
    """79 characters (PEP 8): longer lines scroll sideways in the book and hide what they say."""
    import json
    long = []
    for path in sorted((ROOT / "book").rglob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                long += [f"{path.relative_to(ROOT)} cell {i}: {line!r}" for line in "".join(cell["source"]).splitlines()
                         if len(line) > 79]
    assert not long, "\n".join(long)


def test_every_notebook_opens_on_colab_with_the_repository_of_config():
    """The Colab cell clones the repository that _config.yml names (the launch buttons' target)."""
    import json
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for path in sorted((ROOT / "book").rglob("*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        first = "".join(code[0]["source"])
        assert "google.colab" in first, f"{path.relative_to(ROOT)}: the first code cell must set up Colab"
        cloned = re.findall(r'"(https://github\.com/[^"]+)"', first)
        assert cloned == [url], f"{path.relative_to(ROOT)} clones {cloned}, _config.yml names {url}"


def test_xdist_groups_tests_on_one_worker(tmp_path):
    """``--dist loadgroup`` (our addopts) sends every ``xdist_group("book")`` test to one worker, so that the
    book is built once per run, not once per worker: pytest 9.2 silently breaks it (pytest-xdist issue 1386)."""
    import subprocess
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name in "abc":
        (tmp_path / f"test_{name}.py").write_text(
            "import pytest\n\n"
            "@pytest.mark.xdist_group('g')\ndef test_grouped(): pass\n\n"
            "def test_free(): pass\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                          "-p", "no:cacheprovider", "-p", "no:randomly"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120).stdout
    grouped = re.findall(r"\[(gw\d)\].*PASSED test_\w\.py::test_grouped(@g)?", out)
    assert len(grouped) == 3, out
    assert all(suffix == "@g" for _, suffix in grouped), f"no group suffix, the grouping is lost:\n{out}"
    assert len({worker for worker, _ in grouped}) == 1, out
