"""The learner protocol changed how the experiments call the learners, not what they compute: the smoke-mode
sinusoid run gives, to the last bit, the metrics it gave before the change (tests/data, made by the command
stored there at the commit stored there)."""
import json
import math
from pathlib import Path

import pytest

from mapping import reproduce

BEFORE = Path(__file__).parent / "data" / "sinusoid_smoke_before_protocol.json"


@pytest.mark.slow
def test_sinusoid_smoke_metrics_are_those_before_the_protocol(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))  # no memo of an earlier training
    before = json.loads(BEFORE.read_text())
    assert reproduce.main(["sinusoid", "--mode", "smoke", "--methods", "maml", "reptile", "pretrained",
                           "--no-resume", "--out", str(tmp_path)]) == 0
    after = json.loads((tmp_path / "sinusoid.json").read_text())["metrics"]
    assert len(before["metrics"]) > 500
    changed = [k for k, v in before["metrics"].items()
               if not (after.get(k) == v or (isinstance(v, float) and math.isnan(v) and math.isnan(after[k])))]
    assert not changed, f"{len(changed)} metrics changed, e.g. {changed[:3]}"
