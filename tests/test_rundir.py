"""The run directory: owned, locked, rank-zero only, atomic; tested on real files and processes."""

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import transferkit
import transferkit.engine.compare  # noqa: F401 (declares the compare and finetune kinds)
import transferkit.rundir
import transferkit.transferability.rank  # noqa: F401 (declares the rank kind)
from transferkit.errors import IOFault, RunDirError
from transferkit.rundir import (TEMP_SUFFIX, RunDir, RunKind, atomic_write, check_output_not_input, global_rank,
                                save_weights, write_json)

SRC = Path(transferkit.rundir.__file__).parents[2]
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID",
             "JSM_NAMESPACE_RANK", "WORLD_SIZE")


@pytest.fixture(autouse=True)
def rank_zero(monkeypatch):
    """Tests run as a process nobody launched, whatever the shell around pytest set."""
    for key in RANK_VARS:
        monkeypatch.delenv(key, raising=False)


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder`` with its bytes (None for folders); the lock's holder note aside."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() and p.name != ".lock" else None
            for p in sorted(folder.rglob("*"))}


def _finished_run(path: Path) -> RunDir:
    """A run that wrote its files, and a user's notes, photo and folder inside it."""
    with RunDir(path).open(command=["transferkit", "finetune"]) as run:
        run.checkpoints.mkdir()
        (run.checkpoints / "last.ckpt").write_bytes(b"ckpt")
        (run.logs / "attempt_0").mkdir(parents=True)
        (run.logs / "attempt_0" / "metrics.csv").write_text("epoch,step\n")
        write_json(run.model_json, {"arch": "x"})
        write_json(run.metrics_json, {"test_accuracy": 0.5})
        (run.path / "learning_curve.png").write_bytes(b"png")
        (run.path / "report.html").write_text("<p>report</p>")
    (path / "notes.txt").write_text("my notes\n")
    (path / "photo.png").write_bytes(b"\x89PNG user")
    (path / "analysis").mkdir()
    (path / "analysis" / "table.csv").write_text("a,b\n")
    return RunDir(path)


# ----------------------------------------------------------------------------- child processes
#: the kind the lock tests' processes open (CHILD makes it alike): the mechanism's, no command's, so that
#: a child process needs no engine module (which declares a command's kind) to take a run
LOCK_TEST = RunKind("lock-test", ("metrics.json", "report.md"), result="metrics.json")
CHILD = textwrap.dedent("""
    import json, os, sys, time
    from transferkit.rundir import RunDir, RunKind, atomic_write, write_json
    from transferkit.errors import RunDirError
    out, go, action = sys.argv[1], sys.argv[2], sys.argv[3]
    KIND = RunKind("lock-test", ("metrics.json", "report.md"), result="metrics.json")  # as LOCK_TEST
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        with RunDir(out, kind=KIND).open(command=["transferkit", "finetune", "--out", out]) as run:
            print("locked", flush=True)
            if action == "hold":
                sys.stdin.read()  # until the parent closes stdin (or kills us)
            elif action == "write":
                write_json(run.metrics_json, {"rank": "?"})
                atomic_write(run.path / "report.md", lambda p: p.write_text("r"))
                run.merge_logs()
    except RunDirError as e:
        print("refused", e, flush=True)
        sys.exit(2)
""")


def _child(tmp_path: Path, out: Path, go: Path, action: str = "hold", **env) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    full_env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    full_env.update(PYTHONPATH=str(SRC), **env)
    return subprocess.Popen([sys.executable, str(script), str(out), str(go), action], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


# ----------------------------------------------------------------------------- logs (unchanged behaviour)
def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["epoch", "step", "train_loss", "val_acc"])
        w.writeheader()
        w.writerows(rows)


