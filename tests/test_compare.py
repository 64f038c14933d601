"""``transferkit compare``: real side-by-side runs, the leaderboard files, reuse/resume, and the advice."""

import json

import pytest

from transferkit import FinetuneConfig
from transferkit.engine import compare as compare_mod
from transferkit.engine.compare import compare, leaderboard, recommend, variant_config
from transferkit.errors import ConfigError, RunDirError

BASE = FinetuneConfig(data="builtin:digits", per_class=10, test_per_class=8, val_split=0.05, epochs=1,
                      batch_size=32, image_size=64)


@pytest.fixture(scope="module")
def small_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    result = compare(BASE, ["linear-probe", "scratch"], [0, 1], out, progress=False)
    return out, result


@pytest.mark.slow
def test_records_leaderboard_and_files(small_compare):
    out, result = small_compare
    saved = json.loads((out / "compare.json").read_text())
    assert saved["records"] == result["records"]
    assert [(r["strategy"], r["seed"]) for r in saved["records"]] == [
        ("linear-probe", 0), ("scratch", 0), ("linear-probe", 1), ("scratch", 1)]
    for r in saved["records"]:
        for key in ("strategy", "seed", "val_accuracy", "test_accuracy", "train_seconds", "trainable_params"):
            assert r[key] is not None, key
        assert (out / "runs" / f"{r['strategy']}-seed{r['seed']}" / "model.safetensors").is_file()
    probe = [r for r in saved["records"] if r["strategy"] == "linear-probe"]
    assert probe[0]["trainable_params"] == 1280 * 10 + 10
    board = saved["leaderboard"]
    val = {s: sum(r["val_accuracy"] for r in saved["records"] if r["strategy"] == s) / 2
           for s in ("linear-probe", "scratch")}
    assert [b["strategy"] for b in board] == sorted(val, key=lambda s: -val[s])
    row = next(b for b in board if b["strategy"] == "linear-probe")
    assert row["test_accuracy_mean"] == pytest.approx(sum(r["test_accuracy"] for r in probe) / 2)
    assert row["val_accuracy_mean"] == pytest.approx(val["linear-probe"])
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | " in md and "linear-probe" in md and "## Recommendation" in md and "compare.png" in md
    assert "Ranked by validation accuracy" in md
    assert (out / "compare.png").stat().st_size > 5000
    assert saved["recommendation"] == result["recommendation"]
    assert "scores best on validation" in saved["recommendation"]


