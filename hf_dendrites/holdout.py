"""Candidates that learn from data the model never trained on.

After the validation peak most training-set errors are memorised noise, and candidates trained
on them learn noise. With `DendriteConfig.candidate_holdout_fraction`, a fixed share of the
training set is held aside: neuron phases never see it, dendrite phases see nothing else, so a
candidate correlates with errors the model makes on unseen examples.

`PhaseSampler` does this inside the ordinary training loop: it hands out indices one at a time
and asks, for each, which phase the model is in. (A data loader with worker processes prefetches
a few batches, so up to that many batches around a phase switch come from the other part.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset, Sampler, Subset


def examples_at(dataset: Dataset, indices: list[int] | range) -> Dataset:
    """These examples of `dataset`, in this order (a `datasets.Dataset` stays one)."""
    return dataset.select(indices) if hasattr(dataset, "select") else Subset(dataset, indices)


def holdout_split(size: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(indices the neuron phases train on, indices held aside for the candidates), pinned by `seed`."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction!r}")
    held = math.ceil(size * fraction)
    if held < 1 or held >= size:
        raise ValueError(f"a holdout of {fraction} leaves no examples on one side of {size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


class PhaseSampler(Sampler[int]):
    """Shuffled indices of `neuron` in neuron phases and of `holdout` in dendrite phases.

    An epoch is one pass over the neuron part (its length is the epoch's length); the holdout
    part is a stream of its own, reshuffled each time it runs out. Both orders are drawn from
    `seed`, so a run is repeatable.
    """

    def __init__(
        self, neuron: list[int], holdout: list[int], in_dendrite_phase: Callable[[], bool], seed: int = 0
    ) -> None:
        if not neuron or not holdout:
            raise ValueError("PhaseSampler needs indices on both sides")
        self.neuron, self.holdout = list(neuron), list(holdout)
        self.in_dendrite_phase = in_dendrite_phase
        self.generator = torch.Generator().manual_seed(seed)
        self._holdout_stream: Iterator[int] = iter(())

    def __len__(self) -> int:
        return len(self.neuron)

    def _next_holdout(self) -> int:
        try:
            return next(self._holdout_stream)
        except StopIteration:
            order = torch.randperm(len(self.holdout), generator=self.generator).tolist()
            self._holdout_stream = iter([self.holdout[i] for i in order])
            return next(self._holdout_stream)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.neuron), generator=self.generator).tolist()
        neuron = iter([self.neuron[i] for i in order])
        for _ in range(len(self.neuron)):
            yield self._next_holdout() if self.in_dendrite_phase() else next(neuron)
