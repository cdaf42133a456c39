"""Errors with messages meant for people. The CLI prints them as one line."""
import importlib


class AttnseqError(Exception):
    """Base class for every error attnseq raises on purpose."""


class DataError(AttnseqError, ValueError):
    """A data file is malformed: the message names the file and line."""


class CheckpointError(AttnseqError):
    """A checkpoint is missing, corrupt, or does not match the model."""


class DeviceError(AttnseqError, ValueError):
    """An unknown device, or a GPU asked for where there is none."""


class ConfigError(AttnseqError, ValueError):
    """A bad option, flag combination or config file."""


class NonFiniteError(AttnseqError, FloatingPointError):
    """A NaN or inf appeared in the loss or the gradients."""


class MissingExtraError(AttnseqError, ImportError):
    """A package of an optional extra (onnx, starlette, ...) is not installed: the message names the extra."""


def require_extra(module: str, feature: str, install: str):
    """Import ``module`` or raise ``MissingExtraError``: "<feature> needs the '<module>' package: <install>"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{feature} needs the '{module}' package: {install}") from None


class TrainingStopped(AttnseqError):
    """Training stopped on SIGINT or SIGTERM after saving ``last/``; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum


class RanksFailed(AttnseqError):
    """Training on several MPI ranks stopped because one or more of them failed; the message names the
    rank and says why. Rank 0 raises it (and prints it); the others raise ``QuietExit``."""


class QuietExit(AttnseqError):
    """Exit with ``exit_code`` and print nothing: another process (rank 0 of an MPI job) reports why."""

    def __init__(self, exit_code: int = 1):
        super().__init__(f"exit {exit_code}")
        self.exit_code = exit_code


def one_line(e: BaseException) -> str:
    """An exception as the CLI would print it: its message (an OSError's file and reason), else its
    type and message; the first line only."""
    if isinstance(e, OSError) and not isinstance(e, AttnseqError):
        text = f"{e.filename or ''}: {e.strerror or e}" if e.filename else str(e.strerror or e)
    elif isinstance(e, (AttnseqError, ValueError)) and str(e):
        text = str(e)
    else:
        text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return (text.strip().splitlines() or [type(e).__name__])[0]
