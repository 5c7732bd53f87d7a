"""Sphinx extension: an author's cached build that re-executes a page when its notebook OR the package code it
imports changes.

``MAPPING_BOOK_CACHE=1 jupyter-book build .`` switches execution to Jupyter Book's ``cache`` mode (jupyter-cache
in ``_build/.jupyter_cache``), where a page is re-executed only when its code cells change. jupyter-cache hashes
the notebook alone, so a page would keep outputs computed by code that has since changed. Before any notebook
runs, this extension fingerprints each page's dependencies and drops the cached outputs of every page whose
fingerprint moved:

* the source of every module of the package the page imports, followed through the package's own imports
  (``import mapping.x``, ``from mapping.x import y``, relative imports, and any ``mapping.a.b`` the page names,
  e.g. for ``python -m``), with each package's ``__init__``;
* the stored records under ``results/`` whose name the page quotes (``results.load("sinusoid")``);
* ``MAPPING_MODE`` (a smoke page is not a quick page).

Without ``MAPPING_BOOK_CACHE`` (the readers' command, on a fresh clone) every notebook runs. A second plain
``jupyter-book build .`` in the same folder re-reads, and so re-executes, only the pages whose notebook changed
(Sphinx's incremental build): there too this extension adds the pages whose fingerprint moved.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FINGERPRINTS = "mapping_fingerprints.json"


def cache_enabled() -> bool:
    return os.environ.get("MAPPING_BOOK_CACHE", "").strip().lower() in ("1", "true", "yes")


def notebook_code(path: Path) -> str:
    """The code cells of a notebook, IPython magics and shell lines commented out."""
    cells = json.loads(path.read_text())["cells"]
    lines = []
    for cell in cells:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            lines += ["#" + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
            lines.append("")
    return "\n".join(lines)


def module_file(name: str, package: Path) -> Path | None:
    """``mapping.meta.maml`` -> ``<package>/meta/maml.py`` (or a package's ``__init__.py``); None if absent."""
    parts = name.split(".")[1:]
    base = package.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(source: str, current: str, package_name: str, is_package: bool = False) -> set[str]:
    """Module names of ``package_name`` that ``source`` (module ``current``, an ``__init__`` when
    ``is_package``) imports, absolute or relative."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.Module(body=[], type_ignores=[])
    names = set()
    if current == "__main__":  # a page may run a module: "python -m mapping.reproduce", "-m mapping.x.y"
        names.update(re.findall(rf"\b{package_name}(?:\.\w+)+", source))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = current.split(".")[:None if is_package else -1]  # what "from ." names
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # the name may be a submodule
    return {n for n in names if n == package_name or n.startswith(package_name + ".")}


def dependencies(notebook: Path, package: Path) -> list[Path]:
    """Every source file of ``package`` that ``notebook`` imports, directly or through the package's imports."""
    name = package.name
    todo, seen = list(imported(notebook_code(notebook), "__main__", name)), {}
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            file = module_file(prefix, package)
            seen[prefix] = file
            if file is not None:
                todo += imported(file.read_text(), prefix, name, file.name == "__init__.py")
    return sorted({f for f in seen.values() if f is not None})


def fingerprint(notebook: Path, package: Path, results: Path) -> str:
    """SHA-256 of the page's package dependencies, the records it names and ``MAPPING_MODE``."""
    digest = hashlib.sha256(os.environ.get("MAPPING_MODE", "quick").encode())
    for file in dependencies(notebook, package):
        digest.update(str(file.relative_to(package.parent)).encode() + b"\0" + file.read_bytes())
    text = notebook.read_text()
    for record in sorted(results.glob("*.json")) if results.is_dir() else []:
        if re.search(rf"[\"']{re.escape(record.stem)}[\"']", text):
            digest.update(record.name.encode() + b"\0" + record.read_bytes())
    return digest.hexdigest()


def invalidate(cache_path: Path, notebooks: list[Path], package: Path, results: Path,
               drop: bool = True) -> list[Path]:
    """The notebooks whose fingerprint changed since the last build; with ``drop``, their cached outputs
    are removed from the jupyter-cache at ``cache_path``."""
    from jupyter_cache import get_cache
    cache_path.mkdir(parents=True, exist_ok=True)
    store = cache_path / FINGERPRINTS
    old = json.loads(store.read_text()) if store.is_file() else {}
    new = {str(nb): fingerprint(nb, package, results) for nb in notebooks}
    stale = [nb for nb in notebooks if old.get(str(nb)) != new[str(nb)]]
    if stale and drop:
        cache = get_cache(str(cache_path))
        uris = {str(nb) for nb in stale}
        for record in cache.list_cache_records():
            if record.uri in uris:
                cache.remove_cache(record.pk)
    store.write_text(json.dumps({**old, **new}, indent=1, sort_keys=True))
    return stale


def use_cache(app, config) -> None:
    if cache_enabled():
        config.nb_execution_mode = "cache"


def drop_stale(app) -> None:
    from sphinx.util import logging
    mystnb = getattr(app.env, "mystnb_config", None)
    cache_path = Path(getattr(mystnb, "execution_cache_path", "") or Path(app.outdir).parent / ".jupyter_cache")
    package = Path(app.config.package_cache_package or ROOT / "mapping").resolve()
    results = Path(app.config.package_cache_results or ROOT / "results").resolve()
    notebooks = sorted(Path(app.srcdir).rglob("*.ipynb"))
    notebooks = [nb.resolve() for nb in notebooks if "_build" not in nb.parts and ".ipynb_checkpoints" not in nb.parts]
    stale = invalidate(cache_path, notebooks, package, results, drop=cache_enabled())
    srcdir = Path(app.srcdir).resolve()
    app.package_cache_stale = [str(nb.relative_to(srcdir).with_suffix("")) for nb in stale]
    logging.getLogger(__name__).info(
        f"package_cache: {len(stale)} of {len(notebooks)} notebooks to re-execute (code or records changed)")


def reread_stale(app, env, added, changed, removed) -> list[str]:
    """Sphinx re-reads only sources whose file changed: name the pages whose dependencies changed too."""
    return [doc for doc in getattr(app, "package_cache_stale", []) if doc in env.found_docs]


def setup(app):
    app.add_config_value("package_cache_package", "", "env")
    app.add_config_value("package_cache_results", "", "env")
    app.connect("config-inited", use_cache)
    app.connect("builder-inited", drop_stale, priority=900)  # after myst-nb has set its cache path
    app.connect("env-get-outdated", reread_stale)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
