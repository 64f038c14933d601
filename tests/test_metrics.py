"""evaluation.metrics scores held-out predictions with scikit-learn; the figures must be the ones
torchmetrics (what the Lightning module reports during training) gives for the same predictions."""

import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from transferkit.evaluation.metrics import scores


def _torchmetrics(logits, labels, num_classes):
    return {"accuracy": MulticlassAccuracy(num_classes, average="micro")(logits, labels).item(),
            "macro_f1": MulticlassF1Score(num_classes, average="macro")(logits, labels).item(),
            "confusion": MulticlassConfusionMatrix(num_classes)(logits, labels).tolist()}


def test_scores_match_torchmetrics_with_a_class_absent_and_one_never_predicted():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)              # class 6 of 7 never occurs
    logits = torch.randn(300, 7, generator=g)
    logits[torch.arange(300), labels] += 3 * torch.rand(300, generator=g)  # better than chance
    logits[:, 5] -= 10                                              # class 5 is never predicted
    ours, theirs = scores(logits, labels, 7), _torchmetrics(logits, labels, 7)
    assert 0.3 < ours["accuracy"] < 0.9
    assert abs(ours["accuracy"] - theirs["accuracy"]) < 1e-6
    assert abs(ours["macro_f1"] - theirs["macro_f1"]) < 1e-6
    assert ours["confusion"] == theirs["confusion"]
    assert ours["n"] == 300 and len(ours["confusion"]) == 7
    assert abs(ours["loss"] - torch.nn.functional.cross_entropy(logits, labels).item()) < 1e-6
