"""The run lock (one writer): the process that opens a run holds an exclusive OS lock on ``.lock``
until it is done; a second process is refused with the holder's pid, host and command. The OS drops
the lock when the holder dies, even by kill -9."""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from contextlib import suppress
from pathlib import Path

from filelock import FileLock, Timeout

from transferkit.errors import RunDirError

LOCK = ".lock"


class RunLock:
    """The exclusive lock on ``<folder>/.lock``, taken without waiting, and the note of who holds it."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.file = self.folder / LOCK
        self._lock: FileLock | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._lock is not None

    def acquire(self, command: list[str]) -> None:
        """Take ``.lock`` without waiting, and write who holds it into it (in place: the locked file stays)."""
        lock = FileLock(self.file)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(f"run directory {self.folder} is in use by {self.holder()} — wait for it or "
                              "choose another --out") from None
        self._lock = lock
        with open(self.file, "w") as fh:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": command}, fh)

    def holder(self, wait: float = 2.0) -> str:
        """Who holds the lock, as it wrote into it: 'pid N on host H (command)'.

        The holder writes this just after locking and clears it on release, so an
        empty note is read again for up to ``wait`` seconds.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                h = json.loads(self.file.read_text())
                shown = shlex.join([Path(h["command"][0]).name, *h["command"][1:]]) if h["command"] else "?"
                shown = shown if len(shown) <= 100 else shown[:99] + "…"
                return f"pid {h['pid']} on host {h['host']} ({shown})"
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                if time.monotonic() > deadline:
                    return "another process (which one, it has not written)"
                time.sleep(0.01)

    def release(self) -> None:
        """Clear the note and let go of the lock (nothing when not held)."""
        if self._lock is not None:
            with suppress(OSError):
                os.truncate(self.file, 0)  # no stale note for the next one refused
            self._lock.release()
            self._lock = None
