"""Matthews correlation coefficient (multi-class R_K statistic) via scikit-learn."""

import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = """
The Matthews correlation coefficient (MCC) is a correlation between predicted
and true classes, from -1 (total disagreement) through 0 (no better than
chance, also returned for constant predictions) to +1 (perfect). Unlike
accuracy it stays informative on imbalanced data. For more than two classes
scikit-learn computes Gorodkin's R_K generalisation.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices.
    references (list of int): true class indices.
    sample_weight (list of float, optional): per-example weights.
Returns:
    matthews_correlation (float): in [-1, 1].
Examples:
    >>> metric = evaluate.load("experiments/metric_modules/matthews_correlation.py")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 1, 0])
    {'matthews_correlation': 1.0}
"""

_CITATION = """
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of T4 phage lysozyme},
  author={Matthews, Brian W},
  journal={Biochimica et Biophysica Acta (BBA) - Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
@article{gorodkin2004comparing,
  title={Comparing two K-category assignments by a K-category correlation coefficient},
  author={Gorodkin, Jan},
  journal={Computational Biology and Chemistry},
  volume={28},
  number={5-6},
  pages={367--374},
  year={2004}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    """Matthews correlation coefficient of class-index predictions."""

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
            reference_urls=[
                "https://en.wikipedia.org/wiki/Phi_coefficient",
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html",
            ],
        )

    def _compute(self, predictions, references, sample_weight=None):
        score = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": float(score)}
