"""The MNIST-1D regime's data: generated offline, the same for the same seed, and sized as asked."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from benchmarks import mnist1d


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network use in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_the_generator_runs_offline_and_repeats_itself_for_a_seed(no_network):
    state = np.random.get_state()
    first = mnist1d.make_splits(train=30, validation=10, test=10, seed=3)
    again = mnist1d.make_splits(train=30, validation=10, test=10, seed=3)
    other = mnist1d.make_splits(train=30, validation=10, test=10, seed=4)
    assert {name: len(split) for name, split in first.items()} == {"train": 30, "validation": 10, "test": 10}
    rows = {name: split[:] for name, split in first.items()}  # every row, as tensors
    assert rows["train"]["inputs"].shape == (30, mnist1d.SIGNAL_LENGTH)
    assert set(rows["train"]["labels"].tolist()) <= set(range(mnist1d.CLASSES))
    for name, split in again.items():
        assert torch.equal(rows[name]["inputs"], split[:]["inputs"])
        assert torch.equal(rows[name]["labels"], split[:]["labels"])
    assert not torch.equal(rows["train"]["inputs"], other["train"][:]["inputs"])
    # the generator seeds numpy's global state; the caller's draws are left as they were
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


def test_an_empty_split_is_refused_naming_it():
    with pytest.raises(ValueError, match="at least one validation signal, got 0"):
        mnist1d.make_splits(train=10, validation=0, test=10)
