"""Errors raised by transferkit.

Every error carries one actionable line: what is wrong and what to do about it.
The CLI prints that line on stderr and exits with code 2, without a traceback.
"""


class TransferkitError(Exception):
    """Base class of every error transferkit raises on purpose."""


class DataError(TransferkitError):
    """The data source is missing, empty, corrupt or malformed."""


class ModelError(TransferkitError):
    """Unknown model name or a model that cannot be built."""


class WeightsError(ModelError):
    """Weights that cannot be found or do not fit the model."""


class RunDirError(TransferkitError):
    """A run directory that is missing, already exists, or is incomplete."""


class TrainingError(TransferkitError):
    """Training stopped: non-finite loss, or an invalid configuration."""


class ConfigError(TransferkitError):
    """An invalid option or combination of options."""


class IOFault(TransferkitError):
    """Writing a file failed in the system: disk full, read-only file system, no permission.

    The message names the path and the system's reason. The CLI exits with code 1
    (the machine failed, not the command line).
    """


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised from the signal handler so that every layer unwinds
    (Lightning included: it re-raises what it does not know). ``where`` says what was kept
    and how to continue; the CLI exits with 128 + the signal number (130, 143)."""

    def __init__(self, signum: int, where: str = ""):
        super().__init__(signum)
        self.signum, self.where = signum, where