@pytest.mark.slow
def test_rerun_reuses_finished_runs_and_resumes_interrupted_ones(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    first = compare(BASE, ["scratch"], [0, 1], out, progress=False)
    run = out / "runs" / "scratch-seed1"
    (run / "metrics.json").unlink()  # as if killed after its last checkpoint
    calls = []
    real = compare_mod.finetune

    def spy(cfg, **kw):
        calls.append((cfg.out, kw.get("resume", False)))
        return real(cfg, **kw)

    monkeypatch.setattr(compare_mod, "finetune", spy)
    again = compare(BASE, ["scratch"], [0, 1], out, progress=False)
    assert calls == [(str(run), True)]  # the finished run was reused
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["resumed"] is True
    assert again["records"][0] == first["records"][0]
    # the training time of the interrupted attempt is carried over in the checkpoint, not lost (the resumed
    # attempt has nothing left to train; only the checkpoint write and teardown came after the saved time)
    assert resumed["train_seconds"] >= 0.5 * first["records"][1]["train_seconds"]


@pytest.mark.slow
def test_overwrite_removes_only_compare_outputs_and_only_after_validation(tmp_path):
    out = tmp_path / "cmp"
    compare(BASE, ["scratch"], [0], out, progress=False)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="unknown strategy"):
        compare(BASE, ["bogus"], [0], out, overwrite=True, progress=False)
    assert (out / "compare.json").is_file() and (out / "runs" / "scratch-seed0").is_dir()
    with pytest.raises(ConfigError, match="--reg lwf"):  # impossible combination: refused before any run
        compare(BASE, ["freeze+lwf"], [0], out, overwrite=True, progress=False)
    assert (out / "compare.json").is_file()
    compare(BASE.model_copy(update={"epochs": 2}), ["scratch"], [0], out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "runs" / "scratch-seed0" / "metrics.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(small_compare):
    out, _ = small_compare
    with pytest.raises(RunDirError, match="--overwrite"):
        compare(BASE.model_copy(update={"epochs": 2}), ["linear-probe"], [0], out, progress=False)


def test_variants_and_unknown_names(tmp_path):
    scratch = variant_config(BASE, "scratch", 1, tmp_path)
    assert (scratch.strategy, scratch.weights, scratch.seed) == ("full", "none", 1)
    lwf = variant_config(BASE, "full+lwf", 0, tmp_path, wise_curve=[0.0, 1.0])
    assert (lwf.strategy, lwf.reg, lwf.wise_curve) == ("full", "lwf", [0.0, 1.0])
    assert variant_config(BASE, "freeze", 0, tmp_path, wise_curve=[0.5]).wise_curve is None
    assert variant_config(BASE, "auto", 0, tmp_path).strategy == "auto"  # may be named, not in the default line-up
    for bad in ("fine-tune", "full+ewc"):
        with pytest.raises(ConfigError, match="unknown strategy"):
            variant_config(BASE, bad, 0, tmp_path)
    with pytest.raises(ConfigError, match="unknown strategy"):
        compare(BASE, ["full", "bogus"], [0], tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # refused before anything ran


def test_cli_errors_are_one_line(run_cli, tmp_path):
    code, _, err = run_cli("compare", "--data", "builtin:digits", "--strategies", "full,bogus", "--out", tmp_path / "c")
    assert code == 2 and err.startswith("error: unknown strategy 'bogus'") and err.count("\n") == 1
    code, _, err = run_cli("compare", "--data", "builtin:digits", "--wise-curve", "0,half", "--out", tmp_path / "c")
    assert code == 2 and "--wise-curve" in err


def _rec(strategy, seed, val, secs, trainable=4_000_000, agreement=None, baseline=0.7, test=None):
    """A compare record; test accuracy = validation unless given (the tests below make them disagree)."""
    return {"strategy": strategy, "seed": seed, "val_accuracy": val, "test_accuracy": val if test is None else test,
            "train_seconds": secs, "trainable_params": trainable, "total_params": 4_000_000, "image_size": 64,
            "epochs": 6, "pixel_baseline_accuracy": baseline, "source_agreement": agreement}


def _advice(records):
    return recommend(leaderboard(records), records)


def test_recommendation_follows_the_numbers():
    records = [_rec("full", s, a, 100, agreement=0.2) for s, a in enumerate((0.90, 0.91, 0.92))]
    records += [_rec("freeze", s, a, 5, trainable=12_810, agreement=1.0) for s, a in enumerate((0.905, 0.905, 0.91))]
    records += [_rec("scratch", s, 0.60, 100) for s in range(3)]
    board = leaderboard(records)
    assert [b["strategy"] for b in board] == ["full", "freeze", "scratch"]
    assert board[0]["val_accuracy_std"] == pytest.approx(0.01)
    assert board[1]["forgetting"] == 0.0 and board[0]["forgetting"] == pytest.approx(0.8)
    text = recommend(board, records)
    assert "**full** scores best on validation: 91.0% validation accuracy (± 1.0 over 3 seed(s))" in text
    # per-seed gaps full - freeze: -0.5, +0.5, +1.0 points: mean 0.3, std 0.76
    assert "**freeze** is within noise of it on validation (0.3 ± 0.8 points behind, paired over 3 seed(s)) " \
           "with 20.0× less training time" in text
    assert "Pretraining pays" in text and "full − scratch: +31.0 ± 1.0 points on validation" in text
    assert "raw pixels scores 70.0% and full, the best pretrained strategy on validation, 91.0% (+21.0 points)." in text
    assert "**freeze** forgets least" in text


def test_validation_chooses_when_test_disagrees():
    """Test ranks the strategies the other way round; the leaderboard, the best, the better buy and the
    verdict on scratch all follow validation, and test is only quoted."""
    records = [_rec("full", s, v, 100, test=t) for s, (v, t) in enumerate(((0.90, 0.70), (0.92, 0.72)))]
    records += [_rec("freeze", s, v, 5, test=t) for s, (v, t) in enumerate(((0.80, 0.95), (0.82, 0.97)))]
    records += [_rec("linear-probe", s, v, 2, test=t) for s, (v, t) in enumerate(((0.895, 0.60), (0.915, 0.61)))]
    records += [_rec("scratch", s, v, 100, test=t) for s, (v, t) in enumerate(((0.50, 0.99), (0.52, 0.99)))]
    board = leaderboard(records)
    assert [b["strategy"] for b in board] == ["full", "linear-probe", "freeze", "scratch"]
    assert [b["test_accuracy_mean"] for b in board] == pytest.approx([0.71, 0.605, 0.96, 0.99])
    text = recommend(board, records)
    assert text.startswith("**full** scores best on validation: 91.0% validation accuracy")
    assert "71.0% on test (reported, not used to choose)" in text
    assert "**linear-probe** is within noise of it on validation (0.5 ± 0.0 points behind" in text
    assert "freeze" not in text and "Pretraining pays" in text and "Negative transfer" not in text


def test_ties_are_judged_on_the_paired_validation_gap():
    # freeze trails full by 3 points on every seed while the seeds move both by 10: the unpaired spread
    # (std 10 points per strategy) would call it a tie, the paired one (std 0) does not
    swings = (0.70, 0.80, 0.90)
    records = [_rec("full", s, v, 100) for s, v in enumerate(swings)]
    records += [_rec("freeze", s, v - 0.03, 5) for s, v in enumerate(swings)]
    assert compare_mod.within_noise(records, "full", "freeze") is False
    assert "within noise" not in _advice(records)
    # per-seed gaps of 2, 8 and 0 points: 3.3 on average, beyond the 1-point threshold, but they spread by
    # 4.2 points (std): within noise
    noisy = [_rec("full", s, 0.80, 100) for s in range(3)]
    noisy += [_rec("freeze", s, v, 5) for s, v in enumerate((0.78, 0.72, 0.80))]
    assert compare_mod.paired_diff(noisy, "full", "freeze") == (
        pytest.approx(0.1 / 3), pytest.approx(0.0416, abs=1e-4), 3)
    assert compare_mod.within_noise(noisy, "full", "freeze") is True
    assert "**freeze** is within noise of it on validation (3.3 ± 4.2 points behind" in _advice(noisy)
    # one seed: no spread measured, the fixed threshold (1 point) decides
    assert compare_mod.within_noise([_rec("full", 0, 0.80, 100), _rec("freeze", 0, 0.791, 5)], "full", "freeze")
    assert not compare_mod.within_noise([_rec("full", 0, 0.80, 100), _rec("freeze", 0, 0.785, 5)], "full", "freeze")
    # no seed scored both: nothing measured, no tie claimed
    assert not compare_mod.within_noise([_rec("full", 0, 0.80, 100), _rec("freeze", 1, 0.80, 5)], "full", "freeze")


def test_scratch_verdict_on_validation():
    beats = [_rec("full", 0, 0.80, 100, test=0.95), _rec("scratch", 0, 0.82, 100, test=0.50),
             _rec("linear-probe", 0, 0.5, 3)]
    text = _advice(beats)
    assert "**Negative transfer**: training from scratch beats every pretrained strategy on validation " \
           "(full − scratch: -2.0 ± 0.0 points on validation, paired over 1 seed(s); scratch 82.0%)" in text
    assert text.startswith("**scratch** scores best on validation")
    assert "full, the best pretrained strategy on validation, 95.0% (+25.0 points)." in text  # test, a report
    # scratch behind by 2 points on average, but the per-seed gaps spread by 3.6: not beaten
    near = [_rec("full", s, v, 100) for s, v in enumerate((0.80, 0.80, 0.80))]
    near += [_rec("scratch", s, v, 100, test=0.1) for s, v in enumerate((0.74, 0.80, 0.80))]
    text = _advice(near)
    assert "**Scratch is not beaten**: training from scratch matches every pretrained strategy on validation " \
           "(full − scratch: +2.0 ± 3.5 points" in text and "no measurable benefit from pretraining" in text
    assert "Negative transfer" not in text and "Pretraining pays" not in text
    # test says pretraining pays by 60 points; validation says it does not
    assert "Scratch is not beaten" in _advice([_rec("full", 0, 0.80, 100, test=0.9),
                                               _rec("scratch", 0, 0.795, 100, test=0.3)])


def test_other_advice():
    same_time = _advice([_rec("full", 0, 0.80, 100), _rec("l2sp", 0, 0.799, 90)])
    assert "less training time" not in same_time  # 1.1x is not called cheaper
    assert "transfer does not beat raw pixels here" in _advice([_rec("full", 0, 0.6, 10)])
    no_val = [_rec("full", 0, None, 100, test=0.9), _rec("freeze", 0, None, 5, test=0.95)]
    assert [b["strategy"] for b in leaderboard(no_val)] == ["full", "freeze"]  # run order: test does not rank
    assert _advice(no_val).startswith("No strategy has a validation accuracy") and "scores best" not in _advice(no_val)


def test_leaderboard_files_are_ranked_by_validation(tmp_path, monkeypatch):
    """compare.json and leaderboard.md from a real ``compare`` call whose runs report constructed scores."""
    scores = {"full": (0.9, 0.6), "freeze": (0.7, 0.99), "scratch": (0.8, 0.8)}

    def fake_finetune(cfg, **_):
        name = "scratch" if cfg.weights == "none" else cfg.strategy
        val, test = scores[name]
        return {"val_accuracy": val + cfg.seed / 100, "test_accuracy": test, "train_seconds": 1.0,
                "trainable_params": 10, "total_params": 100, "image_size": 64, "epochs": 1}

    monkeypatch.setattr(compare_mod, "finetune", fake_finetune)
    out = tmp_path / "cmp"
    result = compare(BASE, ["freeze", "scratch", "full"], [0, 1], out, progress=False)
    saved = json.loads((out / "compare.json").read_text())
    assert [b["strategy"] for b in saved["leaderboard"]] == ["full", "scratch", "freeze"]
    assert saved["leaderboard"][0]["val_accuracy_mean"] == pytest.approx(0.905)
    assert saved["leaderboard"][0]["test_accuracy_mean"] == pytest.approx(0.6)
    assert saved["recommendation"] == result["recommendation"]
    assert saved["recommendation"].startswith("**full** scores best on validation")
    md = (out / "leaderboard.md").read_text()
    assert md.index("| 1 | full |") < md.index("| 2 | scratch |") < md.index("| 3 | freeze |")
    assert "| 1 | full | 90.5 ± 0.7 | +0.0 | 60.0 ± 0.0 |" in md
    assert "Ranked by validation accuracy (mean over seeds); test accuracy is reported, never used to choose." in md
    assert "<td>full</td>" in (out / "leaderboard.html").read_text()
