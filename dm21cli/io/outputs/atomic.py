"""Atomic file writes: a complete file under its final name, or none.

Every file is written into a hidden temporary file in the same directory
(``.<name>.<random>.tmp``), flushed and fsync'ed, then renamed over the final
name with ``os.replace``.  A reader (or a crashed run) sees the old file, the
complete new file, or no file -- never a half-written one.  A full disk or an
unwritable location becomes the `dm21cli.core.errors` error that says so.

Every file of an output directory goes through this module: the atomic
writers, and `open_log` for the two logs (dm21.log, scan.log), written line by
line.  They write regular files
only: a symbolic link, a FIFO, a folder or a device in the place of an output
file is refused (`check_output_name`, exit 8), never written through, replaced
or waited on.  Text is UTF-8; a character UTF-8 cannot hold (a path that is
not valid UTF-8 reaches Python as lone surrogates) is written as its escape
``\\udcff``, which JSON reads back as the same character (`TEXT_ERRORS`).
`read_json_object` reads dm21's own JSON files back, from regular files only.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from dm21cli.core.errors import OutputLocationError, reraise_os_error

#: how text files encode what UTF-8 cannot hold: only lone surrogates (the bytes of a
#: path or argument that is not valid UTF-8), written as ``\udcff`` (a JSON escape)
TEXT_ERRORS = "backslashreplace"

_umask_cache: int | None = None


def _current_umask() -> int:
    """The process umask, read without changing it where possible (Linux)."""
    global _umask_cache
    if _umask_cache is None:
        mask = None
        try:
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("Umask:"):
                        mask = int(line.split()[1], 8)
                        break
        except (OSError, ValueError):
            mask = None
        if mask is None:  # not Linux: the classic (briefly racy) way
            mask = os.umask(0o022)
            os.umask(mask)
        _umask_cache = mask
    return _umask_cache


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that a rename in it is durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    """What a file of this st_mode is, for messages ('a symbolic link', 'a FIFO', ...)."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return name
    return "not a regular file"


def _not_a_regular_file(path: Path, mode: int) -> OutputLocationError:
    return OutputLocationError(
        f"writing {path} failed: it is {_kind(mode)}, not a regular file (dm21 writes only "
        f"regular files: never through a link, into a FIFO or over a folder); remove it or "
        f"choose another output directory with -o")


def check_output_name(path: Path) -> None:
    """Raise OutputLocationError (exit 8) unless `path` is absent or a regular file.

    Checked with ``lstat`` (a symbolic link is not followed), so that nothing is written
    through a link, into a FIFO (which would block) or over a folder.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:  # a file where a folder should be, a name too long, ...
        reraise_os_error(exc, path)
    if not stat.S_ISREG(mode):
        raise _not_a_regular_file(path, mode)


def open_log(path: Path, append: bool = False) -> IO[str]:
    """Open the log file `path` for writing line by line (UTF-8, line-buffered); an existing
    file is appended to if `append`, else emptied.

    Only a regular file is opened: the name is checked with `check_output_name`, then
    opened with O_NOFOLLOW and O_NONBLOCK (a FIFO put there meanwhile fails at once or is
    found by fstat, never waited on).  Errors are the dm21cli errors that say so (6, 8).
    """
    path = Path(path)
    check_output_name(path)
    flags = (os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
             | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        reraise_os_error(exc, path)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_a_regular_file(path, mode)
        os.set_blocking(fd, True)
        if not append:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors=TEXT_ERRORS)
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            reraise_os_error(exc, path)
        raise


def read_json_object(path: Path) -> dict | None:
    """The JSON object (a dict) in the regular file `path`; None if there is none: a
    missing or unreadable file, a symbolic link, FIFO or folder (never opened, so never
    waited on), text that is not JSON, or JSON that is not an object (``[]``)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _new_temp_path(path: Path) -> Path:
    """Create (empty, exclusively) and return a hidden temp file next to `path`."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def _commit(tmp: Path, path: Path) -> None:
    """fsync `tmp`, give it normal permissions and rename it over `path`."""
    # mkstemp makes the file 0600; a result file should look like any other.
    os.chmod(tmp, 0o666 & ~_current_umask())
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`.

    For writers that insist on opening the file themselves (PySCF's cube
    writer).  On an exception (including KeyboardInterrupt) the temporary file
    is removed, `path` is left untouched, and the exception propagates.
    """
    path = Path(path)
    check_output_name(path)
    try:
        tmp = _new_temp_path(path)
    except OSError as exc:
        reraise_os_error(exc, path)
    try:
        yield tmp
        _commit(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):  # disk full, read-only: say so, naming the file
            reraise_os_error(exc, path)
        raise


@contextlib.contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file next to `path` for writing; replace `path` on success.

    mode: ``"w"`` (text, UTF-8) or ``"wb"`` (binary).  On success the file is
    flushed, fsync'ed and renamed over `path` (``os.replace``); on an exception
    the temporary file is removed, `path` keeps its old content (if any) and
    the exception is re-raised.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "errors": TEXT_ERRORS,
                                         "newline": "\n"}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_files_atomic(files: list[tuple[Path, str]]) -> None:
    """Write several text files so that they appear complete and in the order given.

    Every file is first written and fsync'ed under a temporary name (a full
    disk fails here, before any final name changes); then they are renamed
    in order.  So the first file is the commit point: the files after it
    never appear without it (e.g. result.json first, then the summary.txt
    rendered from it).  On an exception no temporary file is left.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, _ in files:
            check_output_name(Path(path))
        for path, text in files:
            path = Path(path)
            try:
                tmp = _new_temp_path(path)
                staged.append((tmp, path))
                with open(tmp, "w", encoding="utf-8", errors=TEXT_ERRORS, newline="\n") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o666 & ~_current_umask())
            except OSError as exc:
                reraise_os_error(exc, path)
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                reraise_os_error(exc, path)
        for directory in dict.fromkeys(path.parent for _, path in staged):
            fsync_dir(directory)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def to_builtin(obj: Any) -> Any:
    """Recursively turn numpy scalars/arrays, tuples, Paths into plain Python."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return float(obj)  # also turns numpy.float64 into a plain float
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v) for v in obj]
    converted = json_default(obj)
    return to_builtin(converted)


def json_default(obj: Any) -> Any:
    """`json.dumps` hook: numpy types, Paths, dates, sets -> JSON-able values."""
    module = type(obj).__module__ or ""
    if module == "numpy" or module.startswith("numpy."):
        if hasattr(obj, "tolist"):  # ndarray and numpy scalars alike
            return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, complex):
        raise TypeError(f"complex value {obj!r} is not JSON serializable")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def finite(obj: Any) -> Any:
    """`obj` with NaN and infinities replaced by None (JSON has no such numbers)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write `obj` as JSON (indent 2, no NaN/Infinity) atomically; return the path.

    numpy scalars and arrays are converted to plain Python.  A NaN or infinite
    float raises ValueError *before* anything is written.
    """
    text = json.dumps(obj, indent=2, allow_nan=False, default=json_default,
                      ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def write_yaml_atomic(path: Path, obj: Any) -> Path:
    """Write `obj` as YAML (``yaml.safe_dump``, keys in given order) atomically."""
    import yaml

    text = yaml.safe_dump(to_builtin(obj), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    return write_text_atomic(path, text)
