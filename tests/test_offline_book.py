"""The built book needs no network: MathJax is served locally and progress bars are plain text."""
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("progress_bars", ROOT / "book" / "_ext" / "progress_bars.py")
progress_bars = importlib.util.module_from_spec(spec)
spec.loader.exec_module(progress_bars)


def test_each_progress_bar_keeps_only_its_final_state():
    text = ("config {'a': 1}\n"
            "MAML:   0%|          | 0/300 [00:00<?, ?it/s]\n"
            "MAML:  74%|███████▍  | 222/300 [00:01<00:00, 221.67it/s, loss=2.224]\n"
            "MAML: 100%|██████████| 300/300 [00:01<00:00, 211.92it/s, loss=2.515]\n"
            "pretrained on all tasks:   0%|          | 0/300 [00:00<?, ?it/s]\n"
            "pretrained on all tasks: 100%|██████████| 300/300 [00:00<00:00, 345.76it/s, loss=3.385]\n"
            "done: 12%| of the tasks diverged\n"
            "ANIL:  50%|█████     | 1/2 [00:01<00:01]\rANIL: 100%|██████████| 2/2 [00:02<00:00]\n"
            "MAML:  10%|█         | 30/300 [00:00<00:01]\n")
    assert progress_bars.collapse_progress(text) == (
        "config {'a': 1}\n"
        "MAML: 100%|██████████| 300/300 [00:01<00:00, 211.92it/s, loss=2.515]\n"
        "pretrained on all tasks: 100%|██████████| 300/300 [00:00<00:00, 345.76it/s, loss=3.385]\n"
        "done: 12%| of the tasks diverged\n"
        "ANIL: 100%|██████████| 2/2 [00:02<00:00]\n"
        "MAML:  10%|█         | 30/300 [00:00<00:01]\n")  # a new run of the same bar after other text stays


def test_book_config_serves_mathjax_locally_and_loads_the_progress_extension():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx-mathjax-offline" in config["sphinx"]["extra_extensions"]
    assert config["sphinx"]["local_extensions"]["progress_bars"] == "book/_ext"
    train = (ROOT / "mapping" / "train.py").read_text()
    assert re.search(r"^from tqdm import tqdm\b", train, re.M) and "file=sys.stdout" in train


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_built_book_loads_no_script_or_stylesheet_from_the_network(built_book):
    pages = list(built_book.rglob("*.html"))
    assert pages
    for page in pages:
        html = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        assert not [url for url in remote if not url.startswith("https://github.com")], (page, remote)
    maml = (built_book / "book" / "ch4" / "maml_math.html").read_text()
    assert 'src="../../_static/mathjax/tex-chtml.js' in maml
    assert (built_book / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_an_inline_script_registered_twice_appears_once():
    from sphinx.builders.html._assets import _JavaScript
    spec = importlib.util.spec_from_file_location("unique_scripts", ROOT / "book" / "_ext" / "unique_scripts.py")
    unique_scripts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unique_scripts)
    scripts = [_JavaScript("", body="const A = 1"), _JavaScript(None, body="const A = 1"), _JavaScript("a.js"),
               _JavaScript("a.js"), _JavaScript(None, body="const B = 2")]
    context = {"script_files": scripts}
    unique_scripts.drop_repeated_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[2], scripts[4]]


def load_extension(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_data_or_network_the_build_stops_with_one_message_and_leaves_nothing(tmp_path, monkeypatch):
    from sphinx.errors import ConfigError

    from mapping.data import files
    monkeypatch.setenv("MAPPING_DATA", str(tmp_path))

    def offline(url, dest):
        raise OSError("<urlopen error [Errno -2] Name or service not known>")
    monkeypatch.setattr(files, "_fetch", offline)
    with pytest.raises(ConfigError, match=rf"needs the Omniglot files .* in {tmp_path}/omniglot, and "
                                          r"images_background.zip could not be downloaded .*set MAPPING_DATA"):
        load_extension("book_data").fetch_data(app=None)
    assert list((tmp_path / "omniglot").iterdir()) == []  # no partial download left behind


def test_with_the_data_in_place_the_build_downloads_nothing(tmp_path, monkeypatch):
    from mapping.data import files
    monkeypatch.setenv("MAPPING_DATA", str(tmp_path))
    (tmp_path / "omniglot").mkdir()
    for name in files.URLS:
        (tmp_path / "omniglot" / name).write_bytes(b"zip")
    monkeypatch.setattr(files, "_fetch", lambda url, dest: pytest.fail(f"downloaded {url}"))
    load_extension("book_data").fetch_data(app=None)


def test_a_notebook_error_fails_the_build():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert config["sphinx"]["local_extensions"]["book_data"] == "book/_ext"


def test_bibliography_labels_read_like_the_author_year_citations():
    from pybtex.database import parse_string
    from pybtex.plugin import find_plugin
    load_extension("bib_labels")
    bib = parse_string("""
        @article{a, author = {Finn, Chelsea and Abbeel, Pieter and Levine, Sergey}, title = {MAML}, journal = {J}, year = {2017}}
        @article{b, author = {Nichol, Alex and Schulman, John}, title = {Reptile}, journal = {J}, year = {2018}}
        @article{c, author = {Lake, Brenden}, title = {One}, journal = {J}, year = {2015}}
        @article{d, author = {Lake, Brenden}, title = {Two}, journal = {J}, year = {2015}}""", "bibtex")
    style = find_plugin("pybtex.style.formatting", "authoryear")()
    labels = [entry.label for entry in style.format_entries(bib.entries.values())]
    assert labels == ["Finn et al., 2017", "Lake, 2015a", "Lake, 2015b", "Nichol and Schulman, 2018"]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["config"]["bibtex_default_style"] == "authoryear"
