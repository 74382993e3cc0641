"""The `dendrites/*` scalars reach the logging integrations users turn on with `report_to`."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator  # a dev dependency
from test_trainer import make_trainer


def scalars_written(log_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag in the event files under `log_dir`, read back the way TensorBoard reads them."""
    values: dict[str, list[float]] = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = event_accumulator.EventAccumulator(str(events.parent))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return values


def test_tensorboard_receives_the_dendrite_scalars(tmp_path, monkeypatch):
    log_dir = tmp_path / "tensorboard"
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(log_dir))
    trainer = make_trainer(tmp_path / "run", args={"report_to": ["tensorboard"]})
    trainer.train()

    scalars = scalars_written(log_dir)
    assert scalars, f"no event files under {log_dir}"
    # transformers' TensorBoard callback prefixes the Trainer's log keys with "train/"
    dendrite_tags = {tag.split("train/", 1)[-1] for tag in scalars if "dendrites/" in tag}
    assert {"dendrites/count", "dendrites/grew", "dendrites/dendrite_parameters"} <= dendrite_tags
    for name in ("dendrites/count", "dendrites/grew", "dendrites/reverted"):
        logged = [entry[name] for entry in trainer.state.log_history if name in entry]
        written = next(values for tag, values in scalars.items() if tag.endswith(name))
        assert written == pytest.approx(logged), name
    assert max(scalars["train/dendrites/grew"]) == 1.0  # the run grew, and TensorBoard saw it
