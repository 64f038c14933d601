"""evaluation.metrics scores held-out predictions with scikit-learn; the figures must be the ones
torchmetrics (what the Lightning module reports during training) gives for the same predictions."""

import pytest
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


def test_per_class_scores_from_the_confusion_matrix():
    """By hand: true 0 -> predicted (0, 0, 1); true 1 -> (1); true 2 -> (0, 2): class 0 precision 2/3,
    recall 2/3; class 1 precision 1/2, recall 1; class 2 precision 1, recall 1/2; and as scikit-learn says."""
    from sklearn.metrics import precision_recall_fscore_support

    from transferkit.evaluation.metrics import per_class_scores, per_class_table

    y, pred = [0, 0, 0, 1, 2, 2], [0, 0, 1, 1, 0, 2]
    confusion = [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    rows = per_class_scores(confusion, ["a", "b", "c"])
    assert [r["precision"] for r in rows] == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert [r["recall"] for r in rows] == pytest.approx([2 / 3, 1.0, 1 / 2])
    assert [r["support"] for r in rows] == [3, 1, 2]
    p, r, f, n = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert [x["f1"] for x in rows] == pytest.approx(list(f))
    empty = per_class_scores([[1, 0], [1, 0]], ["x", "never-predicted"])[1]
    assert empty["precision"] == 0.0 and empty["f1"] == 0.0
    worst_first = per_class_table(per_class_scores([[3, 0], [2, 1]], ["good", "bad"]))[5:]
    assert [line.split(" |")[0] for line in worst_first] == ["| bad", "| good"]  # F1 0.5 before 0.75


def test_classes_absent_and_never_predicted_leave_the_per_class_table():
    """A labelled folder holding classes a and b of a run's a, b, c: c has support 0 and no prediction, so its
    0 scores say nothing: named below the table, not ranked as the worst class. A class predicted but absent
    (support 0, precision 0) stays: it is a real error."""
    from transferkit.evaluation.metrics import per_class_scores, per_class_table, worst_first

    rows = per_class_scores([[2, 0, 0], [0, 1, 0], [0, 0, 0]], ["a", "b", "c"])
    assert [r["predicted"] for r in rows] == [2, 1, 0]
    shown, absent = worst_first(rows)
    assert [r["class"] for r in shown] == ["a", "b"] and absent == ["c"]
    assert per_class_table(rows)[-1] == "Not in these images and never predicted: c."
    rows = per_class_scores([[1, 0, 1], [0, 1, 0], [0, 0, 0]], ["a", "b", "c"])  # c predicted once, wrongly
    assert [r["class"] for r in worst_first(rows)[0]] == ["c", "a", "b"] and worst_first(rows)[1] == []
