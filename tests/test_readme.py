"""The README's "In code" snippet runs as written, on a tiny model and a tiny task."""

from __future__ import annotations

import re
from pathlib import Path

from test_trainer import TRAIN, VALIDATION
from tiny_models import tiny_model

import hf_dendrites as hd

README = Path(__file__).resolve().parents[1] / "README.md"


def in_code_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- in-code:start -->\s*```python\n(.*?)```\s*<!-- in-code:end -->", text, re.S)
    assert block, "README has no in-code snippet between the markers"
    return block.group(1)


def test_readme_snippet_trains_grows_saves_and_loads(tmp_path, monkeypatch):
    model_path = tmp_path / "tiny"
    tiny_model(num_labels=2).save_pretrained(model_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"model_path": str(model_path), "train": TRAIN, "validation": VALIDATION}
    exec(compile(in_code_snippet(), "README.md", "exec"), namespace)
    trainer, model = namespace["trainer"], namespace["model"]
    assert any(record["action"] == "grow" for record in trainer.tracker.history)
    assert (tmp_path / "out" / "dendrite_history.png").exists()
    assert hd.num_dendrites(model) == hd.num_dendrites(trainer.model)
    assert trainer.evaluate()["eval_accuracy"] == trainer.tracker.best_score


def test_readme_tables_match_the_committed_results():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(README.parent / "scripts" / "update_readme.py"), "--check"])
    assert result.returncode == 0, "README.md tables are stale: run python scripts/update_readme.py"
