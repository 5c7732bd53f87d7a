"""Screenshots of chosen places of the built book, as a reader sees them at a 1280-pixel window.

Each shot names a page and a place on it: ``text:`` the smallest block holding a phrase, ``eq:`` the display
equation whose text holds a phrase, ``img:N`` the page's N-th image (0-based), ``output:`` the code cell whose
output holds a phrase, ``top`` the page's first screen. Headless Debian Chromium, no network, a loopback server
over ``_build/html``. Run after a build::

    python benchmarks/screenshots.py --spec benchmarks/screenshots_issue21.txt --out _build/screenshots/issue21

The spec file holds one shot a line, ``name | page | place`` (``#`` starts a comment). A place that is not
found is reported and the command exits 1, so a spec that no longer matches its page is noticed.
"""
import argparse
import contextlib
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FIND = """
const [kind, what] = [arguments[0], arguments[1]];
const article = document.querySelector('.bd-article') || document.body;
const blocks = 'p, li, table, figure, .cell, .admonition, h1, h2, h3, h4, dl, pre, blockquote';
if (kind === 'top') return article;
if (kind === 'img') return article.querySelectorAll('img')[Number(what)] || null;
if (kind === 'eq') return [...article.querySelectorAll('mjx-container[display="true"]')].find(
  c => (c.querySelector('mjx-assistive-mml') || c).textContent.includes(what)) || null;
if (kind === 'output') return [...article.querySelectorAll('.cell')].find(
  c => [...c.querySelectorAll('.cell_output')].some(o => o.textContent.includes(what))) || null;
const hits = [...article.querySelectorAll(blocks)].filter(el => el.textContent.includes(what));
return hits.find(el => !hits.some(other => other !== el && el.contains(other))) || null;
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request
        pass


@contextlib.contextmanager
def serve(directory):
    """A loopback HTTP server over ``directory`` for the length of the ``with``: yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def read_spec(path):
    shots = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            name, page, place = (part.strip() for part in line.split("|", 2))
            kind, _, what = place.partition(":")
            shots.append((name, page, kind, what))
    return shots


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="file of 'name | page | place' lines")
    parser.add_argument("--html", default=str(ROOT / "_build" / "html"), help="the built book")
    parser.add_argument("--out", default=str(ROOT / "_build" / "screenshots"), help="folder for the PNGs")
    args = parser.parse_args(argv)
    html, out = Path(args.html), Path(args.out)
    if not (html / "index.html").is_file():
        parser.error(f"--html: no built book at {html} (run jupyter-book build . first)")
    out.mkdir(parents=True, exist_ok=True)
    driver, missing = browser(), []
    with serve(html) as site:
        try:
            shoot(driver, site, read_spec(args.spec), out, missing)
        finally:
            driver.quit()
    for line in missing:
        print("not found:", line, file=sys.stderr)
    return 1 if missing else 0


def shoot(driver, site, shots, out, missing):
    """Each of ``shots`` saved as ``out/<name>.png``; a place not found is added to ``missing``."""
    for name, page, kind, what in shots:
        driver.get(f"{site}/{page}.html")
        driver.execute_async_script(
            "const done = arguments[0]; (window.MathJax && MathJax.startup ? MathJax.startup.promise"
            " : Promise.resolve()).then(() => setTimeout(done, 300));")
        element = driver.execute_script(FIND, kind, what)
        target = out / f"{name}.png"
        if element is None:
            missing.append(f"{name}: {kind}:{what} not found on {page}")
            continue
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        if kind == "top":
            driver.execute_script("window.scrollTo(0, 0);")
            driver.save_screenshot(str(target))
        else:
            element.screenshot(str(target))
        print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: {page}, {kind}:{what}")


if __name__ == "__main__":
    sys.exit(main())