def test_merge_logs_drops_rows_replayed_by_a_resumed_attempt(tmp_path):
    run = RunDir(tmp_path)
    _write(run.logs / "attempt_0" / "metrics.csv", [
        {"epoch": 0, "step": 9, "train_loss": 2.0}, {"epoch": 0, "step": 9, "val_acc": 0.5},
        {"epoch": 1, "step": 19, "train_loss": 1.5},  # epoch 1 interrupted after its train row
    ])
    _write(run.logs / "attempt_1" / "metrics.csv", [
        {"epoch": 1, "step": 19, "train_loss": 1.4}, {"epoch": 1, "step": 19, "val_acc": 0.7},
        {"epoch": 2, "step": 29, "train_loss": 1.0}, {"epoch": 2, "step": 29, "val_acc": 0.8},
    ])
    rows = run.merge_logs()
    assert [(r["epoch"], r["train_loss"], r["val_acc"]) for r in rows] == [
        ("0", "2.0", "0.5"), ("1", "1.4", "0.7"), ("2", "1.0", "0.8")]
    with run.metrics_csv.open() as fh:
        assert len(list(csv.DictReader(fh))) == 3


# ----------------------------------------------------------------------------- ownership
def test_fresh_run_is_marked_with_kind_version_command_and_time(tmp_path):
    with RunDir(tmp_path / "run").open(command=["transferkit", "finetune", "--out", "run"]) as run:
        assert run.is_started and not run.is_complete
        write_json(run.metrics_json, {})
    marker = json.loads((tmp_path / "run" / "transferkit.json").read_text())
    assert marker["kind"] == "finetune" and marker["command"] == ["transferkit", "finetune", "--out", "run"]
    assert marker["transferkit"] == transferkit.__version__ and marker["created"].endswith("+00:00")
    assert "metrics.json" in marker["owned"] and RunDir(tmp_path / "run").is_complete


def test_check_refuses_existing_run_and_resume_without_config(tmp_path):
    _finished_run(tmp_path / "run")
    before = _snapshot(tmp_path / "run")
    with pytest.raises(RunDirError, match="--overwrite") as e:
        RunDir(tmp_path / "run").check()
    _one_line(e)
    (tmp_path / "run" / "config.yaml").unlink(missing_ok=True)
    with pytest.raises(RunDirError, match="config.yaml"):
        RunDir(tmp_path / "run").check(resume=True)
    assert _snapshot(tmp_path / "run") == before


