"""benchmarks/peer_libraries.py: parsing of pip/import outcomes, --only validation, the stored record's fields.

No network and no virtual environment here: the steps' outcomes are given as data.
"""
from __future__ import annotations

import pytest

from benchmark_loader import load_benchmark
from mapping import results

peer = load_benchmark("peer_libraries")

PIP_BUILD_FAILURE = """Collecting learn2learn
  Building wheel for learn2learn (pyproject.toml) ... error
  error: subprocess-exited-with-error

  × Building wheel for learn2learn (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [12 lines of output]
      learn2learn/data/meta_dataset.c:11:10: fatal error: longintrepr.h: No such file or directory
      compilation terminated.
      error: command '/usr/bin/gcc' failed with exit code 1
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for learn2learn
ERROR: Could not build wheels for learn2learn, which is required to install pyproject.toml-based projects
"""
TRACEBACK = """Traceback (most recent call last):
  File "<string>", line 12, in <module>
  File "/tmp/v/lib/python3.11/site-packages/tllib/modules/grl.py", line 71, in forward
    coeff = np.float(
  File "/tmp/v/lib/python3.11/site-packages/numpy/__init__.py", line 400, in __getattr__
    raise AttributeError(__former_attrs__[attr], name=None)
AttributeError: module 'numpy' has no attribute 'float'.
`np.float` was a deprecated alias for the builtin `float`.
"""


def ok(seconds=1.0):
    return {"ok": True, "seconds": seconds, "error": ""}


def failed(error, seconds=1.0):
    return {"ok": False, "seconds": seconds, "error": error}


def test_last_error_line_takes_pips_final_error_not_its_notes():
    assert peer.last_error_line(PIP_BUILD_FAILURE) == \
        "learn2learn/data/meta_dataset.c:11:10: fatal error: longintrepr.h: No such file or directory"
    wrapper_only = "error: subprocess-exited-with-error\nERROR: Failed building wheel for x\nnote: hint\n"
    assert peer.last_error_line(wrapper_only) == "ERROR: Failed building wheel for x"
    assert peer.last_error_line("ERROR: No matching distribution found for tllib\n\n[notice] x\n") == \
        "ERROR: No matching distribution found for tllib"


def test_last_error_line_of_a_resolution_conflict_names_the_clashing_requirements():
    stderr = ("ERROR: Cannot install torchmeta==1.8.0 because these package versions have conflicting dependencies."
              "\n\nThe conflict is caused by:\n    The user requested torch==2.13.0\n"
              "    torchmeta 1.8.0 depends on torch<1.10.0 and >=1.4.0\n\nTo fix this you could try to:\n"
              "ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/...\n")
    assert peer.last_error_line(stderr) == \
        "The user requested torch==2.13.0; torchmeta 1.8.0 depends on torch<1.10.0 and >=1.4.0"


def test_last_error_line_of_a_traceback_is_the_exception():
    assert peer.last_error_line(TRACEBACK) == "AttributeError: module 'numpy' has no attribute 'float'."
    assert peer.last_error_line("something odd\n  \n") == "something odd"
    assert peer.last_error_line("") == ""


def test_summarise_all_steps_ok():
    r = peer.summarise({"venv": ok(), "torch": ok(20), "install": ok(5), "import": ok(), "smoke": ok(2)})
    assert (r["install_ok"], r["import_ok"], r["smoke_ok"]) == (True, True, True)
    assert r["error"] == "" and r["failed_step"] is None and r["seconds"]["torch"] == 20


def test_summarise_failed_install_stops_everything_and_keeps_its_error():
    r = peer.summarise({"venv": ok(), "torch": ok(), "install": failed("ERROR: Could not build wheels")})
    assert (r["install_ok"], r["import_ok"], r["smoke_ok"]) == (False, False, False)
    assert r["failed_step"] == "install" and r["error"] == "ERROR: Could not build wheels"


def test_summarise_smoke_failure_after_import():
    r = peer.summarise({"venv": ok(), "torch": ok(), "install": ok(), "import": ok(),
                        "smoke": failed("AttributeError: module 'numpy' has no attribute 'float'.")})
    assert (r["install_ok"], r["import_ok"], r["smoke_ok"]) == (True, True, False)
    assert r["failed_step"] == "smoke" and r["routes"] == {"install": {"ok": True, "error": ""}}


