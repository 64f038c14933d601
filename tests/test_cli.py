"""The CLI: real commands, real files; bad input -> one line on stderr, exit code 2."""

import json

import pytest
from safetensors.torch import save_file
import torch

from conftest import write_digit_folder


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_data_path(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--data", tmp_path / "nope", "--out", tmp_path / "run")
    _one_line_error(code, err, "nope")
    assert not (tmp_path / "run").exists()


def test_unknown_model_suggests_close_match(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--data", "builtin:digits", "--model", "efficientnet_lit0",
                           "--out", tmp_path / "run")
    _one_line_error(code, err, "efficientnet_lite0")


@pytest.mark.slow
def test_corrupt_image_is_named_and_can_be_skipped(run_cli, tmp_path):
    root = write_digit_folder(tmp_path / "imgs")
    (root / "1" / "broken.png").write_bytes(b"not a png at all")
    code, _, err = run_cli("finetune", "--data", root, "--out", tmp_path / "run")
    _one_line_error(code, err, "broken.png", "--skip-bad-images")
    code, out, err = run_cli("finetune", "--data", root, "--skip-bad-images", "--strategy", "linear-probe",
                             "--image-size", "64", "--epochs", "2", "--test-split", "0.34", "--val-split", "0.2",
                             "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_images"] == 1


def test_empty_class_folder(run_cli, tmp_path):
    root = write_digit_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    code, _, err = run_cli("finetune", "--data", root, "--out", tmp_path / "run")
    _one_line_error(code, err, "empty")


def test_weights_that_do_not_fit(run_cli, tmp_path):
    bad = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, str(bad))
    code, _, err = run_cli("finetune", "--data", "builtin:digits", "--weights", bad, "--out", tmp_path / "run")
    _one_line_error(code, err, "resnet.safetensors")


def test_invalid_option_value(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--data", "builtin:digits", "--strategy", "everything",
                           "--out", tmp_path / "run")
    _one_line_error(code, err, "linear-probe")


def test_resume_without_run(run_cli, tmp_path):
    code, _, err = run_cli("finetune", "--resume", "--out", tmp_path / "missing")
    _one_line_error(code, err, "config.yaml")


def test_predict_on_missing_run(run_cli, tmp_path):
    code, _, err = run_cli("predict", tmp_path / "norun", tmp_path)
    _one_line_error(code, err, "norun")


@pytest.mark.slow
def test_models_lists_offline_packaged_weights(run_cli):
    code, out, err = run_cli("models")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "efficientnet_lite0" in line)
    assert "packaged" in row


@pytest.mark.slow
def test_finetune_then_predict_json_and_csv(run_cli, tmp_path):
    root = write_digit_folder(tmp_path / "imgs", per_class=10)
    run = tmp_path / "run"
    code, out, err = run_cli("finetune", "--data", root, "--strategy", "linear-probe", "--image-size", "64",
                             "--epochs", "30", "--lr", "0.01", "--test-split", "0.3", "--val-split", "0.2",
                             "--no-progress", "--out", run)
    assert code == 0, err
    assert "test accuracy" in out
    code, out, err = run_cli("predict", run, root / "2", "--format", "json", "-k", "2")
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 10
    assert all(len(r["top"]) == 2 and r["top"][0]["prob"] >= r["top"][1]["prob"] for r in results)
    assert sum(r["top"][0]["class"] == "2" for r in results) >= 7  # trained on these very images
    code, out, err = run_cli("predict", run, root / "0" / sorted(p.name for p in (root / "0").iterdir())[0],
                             "--format", "csv")
    assert code == 0, err
    rows = out.strip().splitlines()
    assert rows[0] == "path,rank,class,prob" and len(rows) == 4


@pytest.mark.slow
def test_config_file_with_command_line_overrides(run_cli, tmp_path):
    """--config: the YAML's settings apply, options given on the command line win (finetune and compare)."""
    import yaml

    root = write_digit_folder(tmp_path / "imgs", per_class=6)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": str(root), "strategy": "linear-probe", "image_size": 64, "epochs": 2,
                                   "bn": "freeze", "val_split": 0.0, "test_split": 0.3, "baseline": False}))
    code, _, err = run_cli("finetune", "--config", cfg, "--epochs", "3", "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["epochs"], saved["bn"], saved["image_size"], saved["strategy"]) == (3, "freeze", 64, "linear-probe")
    code, out, err = run_cli("compare", "--config", cfg, "--strategies", "linear-probe", "--seeds", "1",
                             "--no-progress", "--out", tmp_path / "cmp")
    assert code == 0, err
    run = yaml.safe_load((tmp_path / "cmp" / "runs" / "linear-probe-seed0" / "config.yaml").read_text())
    assert (run["epochs"], run["bn"], run["baseline"]) == (2, "freeze", False)
    assert "No strategy has a validation accuracy" in out  # val_split 0: nothing chosen; test never ranks
