"""mapping.memo: work computed once per configuration and package code, then read back."""
import pytest
import torch

from mapping import memo


@pytest.fixture
def counted(fake_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.arange(3.0) * len(calls), "acc": 0.5}
    return calls, compute


def test_computes_once_then_reads_back(counted):
    calls, compute = counted
    first = memo.cached("pretrain", {"epochs": 2}, compute)
    second = memo.cached("pretrain", {"epochs": 2}, compute)
    assert len(calls) == 1
    torch.testing.assert_close(second["w"], first["w"])
    assert second["acc"] == 0.5


def test_config_and_package_code_change_the_key(counted, monkeypatch):
    calls, compute = counted
    memo.cached("pretrain", {"epochs": 2}, compute)
    memo.cached("pretrain", {"epochs": 3}, compute)
    assert len(calls) == 2
    monkeypatch.setattr(memo, "code_hash", lambda package=memo.PACKAGE: "edited")
    value = memo.cached("pretrain", {"epochs": 2}, compute)
    assert len(calls) == 3 and value["w"][1] == 3.0


def test_code_hash_follows_every_source_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "sub" / "b.py").write_text("y = 2\n")
    before = memo.code_hash(tmp_path)
    memo.code_hash.cache_clear()
    (tmp_path / "sub" / "b.py").write_text("y = 3\n")
    assert memo.code_hash(tmp_path) != before
    memo.code_hash.cache_clear()


def test_unreadable_store_is_recomputed(counted):
    calls, compute = counted
    memo.cached("pretrain", {"epochs": 2}, compute)
    memo.path("pretrain", {"epochs": 2}).write_bytes(b"truncated")
    memo.cached("pretrain", {"epochs": 2}, compute)
    assert len(calls) == 2


def test_switched_off(counted, monkeypatch):
    calls, compute = counted
    monkeypatch.setenv("MAPPING_MEMO", "0")
    memo.cached("pretrain", {"epochs": 2}, compute)
    memo.cached("pretrain", {"epochs": 2}, compute)
    assert len(calls) == 2 and not memo.path("pretrain", {"epochs": 2}).exists()


@pytest.mark.parametrize("name, config, match", [
    ("", {}, "name must be"), ("a/b", {}, "name must be"),
    ("ok", [1], "config must be a mapping"), ("ok", {"t": torch.ones(1)}, "config must hold JSON"),
    ("ok", {"x": float("nan")}, "config must hold JSON")])
def test_bad_arguments_are_named(fake_cache, name, config, match):
    with pytest.raises((ValueError, TypeError), match=match):
        memo.cached(name, config, lambda: 1)


def test_the_quick_pages_ask_for_one_omniglot_pretraining():
    """Chapters 1, 2.2 and 2.4 pre-train the same backbone in quick mode, so the build computes it once."""
    from mapping.experiments.background import BackgroundConfig
    from mapping.experiments.combine import CombineConfig
    from mapping.experiments.transfer_omniglot import TransferConfig
    ch1, ch22, ch24 = (c.for_mode("quick") for c in (BackgroundConfig, TransferConfig, CombineConfig))
    args = lambda c, lr: (c.pretrain_epochs, c.pretrain_drawers, c.batch, lr, c.hidden)  # noqa: E731
    assert ch1.pretrain_characters is None  # all 964 background characters, as 2.2 and 2.4
    assert args(ch1, 1e-3) == args(ch22, ch22.pretrain_lr) == args(ch24, ch24.pretrain_lr)
    assert 0 in ch1.seeds and 0 in ch22.seeds and 0 in ch24.seeds
