"""Tests for experiments.metrics: hand-computed values, input shapes, offline loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import EvalPrediction

from experiments import metrics

# 3 classes, 8 examples. Confusion matrix (rows = truth, cols = prediction):
#          p0 p1 p2
#   t0  [  2  1  0 ]
#   t1  [  0  2  1 ]
#   t2  [  1  0  1 ]
REFERENCES = np.array([0, 0, 0, 1, 1, 1, 2, 2])
PREDICTIONS = np.array([0, 0, 1, 1, 1, 2, 2, 0])

# accuracy = (2 + 2 + 1) / 8
ACCURACY = 5 / 8
# per-class F1 = 2TP / (2TP + FP + FN):
#   class 0: TP 2, FP 1, FN 1 -> 4/6;  class 1: TP 2, FP 1, FN 1 -> 4/6;  class 2: TP 1, FP 1, FN 1 -> 2/4
MACRO_F1 = (4 / 6 + 4 / 6 + 2 / 4) / 3
# Gorodkin's R_K: c = correct = 5, s = samples = 8, p_k = predicted counts (3, 3, 2), t_k = true (3, 3, 2)
#   (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2) * (s^2 - sum t_k^2)) = (40 - 22) / (64 - 22)
MCC = 18 / 42


def one_hot_logits(classes: np.ndarray, n_classes: int = 3) -> np.ndarray:
    logits = np.full((len(classes), n_classes), -1.0, dtype=np.float32)
    logits[np.arange(len(classes)), classes] = 2.0
    return logits


def test_available_metrics():
    assert metrics.METRICS == ("accuracy", "macro_f1", "matthews_correlation")
    for name in metrics.METRICS:
        assert metrics.metric_module_path(name).is_file()


def test_modules_keep_one_import_per_line():
    """evaluate's import scanner misreads ``import a, b`` as a missing package."""
    for name in metrics.METRICS:
        for line in metrics.metric_module_path(name).read_text().splitlines():
            if line.startswith("import "):
                assert "," not in line, (name, line)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("accuracy", ACCURACY), ("macro_f1", MACRO_F1), ("matthews_correlation", MCC)],
)
def test_load_metric_values(name, expected):
    module = metrics.load_metric(name)
    result = module.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result == {name: pytest.approx(expected)}
    # A second compute on the same object gives the same answer (no leftover state).
    assert module.compute(predictions=PREDICTIONS, references=REFERENCES) == result


def test_build_compute_metrics_from_logits():
    compute = metrics.build_compute_metrics()
    result = compute(EvalPrediction(predictions=one_hot_logits(PREDICTIONS), label_ids=REFERENCES))
    assert result == {
        "accuracy": pytest.approx(ACCURACY),
        "macro_f1": pytest.approx(MACRO_F1),
        "matthews_correlation": pytest.approx(MCC),
    }
    assert list(result) == list(metrics.METRICS)
    assert all(type(v) is float for v in result.values())
    json.dumps(result)  # loggable as-is


def test_tuple_predictions_and_plain_tuple_input():
    compute = metrics.build_compute_metrics(["accuracy"])
    hidden = np.zeros((len(PREDICTIONS), 4, 5), dtype=np.float32)
    eval_pred = EvalPrediction(predictions=(one_hot_logits(PREDICTIONS), hidden), label_ids=REFERENCES)
    assert compute(eval_pred) == {"accuracy": pytest.approx(ACCURACY)}
    assert compute((one_hot_logits(PREDICTIONS), REFERENCES)) == {"accuracy": pytest.approx(ACCURACY)}


def test_perfect_and_constant_predictions():
    compute = metrics.build_compute_metrics()
    perfect = compute(EvalPrediction(predictions=one_hot_logits(REFERENCES), label_ids=REFERENCES))
    assert perfect == {"accuracy": 1.0, "macro_f1": 1.0, "matthews_correlation": 1.0}
    constant = compute(EvalPrediction(predictions=one_hot_logits(np.zeros(8, dtype=int)), label_ids=REFERENCES))
    assert constant["accuracy"] == pytest.approx(3 / 8)
    assert constant["matthews_correlation"] == 0.0
    # Only class 0 gets any F1: 2*3 / (2*3 + 5 + 0) = 6/11, averaged over the 3 classes present.
    assert constant["macro_f1"] == pytest.approx((6 / 11) / 3)


def test_compute_metrics_function():
    result = metrics.build_compute_metrics()(
        EvalPrediction(predictions=one_hot_logits(PREDICTIONS), label_ids=REFERENCES)
    )
    assert result["matthews_correlation"] == pytest.approx(MCC)


def test_mismatched_lengths():
    compute = metrics.build_compute_metrics(["accuracy"])
    with pytest.raises(ValueError, match="predictions"):
        compute(EvalPrediction(predictions=one_hot_logits(PREDICTIONS), label_ids=REFERENCES[:3]))


def test_unknown_metric_fails_at_build_time(monkeypatch):
    def must_not_load(name):  # pragma: no cover - only runs if validation is broken
        raise AssertionError("metrics were loaded before names were validated")

    monkeypatch.setattr(metrics, "load_metric", must_not_load)
    with pytest.raises(ValueError, match="f1_micro") as info:
        metrics.build_compute_metrics(["accuracy", "f1_micro"])
    for name in metrics.METRICS:
        assert name in str(info.value)
    with pytest.raises(ValueError):
        metrics.build_compute_metrics([])


def test_load_metric_unknown_name():
    with pytest.raises(ValueError, match="available metrics: accuracy, macro_f1, matthews_correlation"):
        metrics.load_metric("bleu")


def test_works_with_hub_offline(tmp_path):
    """In a fresh process with HF_HUB_OFFLINE=1 and an empty HF cache, all metrics still load."""
    code = (
        "import json, numpy as np\n"
        "from experiments.metrics import build_compute_metrics\n"
        "f = build_compute_metrics()\n"
        f"print(json.dumps(f((np.eye(3)[{PREDICTIONS.tolist()}], np.array({REFERENCES.tolist()})))))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    repo_root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "accuracy": pytest.approx(ACCURACY),
        "macro_f1": pytest.approx(MACRO_F1),
        "matthews_correlation": pytest.approx(MCC),
    }
