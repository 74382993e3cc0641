"""Classification metrics for ``transformers.Trainer``, built on ``evaluate``, fully offline.

``evaluate.load("accuracy")`` downloads the metric script from the Hugging
Face Hub, which fails without network. The studies ship their own metric
scripts in :mod:`experiments.metric_modules` and load them by file path,
which ``evaluate`` resolves locally (from this checkout: ``experiments`` is
not part of the installed ``hf_dendrites`` package).

Typical use::

    trainer = Trainer(..., compute_metrics=build_compute_metrics())
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import evaluate
    from transformers import EvalPrediction

logger = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "METRIC_MODULES_DIR",
    "metric_module_path",
    "load_metric",
    "build_compute_metrics",
]

#: Metrics shipped with the studies; also the default set reported during evaluation.
METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "matthews_correlation")

#: Folder holding one ``evaluate`` metric script per name in :data:`METRICS`.
METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"


def _unknown(name: object) -> ValueError:
    return ValueError(f"Unknown metric {name!r}; available metrics: {', '.join(METRICS)}")


def metric_module_path(name: str) -> Path:
    """Path of the local ``evaluate`` script for ``name``; ValueError for unknown names."""
    if name not in METRICS:
        raise _unknown(name)
    path = METRIC_MODULES_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"Metric script for {name!r} is missing from the installation: {path}")
    return path


def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of :data:`METRICS` from its local script, without touching the Hub.

    Not cached: an ``evaluate`` module is stateless between ``compute`` calls,
    but ``add_batch`` accumulates predictions inside the object and it is not
    thread-safe, so a process-wide shared instance could leak one caller's
    batches into another's result. Loading a local script takes a few
    milliseconds, so each caller gets its own object instead.
    ``keep_in_memory=True`` stops ``evaluate`` from writing Arrow cache files
    and lock files under ``~/.cache`` (which concurrent runs would contend for).
    """
    import evaluate  # deferred: importing evaluate costs about a second

    path = metric_module_path(name)
    logger.debug("Loading metric %r from %s", name, path)
    return evaluate.load(str(path), keep_in_memory=True)


def _validate(metric_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(metric_names, str):
        metric_names = (metric_names,)
    names = tuple(metric_names)
    if not names:
        raise ValueError(f"No metrics requested; available metrics: {', '.join(METRICS)}")
    for name in names:
        if name not in METRICS:
            raise _unknown(name)
    return tuple(dict.fromkeys(names))


def _first(value: Any) -> Any:
    """Models may return (logits, hidden_states, ...): the logits come first."""
    while isinstance(value, (tuple, list)):
        if not value:
            raise ValueError("Empty predictions")
        value = value[0]
    return value


def _class_predictions(predictions: Any) -> np.ndarray:
    """Argmax over the last axis of logits; 1-D input is taken as class ids already."""
    array = np.asarray(_first(predictions))
    if array.ndim == 1:
        return array.astype(np.int64)
    return array.argmax(axis=-1).reshape(-1)


def _unpack(eval_pred: EvalPrediction | tuple[Any, Any]) -> tuple[Any, Any]:
    if hasattr(eval_pred, "predictions") and hasattr(eval_pred, "label_ids"):
        return eval_pred.predictions, eval_pred.label_ids
    predictions, labels = eval_pred
    return predictions, labels


def build_compute_metrics(
    metric_names: Sequence[str] = METRICS,
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics`` callable for ``Trainer`` reporting ``metric_names``.

    Names are checked and the scripts loaded now, so a typo fails before
    training starts rather than at the first evaluation. The returned function
    takes an ``EvalPrediction`` (or a ``(predictions, labels)`` tuple), applies
    argmax to the logits and returns plain Python floats keyed by metric name.
    """
    names = _validate(metric_names)
    modules = {name: load_metric(name) for name in names}

    def compute(eval_pred: EvalPrediction | tuple[Any, Any]) -> dict[str, float]:
        predictions, labels = _unpack(eval_pred)
        predicted = _class_predictions(predictions)
        references = np.asarray(_first(labels)).reshape(-1).astype(np.int64)
        if predicted.shape != references.shape:
            raise ValueError(f"{predicted.shape[0]} predictions but {references.shape[0]} labels")
        results: dict[str, float] = {}
        for name, module in modules.items():
            value = module.compute(predictions=predicted, references=references)
            results[name] = float(value[name])
        return results

    return compute
