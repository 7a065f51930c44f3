"""A user's own metric as an `evaluate` module, loaded offline with ``evaluate.load(<path to this file>)``."""

import datasets
import evaluate


class LocalAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="fraction of predictions equal to the references",
            citation="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": sum(int(p == r) for p, r in zip(predictions, references)) / max(len(references), 1)}