def test_overwrite_refuses_folder_without_marker(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(b"two years of notes\x00\xff")
    before = _snapshot(folder)
    for run in (RunDir(folder), RunDir(folder, kind="compare")):
        with pytest.raises(RunDirError, match="is not a transferkit run directory.*choose another --out") as e:
            with run.open(overwrite=True):
                pass
        assert "notes.txt" in _one_line(e)
    assert _snapshot(folder) == before  # byte-identical, and no .lock or marker left


def test_overwrite_keeps_user_files_in_owned_run(tmp_path):
    run = _finished_run(tmp_path / "run")
    user = {k: v for k, v in _snapshot(run.path).items() if k.split("/")[0] in ("notes.txt", "photo.png", "analysis")}
    (run.path / f".model.safetensors.dead{TEMP_SUFFIX}").write_bytes(b"half")  # left by a killed writer
    with run.open(overwrite=True, command=["transferkit", "finetune", "--overwrite"]):
        left = {p.name for p in run.path.iterdir()}
        assert left == {"transferkit.json", ".lock", "notes.txt", "photo.png", "analysis"}
    assert json.loads(run.marker.read_text())["command"] == ["transferkit", "finetune", "--overwrite"]
    now = _snapshot(run.path)
    assert {k: now[k] for k in user} == user


def test_compare_kind_owns_its_own_outputs(tmp_path):
    out = tmp_path / "cmp"
    with RunDir(out, kind="compare").open() as run:
        with RunDir(out / "runs" / "full-seed0").open():  # a finetune run nested in compare's runs/
            write_json(out / "runs" / "full-seed0" / "metrics.json", {})
        for name in ("compare.json", "leaderboard.md", "compare.png", "leaderboard.html"):
            (run.path / name).write_text(name)
    (out / "notes.txt").write_text("keep")
    with pytest.raises(RunDirError, match="transferkit compare directory, not a finetune one"):
        RunDir(out).check(overwrite=True)
    with RunDir(out, kind="compare").open(overwrite=True):
        assert sorted(p.name for p in out.iterdir()) == [".lock", "notes.txt", "transferkit.json"]
    assert RunDir(out, kind="rank").owns("rank.md") and not RunDir(out, kind="rank").owns("notes.txt")


def test_resume_keeps_everything_and_the_marker(tmp_path):
    run = _finished_run(tmp_path / "run")
    run.config.write_text("model: x\n")
    before = _snapshot(run.path)
    with run.open(resume=True, command=["transferkit", "finetune", "--resume"]):
        pass
    assert _snapshot(run.path) == before


def test_pre_marker_run_can_be_resumed_but_not_overwritten(tmp_path):
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text("model: x\n")
    (old / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    with pytest.raises(RunDirError, match="not a transferkit run directory"):
        RunDir(old).check(overwrite=True)
    with RunDir(old).open(resume=True, command=["transferkit", "finetune", "--resume"]) as run:
        assert run.is_started  # adopted: signed now
    assert (old / "checkpoints" / "last.ckpt").read_bytes() == b"ckpt"


# ----------------------------------------------------------------------------- output vs input
def test_output_inside_input_refused(tmp_path):
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "1.png").write_bytes(b"img")
    (tmp_path / "link").symlink_to(data)
    for out in (data, data / "runs" / "r1", tmp_path / "link" / "r1"):
        with pytest.raises(RunDirError, match="inside it") as e:
            RunDir(out).check(inputs=[data])
        _one_line(e)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n")
    with pytest.raises(RunDirError, match="is the input"):
        check_output_not_input(labels, [labels])
    check_output_not_input(tmp_path / "runs" / "r1", [labels, data])  # beside a CSV, outside the folder: fine
    # an --out containing the data is refused when --overwrite could reach it
    with pytest.raises(RunDirError, match="contains the input"):
        check_output_not_input(tmp_path, [data], overwrite=True)
    check_output_not_input(tmp_path, [data], overwrite=False)
    assert not (data / "runs").exists() and not (tmp_path / "link" / "r1").exists()


def test_out_is_a_file_one_line(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a folder") as e:
        RunDir(f).check()
    _one_line(e)
    with pytest.raises(RunDirError, match="results.txt is a file") as e:  # a file where a parent should be
        with RunDir(f / "sub" / "run").open():
            pass
    _one_line(e)
    assert f.read_text() == "x"


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write in: chmod for a normal user; as root (chmod is ignored) a read-only tmpfs."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(d)],
                      capture_output=True).returncode:
        pytest.skip("root without permission to mount a read-only tmpfs")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_readonly_out_one_line(readonly_dir):
    with pytest.raises(RunDirError, match="read-only or no permission") as e:
        with RunDir(readonly_dir / "run").open():
            pass
    _one_line(e)
    with pytest.raises(IOFault, match=r"cannot write .*ro/model\.json: .*(EROFS|EACCES)") as e:
        write_json(readonly_dir / "model.json", {})
    _one_line(e)
    assert list(readonly_dir.iterdir()) == []


# ----------------------------------------------------------------------------- one writer
def test_two_processes_one_lock(tmp_path):
    out, go = tmp_path / "run", tmp_path / "go"
    procs = [_child(tmp_path, out, go) for _ in range(2)]
    go.touch()  # both try at once
    first = [p.stdout.readline().strip() for p in procs]
    assert sorted(line.split()[0] for line in first) == ["locked", "refused"]
    winner, loser = (procs if first[0] == "locked" else procs[::-1])
    refusal = first[1] if first[0] == "locked" else first[0]
    assert loser.wait(timeout=30) == 2
    assert f"in use by pid {winner.pid} on host " in refusal and "(transferkit finetune --out " in refusal
    assert "wait for it or choose another --out" in refusal
    winner.stdin.close()
    assert winner.wait(timeout=30) == 0
    with RunDir(out, kind=LOCK_TEST).open():  # free again
        pass


def test_same_process_cannot_open_twice(tmp_path):
    with RunDir(tmp_path / "run").open():
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()}"):
            with RunDir(tmp_path / "run").open():
                pass


