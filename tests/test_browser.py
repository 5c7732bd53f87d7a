"""The built book as a reader sees it: every page in headless Chromium, with no network.

Debian's ``chromium`` and ``chromium-driver`` (and ``fonts-noto-cjk`` for the Chinese titles), installed by
``.ci/run``, are driven by Selenium over a local HTTP server (loopback only). At a 1280-pixel window a page fails
when

* an equation is left untypeset, or a display equation is wider than the column (scrolled or clipped);
* an output cell holds a traceback (but a cell tagged ``raises-exception``, an expected error), a progress bar short of 100%, or an absolute path of the machine that ran it;
* a code cell, an output or a table scrolls sideways (or is clipped);
* an image is missing or broken, or is shown at under 60% of its natural width (its text shrunk with it);
* the page logs a JavaScript error.

Screenshots land in ``_build/screenshots/``. ``MAPPING_BOOK_HTML=_build/html`` checks an existing build.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from screenshots import serve  # noqa: E402  (a loopback server over a folder)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]


def pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]
    for chapter in toc["chapters"]:
        names += [chapter["file"]] + [s["file"] for s in chapter.get("sections", [])]
    return ["index"] + names[1:]


@pytest.fixture(scope="module")
def site(built_book):
    with serve(built_book) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium is not installed here: apt-get install chromium chromium-driver "
                    "fonts-noto-cjk (.ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 "--window-size=1280,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_script_timeout(90)
    yield driver
    driver.quit()


PROBLEMS = """
const done = arguments[arguments.length - 1];
// MathJax's script can still be loading when the page reports ready (seen on a loaded CI machine):
// wait up to 30 s for it on pages with equations before judging.
const loaded = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
const wait = new Promise(resolve => {
  const start = Date.now();
  const poll = () => (loaded() || !document.querySelector('.math') || Date.now() - start > 30000)
    ? resolve() : setTimeout(poll, 100);
  poll();
});
let ready;
wait.then(() => { ready = loaded(); return ready ? MathJax.startup.promise : null; }).then(() => {
 try {
  const text = el => el.textContent.trim().slice(0, 80);
  const math = [...document.querySelectorAll('.math')].filter(m => !m.querySelector('mjx-container'));
  const outputs = [...document.querySelectorAll('.cell_output, .output')];
  const tracebacks = outputs.filter(o => !o.closest('.tag_raises-exception')).filter(o => /Traceback \\(most recent call last\\)|\\.traceback/.test(
    o.textContent) || o.querySelector('.traceback'));
  const images = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  const code = [...document.querySelectorAll('.cell_input pre, div.highlight-ipython3 pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 1);
  const article = document.querySelector('.bd-article') || document.body || document.documentElement;  // index.html redirects
  const right = article.getBoundingClientRect().right + 1;
  // display equations: the typeset formula must fit the box MathJax gives it (and the column); measured in one
  // pass, since MathJax may re-render a formula (fonts arriving) between two reads
  const equations = [...article.querySelectorAll('mjx-container[display="true"]')].map(c => {
    const m = c.querySelector('mjx-math');
    if (!m) return null;
    const w = m.getBoundingClientRect(), box = c.getBoundingClientRect();
    return (w.width > box.width + 1 || w.right > right || c.scrollWidth > c.clientWidth + 1)
      ? `${Math.round(w.width)} px in ${Math.round(box.width)}: `
        + (c.querySelector('mjx-assistive-mml') || c).textContent.slice(0, 60) : null;
  }).filter(Boolean);
  // anything else that scrolls sideways or is clipped: outputs, tables, preformatted text
  const inOutput = el => el.closest('.cell_output, .output');
  const wide = [...article.querySelectorAll('*')].filter(el => !el.closest('mjx-container, .cell_input, .math')
    && el.clientWidth > 0 && (el.scrollWidth > el.clientWidth + 1
        && ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX)
        || el.getBoundingClientRect().right > right + 1 && ['TABLE', 'PRE', 'IMG'].includes(el.tagName)));
  const outputsWide = wide.filter(inOutput), tablesWide = wide.filter(el => !inOutput(el));
  const shrunk = [...article.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0
    && i.getBoundingClientRect().width < 0.6 * i.naturalWidth);
  const outText = outputs.filter(o => !o.closest('.tag_raises-exception')).map(o => o.textContent);
  const bars = outText.flatMap(t => t.split('\\n')).filter(l => /(^|[^0-9])(\\d{1,2})%\\|/.test(l));
  const paths = outText.flatMap(t => t.split('\\n')).filter(
    l => /(^|[\\s'"(=:])\\/(tmp|root|home|work|Users|private|var|opt|mnt|scratch|content)\\//.test(l));
  const first = el => (el.textContent.split('\\n').find(l => l.length > 79) || text(el)).slice(0, 100);
  done({mathjax: Boolean(ready) || !document.querySelector('.math'), untypeset: math.map(text), tracebacks: tracebacks.map(text),
        broken_images: images.map(i => i.getAttribute('src')),
        scrolling_code: code.map(p => p.textContent.split('\\n').find(
          l => l.length > 79) || text(p)),
        wide_equations: equations,
        wide_outputs: [...new Set(outputsWide.map(first))],
        wide_tables: [...new Set(tablesWide.map(first))],
        shrunk_images: shrunk.map(i => `${i.getAttribute('src')} shown at ${Math.round(100 * i.getBoundingClientRect().width / i.naturalWidth)}%`),
        progress_leftovers: bars.map(l => l.slice(0, 80)), machine_paths: paths.map(l => l.trim().slice(0, 100))});
 } catch (error) {  // report a failure of the probe itself rather than time out
  done({mathjax: true, probe_error: [String(error && error.stack || error)]});
 }
});
"""


@pytest.mark.parametrize("page", pages())
def test_page_reads_as_it_should(site, browser, built_book, page):
    path = built_book / f"{page}.html"
    assert path.is_file(), f"{page}.html was not built"
    browser.get(f"{site}/{page}.html")
    found = browser.execute_async_script(PROBLEMS)
    shots = ROOT / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / f"{page.replace('/', '_')}.png"))
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]  # a host's missing favicon
    assert found["mathjax"], f"{page}: the page has equations but MathJax did not load"
    problems = {k: v for k, v in found.items() if k != "mathjax" and v}
    if errors:
        problems["javascript_errors"] = errors
    assert not problems, f"{page}: {problems}"


# One synthetic page per class of defect the probe must catch, and a clean page it must pass: a check that stops
# firing (a selector renamed by a theme update, say) fails here rather than letting the book's pages pass blind.
PNG_800 = ("iVBORw0KGgoAAAANSUhEUgAAAyAAAAABCAAAAAADA5W6AAAAEElEQVR4nGNoGAWjYBTgBADvwJAQO9LiUwAAAABJRU5ErkJggg=="
           )  # an 800x1 grey PNG
DEFECTS = {
    "clean": ("<div class='cell_output'><pre>loss 0.31</pre></div><table><tr><td>a</td></tr></table>", None),
    "wide_equations": ("<mjx-container display='true' style='display:block;overflow-x:auto;width:300px'>"
                       "<mjx-math style='display:inline-block;width:900px'>E[g] = x</mjx-math></mjx-container>",
                       "wide_equations"),
    "wide_outputs": ("<div class='cell_output'><pre style='overflow-x:auto'>" + "lambda = 0.5 " * 40 + "</pre></div>",
                     "wide_outputs"),
    "wide_tables": ("<div style='overflow-x:auto'><table><tr>" + "<td>first used</td>" * 60 + "</tr></table></div>",
                    "wide_tables"),
    "scrolling_code": ("<div class='cell_input'><pre style='overflow-x:auto'>" + "x = 1; " * 40 + "</pre></div>",
                       "scrolling_code"),
    "shrunk_images": (f"<img style='width:200px' src='data:image/png;base64,{PNG_800}'>", "shrunk_images"),
    "progress_leftovers": ("<div class='cell_output'><pre>training:  45%|####      | 45/100</pre></div>",
                           "progress_leftovers"),
    "machine_paths": ("<div class='cell_output'><pre>wrote /tmp/book-ch5/run.json</pre></div>", "machine_paths"),
    "tracebacks": ("<div class='cell_output'><pre>Traceback (most recent call last):\n  x</pre></div>", "tracebacks"),
}


@pytest.fixture(scope="module")
def defect_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("defects")
    for name, (body, _) in DEFECTS.items():
        (root / f"{name}.html").write_text(f"<html><body><article class='bd-article' style='width:600px'>{body}"
                                           "</article></body></html>", encoding="utf-8")
    with serve(root) as url:
        yield url


@pytest.mark.parametrize("name", list(DEFECTS))
def test_probe_flags_each_class_of_defect(defect_site, browser, name):
    browser.get(f"{defect_site}/{name}.html")
    found = browser.execute_async_script(PROBLEMS)
    flagged = {k for k, v in found.items() if k != "mathjax" and v}
    expected = DEFECTS[name][1]
    assert flagged == ({expected} if expected else set()), (name, found)
