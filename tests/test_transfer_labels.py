"""Which labels each kind of transfer reads (Pan & Yang 2010; the article's erratum 4).

Transductive transfer (domain adaptation) reads the source labels and never the target's: training DANN with the
target labels replaced by garbage gives bit-identical weights. With the source labels replaced, it does not.
"""
import dataclasses

import torch

from mapping.data.moons import inter_twinning_moons
from mapping.experiments.moons import train_moons


def garbage(y: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1000, 1000, y.shape, generator=g)  # (N,) not even valid classes


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_dann_never_reads_target_labels_but_depends_on_source_labels():
    torch.set_num_threads(1)
    data = inter_twinning_moons(seed=0)
    reference, _ = train_moons("dann", data, seed=0, steps=200)
    blind, _ = train_moons("dann", dataclasses.replace(data, target_y=garbage(data.target_y, 1)), seed=0, steps=200)
    assert same_weights(reference, blind)  # the target labels changed nothing, bit for bit
    flipped, _ = train_moons("dann", dataclasses.replace(data, source_y=1 - data.source_y), seed=0, steps=200)
    assert not same_weights(reference, flipped)  # the source labels are what it learns from