def test_lock_released_after_crash(tmp_path):
    out, go = tmp_path / "run", tmp_path / "go"
    go.touch()
    holder = _child(tmp_path, out, go)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirError, match=f"pid {holder.pid}"):
        with RunDir(out, kind=LOCK_TEST).open():
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with RunDir(out, kind=LOCK_TEST).open(command=["transferkit", "finetune", "again"]) as run:
        assert json.loads(run.lock_file.read_text())["pid"] == os.getpid()


def test_forked_child_exit_keeps_the_lock(tmp_path):
    """A forked helper (a DataLoader worker) that exits must not release the parent's lock."""
    out, go = tmp_path / "run", tmp_path / "go"
    go.touch()
    with RunDir(out, kind=LOCK_TEST).open():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        other = _child(tmp_path, out, go)
        assert other.wait(timeout=30) == 2
        assert f"in use by pid {os.getpid()}" in other.stdout.read()


# ----------------------------------------------------------------------------- no stub
def test_failed_start_leaves_no_stub(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError):
        with RunDir(out).open() as run:
            run.checkpoints.mkdir()  # an empty folder is not of value
            raise ValueError("bad data")
    assert not (tmp_path / "a").exists()

    empty = tmp_path / "mine"  # the user's empty folder: emptied again, kept
    empty.mkdir()
    with pytest.raises(ValueError):
        with RunDir(empty).open():
            raise ValueError("bad data")
    assert empty.is_dir() and list(empty.iterdir()) == []

    with pytest.raises(ValueError):  # files written, but nothing --resume could use: undone
        with RunDir(out).open() as run:
            write_json(run.model_json, {})
            raise ValueError("late")
    assert not (tmp_path / "a").exists()

    with pytest.raises(ValueError):  # an epoch's checkpoint was written: kept for --resume
        with RunDir(out).open() as run:
            write_json(run.model_json, {})
            run.checkpoints.mkdir()
            run.last_checkpoint.write_bytes(b"ckpt")
            raise ValueError("late")
    assert {p.name for p in out.iterdir()} == {"transferkit.json", ".lock", "model.json", "checkpoints"}


def test_refused_start_leaves_no_stub(tmp_path):
    run = _finished_run(tmp_path / "run")
    before = _snapshot(tmp_path)
    with pytest.raises(RunDirError, match="transferkit finetune directory, not a rank one"):
        with RunDir(run.path, kind="rank").open(overwrite=True):
            pass
    assert _snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- ranks
@pytest.mark.parametrize("env", [
    {"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"},  # Lightning's launcher, second device
    {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"},       # torchrun
    {"NODE_RANK": "1"},                                         # main process of a second node
], ids=["lightning-child", "torchrun", "second-node"])
def test_nonzero_rank_writes_nothing(tmp_path, env):
    go = tmp_path / "go"
    go.touch()
    fresh = _child(tmp_path, tmp_path / "fresh", go, "write", **env)
    assert fresh.wait(timeout=30) == 0, fresh.stderr.read()
    assert not (tmp_path / "fresh").exists()
    # the DDP case: rank zero holds a started run; a child re-running the command neither fails nor writes
    with RunDir(tmp_path / "run").open() as run:
        write_json(run.config, {"model": "x"})
        before = _snapshot(run.path)
        child = _child(tmp_path, run.path, go, "write", **env)
        assert child.wait(timeout=30) == 0, child.stdout.read() + child.stderr.read()
        assert _snapshot(run.path) == before


def test_global_rank_reads_launcher_environment(monkeypatch):
    assert global_rank() == 0
    for env, rank in [({"LOCAL_RANK": "0", "NODE_RANK": "0", "WORLD_SIZE": "4"}, 0),
                      ({"LOCAL_RANK": "2", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "4"}, 6),
                      ({"RANK": "5", "LOCAL_RANK": "1"}, 5), ({"SLURM_PROCID": "3"}, 3),
                      ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, 1)]:
        for key in RANK_VARS:
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert global_rank() == rank, env