def test_summarise_fallback_route_decides_install_and_keeps_pypi_failure_in_routes():
    steps = {"venv": ok(), "torch": ok(), "install": failed("ERROR: No matching distribution found for tllib"),
             "install:testpypi": failed("ERROR: No matching distribution found for tllib"),
             "install:source": ok(), "import": ok(), "smoke": failed("AttributeError: np.float")}
    r = peer.summarise(steps)
    assert r["install_ok"] and r["import_ok"] and not r["smoke_ok"]
    assert r["error"] == "AttributeError: np.float"
    assert r["routes"]["install"] == {"ok": False, "error": "ERROR: No matching distribution found for tllib"}
    r = peer.summarise({k: v for k, v in steps.items() if k not in ("install:source", "import", "smoke")})
    assert not r["install_ok"] and r["failed_step"] == "install:testpypi"


def test_summarise_torch_failure_is_not_an_install_success():
    r = peer.summarise({"venv": ok(), "torch": failed("ERROR: torch"), "install": ok()})
    assert not r["install_ok"] and r["failed_step"] == "torch"
    with pytest.raises(ValueError, match="steps"):
        peer.summarise({})


def test_parse_versions_reads_the_probe_line():
    v = peer.parse_versions('warning\n{"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": null, "version": "0.2.1"}\n')
    assert v == {"python": "3.11.7", "torch": "2.13.0+cpu", "numpy": None, "version": "0.2.1"}
    assert peer.parse_versions("")["version"] is None


def test_install_routes_only_tllib_has_fallbacks():
    assert [s for s, _ in peer.install_routes("higher", "higher", "/src")] == ["install"]
    routes = peer.install_routes("tllib", "tllib", "/src")
    assert [s for s, _ in routes] == ["install", "install:testpypi", "install:source"]
    assert peer.TESTPYPI in routes[1][1] and routes[2][1] == ["/src"]


def test_only_rejects_unknown_names():
    with pytest.raises(ValueError, match="--only.*nosuchlib"):
        peer.parse(["--only", "higher", "nosuchlib"])
    assert peer.parse(["--only", "higher", "torchjd"]).only == ["higher", "torchjd"]


def test_every_library_has_a_smoke_snippet_that_compiles():
    assert set(peer.SMOKE) == set(peer.LIBRARIES) and len(peer.LIBRARIES) == 8
    for name, code in peer.SMOKE.items():
        compile(peer._HEAD + code + peer._TAIL, name, "exec")


def test_stored_record_has_the_fields_the_book_reads():
    record = results.load("peer_libraries")
    if record is None:
        pytest.skip("no results/peer_libraries.json stored")
    assert set(record["libraries"]) == set(peer.LIBRARIES)
    for name, lib in record["libraries"].items():
        for field in ("install_ok", "import_ok", "smoke_ok", "version", "error"):
            assert field in lib, (name, field)
        assert lib["smoke_ok"] <= lib["import_ok"] <= lib["install_ok"], name
        assert lib["smoke_ok"] or lib["error"], f"{name} failed without an error line"
        assert record["metrics"][f"{name}/smoke_ok"] == int(lib["smoke_ok"])


def test_last_error_line_prefers_the_compilers_fatal_error_and_shortens_pips_cannot_install():
    build = ("      building 'l2l.data.meta_dataset' extension\n"
             "      l2l/data/meta_dataset.c:210:12: fatal error: longintrepr.h: No such file or directory\n"
             "      compilation terminated.\n"
             "      error: Command '['gcc', '-c', 'l2l/data/meta_dataset.c']' returned non-zero exit status 1.\n"
             "  ERROR: Failed building wheel for learn2learn\n")
    assert peer.last_error_line(build) == \
        "l2l/data/meta_dataset.c:210:12: fatal error: longintrepr.h: No such file or directory"
    conflict = ("ERROR: Cannot install torchmeta==1.1.0, torchmeta==1.2.0 and torchmeta==1.8.0 because these package "
                "versions have conflicting dependencies.\nERROR: ResolutionImpossible: for help visit x\n")
    assert peer.last_error_line(conflict) == \
        "ERROR: Cannot install torchmeta 1.1.0 to 1.8.0 (3 releases): conflicting dependencies"
