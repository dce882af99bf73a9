"""Telling sick from healthy: a stack of perceptrons classifies breast tumours.

Wisconsin diagnostic breast-cancer data (569 patients, 30 features, shipped with scikit-learn);
target 1 = malignant. Binary cross-entropy on logits; validation accuracy and ROC AUC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor, nn

from experiments._tabular import split_tabular
from hypersweep.experiment import Data, Experiment, Output
from hypersweep.layers import mlp_from_config


class BreastCancerMLP(Experiment):
    metric_names: ClassVar[tuple[str, ...]] = ("val_accuracy", "val_auc")
    default_config: ClassVar[Mapping[str, Any]] = {
        "hidden_sizes": [32, 16],
        "activation": "relu",
        "dropout": 0.1,
    }

    def load_data(self, *, seed: int) -> Data:
        from sklearn.datasets import load_breast_cancer  # seconds to import: only where the data loads

        x, y = load_breast_cancer(return_X_y=True)
        # scikit-learn labels malignant as 0; flip so the positive class is the disease.
        return split_tabular(x, 1 - y, seed=seed)

    def build_model(self, config: Mapping[str, Any], data: Data) -> nn.Module:
        return mlp_from_config(config, data.train.inputs.shape[1], 1)

    def loss(self, output: Output, target: Tensor) -> Tensor:
        assert isinstance(output, Tensor)
        return nn.functional.binary_cross_entropy_with_logits(output, target)

    def metrics(self, output: Output, target: Tensor) -> dict[str, float]:
        assert isinstance(output, Tensor)
        accuracy = ((output > 0).float() == target).float().mean()
        return {
            "val_accuracy": float(accuracy),
            "val_auc": roc_auc(output.flatten(), target.flatten()),
        }


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties count 1/2."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)
