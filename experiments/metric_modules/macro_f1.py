"""Macro-averaged F1: the unweighted mean of per-class F1 scores (scikit-learn)."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = """
Macro F1 is the unweighted mean over classes of F1 = 2 * precision * recall /
(precision + recall). Every class counts equally, so rare classes (e.g. spam,
TREC's ABBR) weigh as much as frequent ones. A class that is never predicted
and never present is ignored; a class with no true positives scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): true class indices.
    labels (list of int, optional): classes to average over; default: all
        classes present in predictions or references.
    sample_weight (list of float, optional): per-example weights.
Returns:
    macro_f1 (float): in [0, 1].
Examples:
    >>> metric = evaluate.load("experiments/metric_modules/macro_f1.py")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'macro_f1': 0.6666666666666666}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V. and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P. and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MacroF1(evaluate.Metric):
    """Macro-averaged F1 of class-index predictions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int32"),
                    "references": datasets.Value("int32"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions, references, labels=None, sample_weight=None):
        # zero_division=0 gives the same value as sklearn's default but without the warning.
        score = f1_score(
            references,
            predictions,
            labels=labels,
            average="macro",
            sample_weight=sample_weight,
            zero_division=0,
        )
        return {"macro_f1": float(score)}
