"""Atomic file writes: a complete file under its final name, or none.

Every file is written into a hidden temporary file in the same directory
(``.<name>.<random>.tmp``), flushed and fsync'ed, then renamed over the final
name with ``os.replace``.  A reader (or a crashed run) sees the old file, the
complete new file, or no file -- never a half-written one.  A full disk or an
unwritable location becomes the `dm21cli.core.errors` error that says so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from dm21cli.core.errors import reraise_os_error

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


def _fsync_dir(directory: Path) -> None:
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
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`.

    For writers that insist on opening the file themselves (PySCF's cube
    writer).  On an exception (including KeyboardInterrupt) the temporary file
    is removed, `path` is left untouched, and the exception propagates.
    """
    path = Path(path)
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
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
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
        for path, text in files:
            path = Path(path)
            try:
                tmp = _new_temp_path(path)
                staged.append((tmp, path))
                with open(tmp, "w", encoding="utf-8", newline="\n") as f:
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
            _fsync_dir(directory)
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
    converted = _json_default(obj)
    return to_builtin(converted)


def _json_default(obj: Any) -> Any:
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
    text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default,
                      ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def write_yaml_atomic(path: Path, obj: Any) -> Path:
    """Write `obj` as YAML (``yaml.safe_dump``, keys in given order) atomically."""
    import yaml

    text = yaml.safe_dump(to_builtin(obj), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    return write_text_atomic(path, text)
