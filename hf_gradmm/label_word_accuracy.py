"""Accuracy of label-word predictions, as an ``evaluate`` metric module of our own.

Loaded by path (``evaluate.load(<this file>)``), so it works without the Hub, where
``evaluate.load("accuracy")`` would fetch a script. Predictions and references are class ids.
"""

import datasets
import evaluate

_DESCRIPTION = "Share of examples whose predicted class (the label word scored highest) is the reference class."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): reference class ids.
Returns:
    accuracy (float): share of exact matches, in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class LabelWordAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("No predictions to score.")
        return {"accuracy": sum(int(p == r) for p, r in zip(predictions, references)) / len(predictions)}