# ----------------------------------------------------------------------------- atomic writes
def test_weights_file_mode_0644(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights(tmp_path / "model.safetensors", torch.nn.Linear(3, 2))
        write_json(tmp_path / "model.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model.json").stat().st_mode) == 0o644
    assert sorted(transferkit.rundir.load_weights(path)) == ["bias", "weight"]
    (tmp_path / "model.json").chmod(0o640)  # a file the user restricted keeps its mode
    write_json(tmp_path / "model.json", {"again": 1})
    assert stat.S_IMODE((tmp_path / "model.json").stat().st_mode) == 0o640


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")
    seen = []

    def broken(p):
        seen.append(p)
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    tmp = seen[0]  # never mistaken for a result: hidden, own suffix, same folder
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.json.") and tmp.name.endswith(TEMP_SUFFIX)
    assert RunDir(tmp_path).owns(tmp.name)


def test_disk_full_one_line(tmp_path):
    target = tmp_path / "metrics.json"

    def write(p):  # a real ENOSPC from the kernel: /dev/full
        p.write_text("{}")
        with open("/dev/full", "w") as fh:
            fh.write("x" * 10)

    with pytest.raises(IOFault, match=r"cannot write .*metrics\.json: No space left on device \(ENOSPC\)") as e:
        atomic_write(target, write)
    _one_line(e)
    assert not isinstance(e.value, RunDirError)  # its own class: the CLI exits 1 for a machine fault
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def small_fs(small_fs_of):
    return small_fs_of("64k")


def test_weights_on_full_disk_one_line_old_file_kept(small_fs):
    target = small_fs / "model.safetensors"
    save_weights(target, torch.nn.Linear(2, 2))
    before = target.read_bytes()
    with pytest.raises(IOFault, match="No space left on device .*free some space") as e:
        save_weights(target, torch.nn.Linear(200, 200))  # 160 kB > 64 kB
    _one_line(e)
    assert target.read_bytes() == before and [p.name for p in small_fs.iterdir()] == ["model.safetensors"]



# ----------------------------------------------------------------------------- declared kinds
def test_a_kind_is_declared_once_and_looked_up_by_name(tmp_path):
    from transferkit.rundir import declare_kind, declared_kinds, run_kind

    kind = declare_kind("test-notes", ("notes.json",), result="notes.json")
    assert declare_kind("test-notes", ("notes.json",), result="notes.json") is kind  # a module imported twice
    with pytest.raises(ValueError, match="'test-notes' declared twice"):
        declare_kind("test-notes", ("notes.json", "more.json"), result="notes.json")
    assert run_kind("test-notes") is kind and "test-notes" in declared_kinds()
    run = RunDir(tmp_path / "n", kind="test-never-declared")
    assert run.config == tmp_path / "n" / "config.yaml"  # reading paths needs no declaration
    with pytest.raises(ValueError, match="unknown run directory kind 'test-never-declared'.*finetune"):
        run.check()
    assert not (tmp_path / "n").exists()


def test_a_kind_not_declared_here_is_refused_by_name_and_its_nested_run_removed_by_its_marker(tmp_path):
    out = tmp_path / "cmp"
    nested = out / "runs" / "other"
    with RunDir(out, kind="compare").open():
        nested.mkdir(parents=True)
    (nested / "transferkit.json").write_text(json.dumps({"kind": "elsewhere", "owned": ["result.txt", "sub/*.bin"]}))
    for name, data in (("result.txt", "r"), ("sub/a.bin", "b"), ("notes.txt", "mine")):
        (nested / name).parent.mkdir(exist_ok=True)
        (nested / name).write_text(data)
    with pytest.raises(RunDirError, match="transferkit elsewhere directory, not a finetune one"):
        RunDir(nested).check(overwrite=True)
    with RunDir(out, kind="compare").open(overwrite=True):
        pass
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        ".lock", "runs", "runs/other", "runs/other/notes.txt", "transferkit.json"]
