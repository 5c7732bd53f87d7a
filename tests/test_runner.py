"""The shared run helpers of mapping.experiments.runner: one checkpoint name for one training, the names stored
checkpoints already have."""
import hashlib
import json

from mapping.experiments.omniglot_maml import MamlConfig, checkpoint_key
from mapping.experiments.omniglot_metric import MetricConfig
from mapping.experiments.runner import checkpoint_path, config_key, training_fields


def test_the_key_is_the_sha256_of_the_sorted_json():
    fields = {"b": 2, "a": [1, 2], "c": "x"}
    want = hashlib.sha256(b'{"a": [1, 2], "b": 2, "c": "x"}').hexdigest()[:12]
    assert config_key(fields) == want and config_key(dict(reversed(fields.items()))) == want


def test_test_fields_and_an_unset_amp_leave_the_name_alone(tmp_path):
    config = MamlConfig()
    base = checkpoint_path(tmp_path, "omniglot-maml-maml/5w1s", training_fields(config, ("test_tasks",)))
    assert base.parent == tmp_path and base.name.startswith("omniglot-maml-maml-5w1s-") and base.suffix == ".pt"
    other_test = MamlConfig(test_tasks=config.test_tasks + 1)
    assert checkpoint_path(tmp_path, "omniglot-maml-maml/5w1s", training_fields(other_test, ("test_tasks",))) == base
    trained_longer = MamlConfig(iterations=config.iterations + 1)
    assert checkpoint_path(tmp_path, "x", training_fields(trained_longer)) != checkpoint_path(
        tmp_path, "x", training_fields(config))
    assert "amp" not in training_fields(MetricConfig()) and training_fields(MetricConfig(amp=True))["amp"] is True
    assert checkpoint_path(None, "x", {}) is None


def test_omniglot_maml_key_is_the_name_its_stored_checkpoints_have():
    """The formula the experiment used before the runner, written out: the same 12 digits."""
    from dataclasses import asdict
    from mapping.experiments.omniglot_maml import TEST_FIELDS
    config = MamlConfig()
    training = {k: v for k, v in asdict(config).items() if k not in TEST_FIELDS and (k != "amp" or v)}
    assert checkpoint_key(config) == hashlib.sha256(json.dumps(training, sort_keys=True).encode()).hexdigest()[:12]


def test_over_seeds_gathers_each_metric_in_seed_order():
    from mapping.experiments.runner import over_seeds
    calls = []

    def one_seed(seed):
        calls.append(seed)
        return {"a": seed * 1.0, **({"b": -seed} if seed != 2 else {})}  # a metric a seed can lack
    assert over_seeds((3, 1, 2), one_seed) == {"a": [3.0, 1.0, 2.0], "b": [-3, -1]} and calls == [3, 1, 2]
