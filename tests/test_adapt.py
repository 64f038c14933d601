"""``transferkit adapt``: real runs on real small data (synth-digits -> digits), the run directory,
predict on it, target labels never trained on, bad input, resume, the leaderboard, unlabelled targets."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from conftest import Interrupted, interrupt_at_epoch_1, write_digit_folder
from transferkit.config import AdaptConfig
from transferkit.data import load_source
from transferkit.engine.adapt import adapt, target_split

#: 32 px, 3 source images per class, 60 target images, 1 epoch: a few seconds on 2 cores.
TINY = dict(per_class=3, val_split=0.02, test_per_class=3, image_size=32, batch_size=16, epochs=1,
            target_images=60, seed=0)
#: The same with a small folder source (3 classes x 10 images).
FOLDER = {**TINY, "per_class": None, "test_per_class": None, "val_split": 0.2}
METRIC_KEYS = ("method", "source_accuracy", "target_accuracy", "proxy_a_distance_before", "proxy_a_distance_after",
               "train_seconds", "seed", "target_eval", "per_class_target_accuracy", "uses_target_labels")


def _one_line_error(code, err, *needles):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def _digit_csv(root, labels_seed=None, n=40):
    """A CSV target of real digits (classes 0..2); ``labels_seed``: the labels permuted across rows."""
    d = load_digits()
    idx = np.flatnonzero(d.target < 3)[:n]
    root.mkdir(parents=True, exist_ok=True)
    labels = d.target[idx] if labels_seed is None else np.random.default_rng(labels_seed).permutation(d.target[idx])
    with (root / "target.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i, label in zip(idx, labels):
            name = f"{i}.png"
            if not (root / name).exists():
                Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32)).save(root / name)
            w.writerow([name, int(label)])
    return root / "target.csv"


@pytest.fixture(scope="module")
def dann_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt") / "dann"
    cfg = AdaptConfig(source="builtin:synth-digits", target="builtin:digits", method="dann", out=str(out), **TINY)
    return out, adapt(cfg, progress=False)


@pytest.mark.slow
def test_run_directory_metrics_and_report(dann_run):
    out, metrics = dann_run
    for name in ("config.yaml", "metrics.json", "metrics.csv", "model.safetensors", "model.json", "report.md",
                 "embedding.png", "confusion_matrix.png", "learning_curve.png", "checkpoints/last.ckpt", "data.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert key in saved, key
    assert saved["method"] == "dann" and saved["target_eval"] == "held-out" and saved["uses_target_labels"] is False
    assert saved["target_adapt_images"] == 42 and saved["target_test_images"] == 18  # 60 images, 30 % held out
    assert 0 <= saved["target_accuracy"] <= 1 and 0 <= saved["source_accuracy"] <= 1
    assert 0 <= saved["proxy_a_distance_before"] <= 2 and 0 <= saved["proxy_a_distance_after"] <= 2
    assert list(saved["per_class_target_accuracy"]) == [str(c) for c in range(10)]
    with (out / "metrics.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("align_loss")]
    assert rows and rows[0]["domain_acc"]  # the discriminator trained and was logged
    report = (out / "report.md").read_text()
    assert "embedding.png" in report and "## Per class (target test)" in report and "held-out" in report
    assert (out / "embedding.png").stat().st_size > 10_000
    # error analysis on the target test split: per class, ECE without a temperature, the mistakes and their gallery
    per_class = {r["class"]: r for r in saved["target_per_class"]}
    for c, row in enumerate(saved["target_confusion"]):  # recall = the confusion row's diagonal share
        assert per_class[str(c)]["support"] == sum(row)
        assert per_class[str(c)]["recall"] == pytest.approx(row[c] / sum(row) if sum(row) else 0.0)
    cal = saved["calibration"]
    assert cal["temperature"] is None and 0 <= cal["target_test_ece"] <= 1 and "no labelled target" in cal["note"]
    wrong = round((1 - saved["target_accuracy"]) * saved["target_test_images"])
    assert len(saved["target_mistakes"]) == min(8, wrong)
    assert [m["prob"] for m in saved["target_mistakes"]] == sorted((m["prob"] for m in saved["target_mistakes"]),
                                                                    reverse=True)
    assert all(m["true"] != m["pred"] for m in saved["target_mistakes"])
    assert "## Most confident mistakes (Grad-CAM)" in report and "ECE (15 bins, T = 1)" in report
    assert (out / "mistakes.png").is_file() == bool(wrong) and ("mistakes.png" in report) == bool(wrong)


@pytest.mark.slow
def test_predict_works_on_an_adapt_run(dann_run, run_cli, tmp_path):
    out, _ = dann_run
    d = load_digits()
    Image.fromarray((d.images[0] * 255 / 16).astype(np.uint8)).save(tmp_path / "zero.png")
    code, stdout, err = run_cli("predict", out, tmp_path / "zero.png", "--topk", "3", "--format", "json")
    assert code == 0, err
    (result,) = json.loads(stdout)
    assert len(result["top"]) == 3 and {t["class"] for t in result["top"]} <= {str(c) for c in range(10)}


def test_target_split_never_reads_labels(tmp_path):
    """The adaptation/test split of a target depends on its images and the seed, not on its labels."""
    cfg = AdaptConfig(source="builtin:digits", target=str(_digit_csv(tmp_path / "a")), **TINY)
    a, _ = target_split(load_source(cfg.target), cfg)
    b, _ = target_split(load_source(str(_digit_csv(tmp_path / "a", labels_seed=1))), cfg)
    assert all(np.array_equal(a[k][1], b[k][1]) for k in ("adapt", "test"))
    t, mode = target_split(load_source(cfg.target), cfg.model_copy(update={"transductive": True}))
    assert mode == "transductive" and np.array_equal(t["adapt"][1], t["test"][1]) and len(t["adapt"][1]) == 40


def _train_with_target_labels(tmp_path, method: str) -> dict[str, dict]:
    """The weights of two ``method`` runs whose target CSVs differ only in their labels (permuted)."""
    source = write_digit_folder(tmp_path / "src", per_class=10)
    weights = {}
    for name, seed in (("true", None), ("permuted", 1)):
        target = _digit_csv(tmp_path / f"tgt-{name}", labels_seed=seed)
        out = tmp_path / f"{method}-{name}"
        adapt(AdaptConfig(source=str(source), target=str(target), method=method, model="test_efficientnet",
                          weights="none", out=str(out), **FOLDER), progress=False)
        weights[name] = load_file(str(out / "model.safetensors"))
    return weights


@pytest.mark.slow
def test_permuted_target_labels_give_identical_weights(tmp_path):
    w = _train_with_target_labels(tmp_path, "cdan+e")  # conditioned on the target predictions
    assert w["true"].keys() == w["permuted"].keys() and all(torch.equal(w["true"][k], w["permuted"][k]) for k in w["true"])
    w = _train_with_target_labels(tmp_path, "oracle")  # the control: the one method that reads them
    assert not all(torch.equal(w["true"][k], w["permuted"][k]) for k in w["true"])


def test_bad_input_is_one_line_and_writes_nothing(run_cli, tmp_path):
    source = write_digit_folder(tmp_path / "src", per_class=10, classes=(0, 1, 2))
    other = write_digit_folder(tmp_path / "other", per_class=2, classes=(0, 1, 3))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code, _, err = run_cli("adapt", "--source", source, "--target", other, "--out", out)
    _one_line_error(code, err, "same classes", "'2'", "'3'")
    code, _, err = run_cli("adapt", "--source", source, "--target", tmp_path / "empty", "--out", out)
    _one_line_error(code, err, "no readable images")
    code, _, err = run_cli("adapt", "--source", source, "--target", other, "--method", "dann,magic", "--out", out)
    _one_line_error(code, err, "unknown method 'magic'", "cdan+e")
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in (source / "0").iterdir():
        (flat / p.name).write_bytes(p.read_bytes())
    code, _, err = run_cli("adapt", "--source", source, "--target", flat, "--method", "oracle", "--out", out)
    _one_line_error(code, err, "oracle", "has none")
    assert not out.exists()


@pytest.mark.slow
def test_resume_after_interruption(tmp_path, monkeypatch):
    """As tests/test_resume.py: stopped when epoch 1 starts, then ``adapt(..., resume=True)`` finishes it."""
    source = write_digit_folder(tmp_path / "src", per_class=10)
    cfg = AdaptConfig(source=str(source), target=str(_digit_csv(tmp_path / "tgt")), method="dann",
                      out=str(tmp_path / "run"), **{**FOLDER, "epochs": 2})
    resume_normally = interrupt_at_epoch_1(monkeypatch)
    with pytest.raises(Interrupted):
        adapt(cfg, progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0 and not (tmp_path / "run" / "metrics.json").exists()
    assert any(k.startswith("terms.0.block.discriminator.") for k in ckpt["state_dict"])  # the discriminator resumes
    resume_normally()
    metrics = adapt(cfg, resume=True, progress=False)
    assert metrics["resumed"] is True and metrics["epochs"] == 2
    with (tmp_path / "run" / "metrics.csv").open() as fh:
        assert [r["epoch"] for r in csv.DictReader(fh) if r.get("train_loss")] == ["0", "1"]


@pytest.mark.slow
def test_methods_side_by_side_leaderboard(run_cli, tmp_path):
    source = write_digit_folder(tmp_path / "src", per_class=10)
    target = _digit_csv(tmp_path / "tgt")
    out = tmp_path / "board"
    code, stdout, err = run_cli("adapt", "--source", source, "--target", target, "--method", "source-only,coral,oracle",
                                "--seeds", "1", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                                "--model", "test_efficientnet", "--weights", "none", "--no-progress", "--out", out)
    assert code == 0, err
    saved = json.loads((out / "adapt.json").read_text())
    assert [r["method"] for r in saved["records"]] == ["source-only", "coral", "oracle"]
    assert [r["uses_target_labels"] for r in saved["records"]] == [False, False, True]
    assert {r["method"] for r in saved["leaderboard"]} == {"source-only", "coral", "oracle"}
    md = (out / "leaderboard.md").read_text()
    assert "oracle (reads target labels)" in md and "Δ source-only" in md and "adapt.png" in md
    assert (out / "adapt.png").stat().st_size > 5000 and "source-only" in stdout
    runs = [json.loads((out / "runs" / f"{m}-seed0" / "metrics.json").read_text()) for m in ("source-only", "coral")]
    assert runs[0]["target_test_images"] == runs[1]["target_test_images"]


@pytest.mark.slow
def test_unlabelled_target_reports_proxy_metrics_only(run_cli, tmp_path):
    source = write_digit_folder(tmp_path / "src", per_class=10)
    flat = tmp_path / "flat"
    flat.mkdir()
    for c in source.iterdir():
        for p in c.iterdir():
            (flat / f"{c.name}-{p.name}").write_bytes(p.read_bytes())
    code, _, err = run_cli("adapt", "--source", source, "--target", flat, "--method", "dan", "--transductive",
                           "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--model", "test_efficientnet",
                           "--weights", "none", "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["target_labelled"] is False and m["target_accuracy"] is None and m["per_class_target_accuracy"] is None
    assert m["target_eval"] == "transductive" and m["proxy_a_distance_after"] is not None
    assert "has no labels" in (tmp_path / "run" / "report.md").read_text()


def test_leaderboard_ranks_by_source_validation_never_the_target(tmp_path):
    """Constructed records: the target says coral > source-only > dann, source validation the reverse; the
    leaderboard follows source validation (no target labels read to rank) and says what ranked it."""
    from transferkit.engine.adapt_compare import leaderboard
    from transferkit.report.adapt import write_adapt_leaderboard

    def rec(method, seed, source_val, target):
        return {"method": method, "seed": seed, "source_val_accuracy": source_val, "target_accuracy": target,
                "source_accuracy": source_val, "proxy_a_distance_before": 1.5, "proxy_a_distance_after": 1.0,
                "train_seconds": 3.0, "image_size": 32, "epochs": 1, "trade_off": 1.0, "target_eval": "held-out",
                "uses_target_labels": False}

    records = [rec(m, s, v + s / 100, t) for s in (0, 1)
               for m, v, t in (("coral", 0.70, 0.60), ("source-only", 0.80, 0.40), ("dann", 0.90, 0.20))]
    board = leaderboard(records)
    assert [r["method"] for r in board] == ["dann", "source-only", "coral"]
    assert board[0]["source_val_accuracy_mean"] == pytest.approx(0.905) and board[0]["target_accuracy_mean"] == 0.2
    md = write_adapt_leaderboard(tmp_path / "leaderboard.md", {"source": "a", "target": "b", "model": "m",
                                                               "seeds": [0, 1], "leaderboard": board}).read_text()
    assert md.index("| 1 | dann | 90.5 ± 0.7 | 20.0 ± 0.0 | -20.0 |") < md.index("| 3 | coral |")
    assert "Ranked by source validation accuracy — the only labelled validation score that reads no target " \
           "labels" in md
    assert "target accuracy is reported, never used to choose" in md
    assert "<td>dann</td>" in (tmp_path / "leaderboard.html").read_text()  # the same, as a page
