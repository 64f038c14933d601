"""Atomic file I/O: every file is written to a hidden temporary name next to it, then moved into place
with ``os.replace``; it gets the mode a plain ``open`` gives. Disk faults become one-line
:class:`IOFault` s. Only global rank zero writes. Also the weights' reading helper."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from transferkit.errors import IOFault, RunDirError
from transferkit.rundir.ranks import is_global_zero

if TYPE_CHECKING:
    import torch

#: the suffix of every temporary name (``.<name>.<random>.tktmp``): never a result's suffix
TEMP_SUFFIX = ".tktmp"
#: OS errors that are faults of the disk or its permissions, not of transferkit.
IO_FAULTS = {errno.ENOSPC: "free some space or choose another --out",
             errno.EDQUOT: "free some space or choose another --out",
             errno.EFBIG: "choose another --out",
             errno.EROFS: "choose a writable --out",
             errno.EACCES: "choose a writable --out",
             errno.EPERM: "choose a writable --out",
             errno.EIO: "check the disk"}


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)``, then move ``tmp`` onto ``path`` with ``os.replace``.

    ``tmp`` is ``.<name>.<random>.tktmp`` in the same folder: hidden, with no
    result's suffix, unique per call, removed if anything fails. The file gets the
    mode a plain ``open`` gives it: an existing file's mode, else 0666 minus the
    umask (0644 under umask 022). Disk full, read-only or permission errors become
    a one-line :class:`IOFault` naming ``path``. Only global rank zero writes; on
    other ranks this does nothing.
    """
    path = Path(path)
    if not is_global_zero():
        return path
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        mode = _mode_for(path)
        write(tmp)
        os.chmod(tmp, mode)
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise io_fault(path, e) from e
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def io_fault(path: Path, e: OSError) -> OSError | IOFault:
    """``e`` as a one-line IOFault when it is a fault of the disk, else ``e`` itself."""
    if e.errno not in IO_FAULTS:
        return e
    return IOFault(f"cannot write {path}: {e.strerror} ({errno.errorcode[e.errno]}); {IO_FAULTS[e.errno]}")


def _mode_for(path: Path) -> int:
    """The mode ``open(path, "w")`` would leave: the existing file's, else 0666 minus the umask."""
    with suppress(FileNotFoundError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask both sets and gets)
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _fsync(path: Path) -> None:
    """Flush ``path`` to the disk, so the rename never exposes an empty file after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A folder written whole or not at all: the ``with`` block fills a hidden temporary folder
    beside ``path``, which then becomes ``path`` with one ``os.replace``. Where ``path`` is still
    there (files a user left in it after ``--overwrite`` removed the owned ones), the new entries
    are moved into it instead, replacing those of the same names: nothing else in it is touched.
    Disk full, read-only or permission errors become a one-line :class:`IOFault`; the temporary
    folder never stays. Rank zero only (others get a throw-away temporary folder)."""
    import tempfile

    path = Path(path)
    if not is_global_zero():
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        tmp.mkdir()
        yield tmp
        if path.is_dir() and not path.is_symlink():
            _move_into(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise io_fault(path, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into(src: Path, dst: Path) -> None:
    """Move every entry of folder ``src`` into folder ``dst`` (folders that exist there: entry by entry)."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


def write_json(path: Path, obj) -> Path:
    """``obj`` as indented JSON (values JSON cannot hold: their ``str``), written by ``atomic_write``."""
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str) + "\n"))


def save_weights(path: Path, model: torch.nn.Module) -> Path:
    """Write ``model``'s state dict as safetensors (serialised in memory, written by ``atomic_write``)."""
    from safetensors.torch import save

    def write(p: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        p.write_bytes(save(state))
    return atomic_write(path, write)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in safetensors file ``path``; one line when there is none."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise RunDirError(f"{path} not found; is this a finished transferkit run directory?")
    return load_file(str(path))
