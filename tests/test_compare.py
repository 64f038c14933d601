"""``transferkit compare``: real side-by-side runs, the leaderboard files, reuse/resume, and the advice."""

import json

import pytest

from transferkit import FinetuneConfig
from transferkit.engine import compare as compare_mod
from transferkit.engine.compare import compare, leaderboard, recommend, variant_config
from transferkit.errors import ConfigError, RunDirError

BASE = FinetuneConfig(data="builtin:digits", per_class=10, test_per_class=8, val_split=0.0, epochs=1,
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
        for key in ("strategy", "seed", "test_accuracy", "train_seconds", "trainable_params"):
            assert r[key] is not None, key
        assert (out / "runs" / f"{r['strategy']}-seed{r['seed']}" / "model.safetensors").is_file()
    probe = [r for r in saved["records"] if r["strategy"] == "linear-probe"]
    assert probe[0]["trainable_params"] == 1280 * 10 + 10
    board = saved["leaderboard"]
    assert [b["strategy"] for b in board] == sorted(["linear-probe", "scratch"],
                                                    key=lambda s: -next(b["test_accuracy_mean"] for b in board
                                                                        if b["strategy"] == s))
    accs = [r["test_accuracy"] for r in probe]
    row = next(b for b in board if b["strategy"] == "linear-probe")
    assert row["test_accuracy_mean"] == pytest.approx(sum(accs) / 2)
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | " in md and "linear-probe" in md and "## Recommendation" in md and "compare.png" in md
    assert (out / "compare.png").stat().st_size > 5000
    assert saved["recommendation"] == result["recommendation"] and "scores best" in saved["recommendation"]


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


def _rec(strategy, seed, acc, secs, trainable=4_000_000, agreement=None, baseline=0.7):
    return {"strategy": strategy, "seed": seed, "test_accuracy": acc, "train_seconds": secs,
            "trainable_params": trainable, "total_params": 4_000_000, "image_size": 64, "epochs": 6,
            "pixel_baseline_accuracy": baseline, "source_agreement": agreement}


def test_recommendation_follows_the_numbers():
    records = [_rec("full", s, a, 100, agreement=0.2) for s, a in enumerate((0.90, 0.91, 0.92))]
    records += [_rec("freeze", s, a, 5, trainable=12_810, agreement=1.0) for s, a in enumerate((0.905, 0.905, 0.91))]
    records += [_rec("scratch", s, 0.60, 100) for s in range(3)]
    board = leaderboard(records)
    assert [b["strategy"] for b in board] == ["full", "freeze", "scratch"]
    assert board[0]["test_accuracy_std"] == pytest.approx(0.01)
    assert board[1]["forgetting"] == 0.0 and board[0]["forgetting"] == pytest.approx(0.8)
    text = recommend(board)
    assert "**full** scores best: 91.0%" in text
    assert "**freeze** is within 0.3 points of it with 20.0× less training time" in text
    assert "Pretraining pays: scratch reaches 60.0%" in text
    assert "(full) beats it by 21.0 points" in text
    assert "**freeze** forgets least" in text

    neg = leaderboard([_rec("full", 0, 0.80, 100), _rec("scratch", 0, 0.82, 100), _rec("linear-probe", 0, 0.5, 3)])
    text = recommend(neg)
    assert "negative transfer" in text and "beats every pretrained start by 2.0 points" in text
    assert "(full) beats it by 10.0 points" in text  # the baseline is compared with pretrained strategies
    near = recommend(leaderboard([_rec("full", 0, 0.80, 100), _rec("scratch", 0, 0.795, 100)]))
    assert "no measurable benefit from pretraining" in near and "negative transfer" not in near
    same_time = recommend(leaderboard([_rec("full", 0, 0.80, 100), _rec("l2sp", 0, 0.799, 90)]))
    assert "less training time" not in same_time  # 1.1x is not called cheaper
    assert "no transfer strategy beats it" in recommend(leaderboard([_rec("full", 0, 0.6, 10)]))
