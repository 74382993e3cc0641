"""The history plot: metric per evaluation, phases shaded, growths and reverts marked."""

from __future__ import annotations

import os
from typing import Any

from matplotlib.figure import Figure

from .tracker import Action, Phase

# The file the trainer draws into `output_dir` and a Hub push publishes.
HISTORY_PLOT = "dendrite_history.png"


def plot_history(history: list[dict[str, Any]], path: str | os.PathLike, metric_name: str) -> None:
    """Draw a tracker's history to `path` (PNG). Dendrite-phase evaluations are shaded.

    Uses a bare `Figure` (no pyplot), so it never touches the user's backend or global state.
    """
    figure = Figure(figsize=(8, 4.5))
    axis = figure.subplots()
    evals = [record["eval"] for record in history]
    scores = [record["score"] for record in history]
    points = [(e, s) for e, s in zip(evals, scores) if s is not None]
    if points:
        axis.plot(*zip(*points), marker="o", markersize=3, color="tab:blue", label=metric_name)
    for record in history:
        if record["phase"] == Phase.DENDRITE:
            axis.axvspan(record["eval"] - 0.5, record["eval"] + 0.5, color="tab:orange", alpha=0.15, lw=0)
    marks = {"grow": ("tab:green", "growth"), "revert": ("tab:red", "revert to best")}
    labelled: set[str] = set()
    for record in history:
        kinds = []
        if record["action"] == Action.GROW:
            kinds.append("grow")
        if record["restore_best"]:
            kinds.append("revert")
        for kind in kinds:
            color, label = marks[kind]
            axis.axvline(record["eval"], color=color, ls="--", lw=1, label=None if kind in labelled else label)
            labelled.add(kind)
    candidate = [(r["eval"], r["candidate_score"]) for r in history if r["candidate_score"] is not None]
    if candidate:
        twin = axis.twinx()
        twin.plot(*zip(*candidate), "s", color="tab:orange", markersize=3, label="candidate correlation")
        twin.set_ylabel("candidate correlation")
        twin.legend(loc="lower right", fontsize=8)
    axis.set_xlabel("evaluation")
    axis.set_ylabel(metric_name)
    axis.set_title("Dendrite growth (shaded: dendrite phases)")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
