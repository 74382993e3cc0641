"""Candidates on held-aside data: the split, the sampler, and a DendriteTrainer run with it."""

from __future__ import annotations

import pytest
from test_trainer import dendrite_setup, make_trainer

import hf_dendrites as hd
from hf_dendrites.holdout import PhaseSampler, holdout_split


def test_the_split_is_disjoint_complete_and_pinned_by_seed():
    neuron, held = holdout_split(100, 0.2, seed=3)
    assert len(held) == 20 and len(neuron) == 80
    assert set(neuron).isdisjoint(held) and set(neuron) | set(held) == set(range(100))
    assert holdout_split(100, 0.2, seed=3) == (neuron, held)
    assert holdout_split(100, 0.2, seed=4) != (neuron, held)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.999])
def test_a_split_that_leaves_a_side_empty_is_refused(fraction):
    with pytest.raises(ValueError, match="holdout"):
        holdout_split(10, fraction, seed=0)


def test_the_sampler_draws_from_the_part_of_the_current_phase():
    neuron, held = holdout_split(50, 0.3, seed=0)
    phase = {"dendrite": False}
    sampler = PhaseSampler(neuron, held, lambda: phase["dendrite"], seed=0)
    assert len(sampler) == len(neuron)
    drawn = []
    for count, index in enumerate(sampler):
        drawn.append((phase["dendrite"], index))
        phase["dendrite"] = 10 <= count < 30  # a dendrite phase in the middle of the epoch
    assert all(index in held for dendrite, index in drawn if dendrite)
    assert all(index in neuron for dendrite, index in drawn if not dendrite)
    first_epoch = [index for dendrite, index in drawn if not dendrite]
    assert len(set(first_epoch)) == len(first_epoch)  # no repeats within a pass over the neuron part
    one, other = PhaseSampler(neuron, held, lambda: False, seed=5), PhaseSampler(neuron, held, lambda: False, seed=5)
    assert list(one) == list(other) and sorted(one) == sorted(neuron)  # repeatable from the seed, a full pass


def test_dendrite_trainer_trains_candidates_only_on_the_held_aside_examples(tmp_path, monkeypatch):
    config = dendrite_setup(candidate_holdout_fraction=0.25, candidate_learner="streaming")
    trainer = make_trainer(tmp_path, config, args={"save_strategy": "no"})
    seen: dict[bool, set[int]] = {False: set(), True: set()}
    original_iter = PhaseSampler.__iter__

    def recording(self):
        for index in original_iter(self):
            seen[self.in_dendrite_phase()].add(index)
            yield index

    monkeypatch.setattr(PhaseSampler, "__iter__", recording)
    trainer.train()
    neuron, held = holdout_split(len(trainer.train_dataset), 0.25, seed=trainer.args.seed)
    assert seen[True] and seen[True] <= set(held)  # every candidate batch came from the held-aside part
    assert seen[False] and seen[False] <= set(neuron)
    assert "grow" in [r["action"] for r in trainer.tracker.history]
    assert hd.num_dendrites(trainer.model) == trainer.tracker.state.best_num_dendrites


def test_a_cached_dendrite_phase_caches_only_the_held_aside_examples(tmp_path, monkeypatch):
    import hf_dendrites.dendrite_phase as dendrite_phase

    trainer = make_trainer(tmp_path, dendrite_setup(candidate_holdout_fraction=0.25), args={"save_strategy": "no"})
    passes = []
    original = dendrite_phase.collect_candidate_rows

    def recording(model, batches, compute_loss, **kwargs):
        batches = list(batches)
        passes.append(sum(int(batch["labels"].shape[0]) for batch in batches))
        return original(model, batches, compute_loss, **kwargs)

    monkeypatch.setattr(dendrite_phase, "collect_candidate_rows", recording)
    trainer.train()
    _, held = holdout_split(len(trainer.train_dataset), 0.25, seed=trainer.args.seed)
    assert passes and all(count == len(held) for count in passes)  # one pass over the held-aside part, no more
    assert "grow" in [r["action"] for r in trainer.tracker.history]
