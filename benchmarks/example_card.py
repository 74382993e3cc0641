"""Render `model_cards/example_movie_reviews_pb.md`: the card a push of the default recipe's model publishes.

    python -m benchmarks.example_card           # rewrite the example card
    python -m benchmarks.example_card --check   # exit 1 if the committed card is out of date

The model is the task benchmark's PB run on movie reviews, seed 0 (configs/movie_reviews.yaml,
what `python scripts/train.py configs/movie_reviews.yaml` trains): its results file gives the
metrics, the recipe and the growth history, and its recorded structure (MiniLM-L2 with the
dendrites it ended with) gives the parameter counts. Weights do not enter a card, so the structure
is rebuilt untrained.
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import AutoConfig, AutoModelForSequenceClassification

import hf_dendrites as hd
from benchmarks.common import ROOT, RUNS
from experiments.data import TASK_DESCRIPTIONS
from experiments.pretrained import hub_id_of, resolve_model
from hf_dendrites.serialization import apply_structure

SOURCE = RUNS / "movie_reviews" / "pb_streaming" / "seed0.json"
CARD = ROOT / "model_cards" / "example_movie_reviews_pb.md"
REPO_ID = "your-name/minilm-l2-movie-reviews-dendrites"


def render() -> str:
    results = json.loads(SOURCE.read_text(encoding="utf-8"))
    results.setdefault("dataset", dict(TASK_DESCRIPTIONS["movie_reviews"]))  # runs from before that entry
    # runs from before scripts/train.py recorded the base model's Hub id ('minilm-l2' is all-MiniLM-L6-v2's)
    results.setdefault("base_model", hub_id_of(results["config"]["model"]["model_name_or_path"]))
    # runs from before the cached candidate learner trained their candidates with the streaming one
    results["config"]["dendrites"].setdefault("candidate_learner", "streaming")
    path, overrides = resolve_model(results["config"]["model"]["model_name_or_path"])
    config = AutoConfig.from_pretrained(path, num_labels=2, **overrides)
    model = AutoModelForSequenceClassification.from_config(config)
    hd.add_dendrites(model, hd.DendriteConfig.from_saved(results["config"]["dendrites"]))
    apply_structure(model, {"layers": {name: {"dendrites": n} for name, n in results["dendrites_per_layer"].items()}})
    card = hd.hub.model_card(model, REPO_ID, results=results, history_plot="dendrite_history.png", license="apache-2.0")
    return str(card) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed card is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not CARD.is_file() or CARD.read_text(encoding="utf-8") != text:
            print(f"{CARD} is out of date: run python -m benchmarks.example_card", file=sys.stderr)
            return 1
        return 0
    CARD.write_text(text, encoding="utf-8")
    print(f"wrote {CARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
