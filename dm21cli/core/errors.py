"""One exception hierarchy for dm21cli, and the one place that maps it to exit codes.

Library code raises these; only the command line (``dm21cli.cli.main``) turns them
into an exit status and a one-line message.  Each class says what went wrong
and whether retrying with other settings may help.
"""

from __future__ import annotations

import enum
import errno
from typing import NoReturn


class ExitStatus(enum.IntEnum):
    """Exit statuses of the ``dm21`` command (documented in README.md)."""

    SUCCESS = 0
    ERROR = 1  # unexpected internal error (a bug: please report it)
    INPUT_ERROR = 2  # bad input file or options; nothing was computed
    WEIGHTS_ERROR = 3  # DM21 checkpoints missing or failing their checksums
    NOT_CONVERGED = 4  # SCF did not converge; results written, marked converged: false
    OUTPUT_EXISTS = 5  # output directory exists and --overwrite was not given
    RESOURCE_ERROR = 6  # memory limit too small, disk full, ...
    COMPUTE_ERROR = 7  # the backend failed during the calculation
    OUTPUT_ERROR = 8  # the output location cannot be written (permissions, read-only)
    INTERRUPTED = 130  # SIGINT / SIGTERM


class DM21Error(Exception):
    """Base class of every error dm21cli raises on purpose."""

    exit_status: ExitStatus = ExitStatus.ERROR
    #: whether the same job may succeed with other settings (QCEngine's idea)
    retry_may_help: bool = False


class InputError(DM21Error):
    """The input file or an option is invalid.

    The message is rendered as ``file:line: field: message`` with the parts
    that are known, so that a user sees at once where to look.
    """

    exit_status = ExitStatus.INPUT_ERROR

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None, field: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        #: every problem found in the input, this one first (see `several`)
        self.problems: list[InputError] = [self]
        super().__init__(self.render())

    @classmethod
    def several(cls, problems: list[InputError]) -> InputError:
        """The first of `problems`, carrying all of them in ``.problems``.

        ``str()`` of the result is the first problem's line and the number of
        the others (what ``dm21 run`` prints); ``dm21 validate`` prints
        ``render()`` of each.
        """
        first = problems[0]
        first.problems = list(problems)
        return first

    def __str__(self) -> str:
        text = self.render()
        more = len(self.problems) - 1
        if more > 0:
            text += (f" (and {more} more problem{'s' if more > 1 else ''}: "
                     f"'dm21 validate' lists them all)")
        return text

    def render(self) -> str:
        """This problem as one line: ``file:line: field: message``."""
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class WeightsError(DM21Error):
    """DM21 checkpoint files are missing, incomplete or corrupted."""

    exit_status = ExitStatus.WEIGHTS_ERROR


class ConvergenceError(DM21Error):
    """The SCF did not converge within the allowed attempts."""

    exit_status = ExitStatus.NOT_CONVERGED
    retry_may_help = True


class OutputExistsError(DM21Error):
    """The output location already holds results; refuse to overwrite them."""

    exit_status = ExitStatus.OUTPUT_EXISTS


class ResourceError(DM21Error):
    """Not enough memory or disk for the job as configured."""

    exit_status = ExitStatus.RESOURCE_ERROR
    retry_may_help = True


class OutputLocationError(DM21Error):
    """The output location cannot be written: permissions, a read-only file system, ..."""

    exit_status = ExitStatus.OUTPUT_ERROR
    retry_may_help = True


class ComputeError(DM21Error):
    """The quantum-chemistry backend failed while computing."""

    exit_status = ExitStatus.COMPUTE_ERROR


class Interrupted(DM21Error):
    """The run was stopped by SIGINT or SIGTERM."""

    exit_status = ExitStatus.INTERRUPTED


#: errno values that mean "the disk (or the user's quota) is full".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: errno values that mean "this location may not be written".
NOT_WRITABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def from_os_error(exc: OSError, path=None, doing: str = "writing") -> DM21Error | OSError:
    """The dm21cli error for an OSError met while `doing` ("writing", "creating") `path`.

    A full disk becomes a ResourceError (exit 6), a location that may not be
    written an OutputLocationError (exit 8); any other OSError is returned
    unchanged (the caller re-raises it).  The message names the file.
    """
    target = path if path is not None else (exc.filename or "a file")
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_FULL_ERRNOS:
        return ResourceError(f"disk full while {doing} {target}: {reason}; free some space or "
                             f"choose another output directory with -o")
    if exc.errno in NOT_WRITABLE_ERRNOS:
        return OutputLocationError(f"{doing} {target} failed: {reason}; choose another output "
                                   f"directory with -o")
    return exc


def output_error(exc: OSError, path=None, doing: str = "writing") -> DM21Error:
    """The dm21cli error for an OSError met while `doing` ("writing", "creating") the output
    file or folder `path`: never an unclassified one.

    A full disk is a ResourceError (exit 6); anything else the file system refuses (no
    permission, a read-only file system, a name too long, a folder that cannot be made, as
    in /proc) an OutputLocationError (exit 8).  The message names the path and the reason.
    """
    error = from_os_error(exc, path, doing)
    if error is exc:
        target = path if path is not None else (exc.filename or "a file")
        error = OutputLocationError(f"{doing} {target} failed: {exc.strerror or exc}; choose "
                                    f"another output directory with -o")
    return error


def reraise_os_error(exc: OSError, path=None, doing: str = "writing") -> NoReturn:
    """Raise the `output_error` translation of `exc` (chained): for output files and folders."""
    raise output_error(exc, path, doing) from exc


def exit_status_for(exc: BaseException) -> ExitStatus:
    """Map any exception to the exit status of the ``dm21`` command."""
    if isinstance(exc, DM21Error):
        return exc.exit_status
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, MemoryError):
        return ExitStatus.RESOURCE_ERROR
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return ExitStatus.RESOURCE_ERROR
    return ExitStatus.ERROR
