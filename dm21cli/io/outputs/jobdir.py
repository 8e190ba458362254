"""The output directory of one job: never over results silently, never over foreign files,
marked as dm21's, locked while it runs.

`JobDirectory` refuses an output directory that already holds files unless
``overwrite=True``, and even then replaces only a folder dm21 wrote
(`check_replaceable`): one that carries `OUTPUT_MARKER` (every output directory
gets it when it is created), never the working directory, the home folder, the
root or a folder that holds the input file.  With overwrite the old directory
is first moved aside to a hidden sibling (``.<name>.old-<random>``) and deleted
only by `JobDirectory.finalize`, once the new results exist;
`JobDirectory.abandon` puts it back when the new run wrote nothing.  A
``.running`` marker (`RunningMarker`: pid, host, start time, held with an
flock) sits in the directory while a job runs; scans hold their directory the
same way.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from dm21cli.core.errors import OutputExistsError, OutputLocationError, reraise_os_error
from dm21cli.io.outputs.atomic import (
    check_output_name,
    fsync_dir,
    read_json_object,
    write_text_atomic,
)
from dm21cli.io.outputs.qcschema import fields

#: name of the marker file present while a job runs in a directory (`RunningMarker`).
MARKER_NAME = ".running"
#: the file that makes a folder dm21's own: written into every output directory (of a run,
#: an optimisation, a scan, a scan point) when dm21 creates it; --overwrite replaces only
#: folders that carry it (or that older versions of dm21 wrote, `is_dm21_output`).
OUTPUT_MARKER = ".dm21-output"
#: a scan directory's definition file: what marks the scan directories of older versions
SCAN_DEFINITION = "scan.definition.json"


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _open_flags(*names: str) -> int:
    """os.O_* flags by name, those this system lacks left out."""
    flags = 0
    for name in names:
        flags |= getattr(os, name, 0)
    return flags


# ----------------------------------------------------------------------------
# whose folder it is
# ----------------------------------------------------------------------------
def check_output_folder(path: Path) -> None:
    """Raise OutputLocationError (exit 8) if `path` cannot be an output folder: it, or a
    folder above it, exists and is not a directory (a file, a FIFO, a dangling link)."""
    path = Path(path)
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputLocationError(f"creating {path} failed: {ancestor} is a file, not a "
                                          f"directory; choose another output directory with -o")
            break
    if os.path.lexists(path) and not path.is_dir():
        raise OutputLocationError(f"output path {path} exists and is not a directory; choose "
                                  f"another output directory with -o")


def make_folder(path: Path) -> list[Path]:
    """Create the folder `path` and its missing parents; the folders created, outermost
    first (for `remove_folders` when what follows fails).  OSError as mkdir raises it."""
    path = Path(path)
    missing = [folder for folder in [*reversed(path.parents), path]
               if not os.path.lexists(folder)]
    created = []
    try:
        for folder in missing:
            try:
                folder.mkdir()
            except FileExistsError:  # made by another process meanwhile
                if not folder.is_dir():
                    raise
                continue
            created.append(folder)
    except BaseException:
        remove_folders(created)
        raise
    return created


def remove_folders(created: list[Path]) -> None:
    """Remove the folders `make_folder` created, innermost first, as far as they are empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def mark_output_folder(path: Path, kind: str) -> None:
    """Write `OUTPUT_MARKER` into the output folder `path` (if it is not there yet): `kind`
    is "run" or "scan"."""
    marker = Path(path) / OUTPUT_MARKER
    if read_json_object(marker) is None:
        write_text_atomic(marker, json.dumps({"creator": "dm21cli", "kind": kind,
                                              "created": _now_iso()}, indent=2) + "\n")


def is_dm21_output(path: Path) -> bool:
    """Whether dm21 wrote the folder `path`: it carries `OUTPUT_MARKER` (a regular file), or,
    from versions before the marker, a result.json whose provenance names dm21cli, a
    ``.running`` marker or a scan definition."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path / OUTPUT_MARKER).st_mode):
            return True
    result = read_json_object(path / "result.json")
    if result is not None and (fields(result).get("provenance") or {}).get("creator") == "dm21cli":
        return True
    running = read_json_object(path / MARKER_NAME)
    if running is not None and {"pid", "host", "start_time"} <= set(running):
        return True
    definition = read_json_object(path / SCAN_DEFINITION)
    return definition is not None and {"hash", "definition"} <= set(definition)


def protected_folders(inputs: Iterable = ()) -> list[tuple[Path, str]]:
    """(folder, what it is) for every folder --overwrite must never replace, nor any folder
    above it: the working directory, the home folder, the root, and the folders of the
    input files `inputs` (resolved paths)."""
    places = [(Path.cwd(), "the working directory"), (Path("/"), "the root folder")]
    home = os.path.expanduser("~")
    if not home.startswith("~"):
        places.append((Path(home), "the home folder"))
    places += [(Path(f).parent, f"the folder of the input file {f}") for f in inputs if f]
    return [(Path(os.path.realpath(place)), what) for place, what in places]


def check_replaceable(path: Path, inputs: Iterable = ()) -> None:
    """Raise OutputExistsError (exit 5) unless --overwrite may replace the folder `path`:
    it must be dm21's (`is_dm21_output`), and neither one of `protected_folders(inputs)`
    nor a folder above one."""
    real = Path(os.path.realpath(path))
    places = protected_folders(inputs)
    where = next((what for place, what in places if real == place), None) or \
        next((f"a folder above {what}" for place, what in places if real in place.parents), None)
    if where is not None:
        raise OutputExistsError(f"--overwrite never replaces {path}: it is {where}; choose "
                                f"another output directory with -o")
    if not is_dm21_output(path):
        raise OutputExistsError(
            f"output directory {path} holds files that dm21 did not write (no {OUTPUT_MARKER} "
            f"marker): --overwrite replaces only dm21's own output directories, and this one is "
            f"left as it is; choose another with -o")


# ----------------------------------------------------------------------------
# who is running in it
# ----------------------------------------------------------------------------
class RunningMarker:
    """The ``.running`` file of a directory in use: who uses it (pid, host, start time,
    command line), locked with ``flock`` for as long as the process holds it.

    `holder` says whether another live process holds the directory (its flock, or a
    live pid on this host for markers written without one); `claim` takes it (or
    raises OutputExistsError, exit 5); `release` removes the marker.  The kernel drops
    the lock when its process dies, so a marker left by a killed process is stale, and
    the next `claim` takes it over.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / MARKER_NAME
        self._fd: int | None = None

    def holder(self) -> dict | None:
        """The marker's record (pid, host, start_time, argv) if another live process holds
        the directory, else None."""
        info = read_json_object(self.path)
        if self._fd is None and self._locked_elsewhere():
            if info is None:
                return {}  # locked, its record not written yet
            if info.get("pid") != os.getpid():
                return info
        if info is not None and self._alive_elsewhere(info):
            return info
        return None

    def check_free(self) -> None:
        """Raise OutputExistsError if another live process holds the directory."""
        info = self.holder()
        if info is not None:
            raise self._in_use(info)

    def claim(self) -> "RunningMarker":
        """Hold the directory (it must exist): lock the marker and write this process into
        it.  OutputExistsError if another live process holds it."""
        check_output_name(self.path)
        for _ in range(5):
            fd = os.open(self.path, _open_flags("O_RDWR", "O_CREAT", "O_NOFOLLOW", "O_NONBLOCK",
                                                "O_CLOEXEC"), 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    check_output_name(self.path)  # raises, naming what is there
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self._in_use(read_json_object(self.path) or {}) from None
                except OSError as exc:  # a file system without flock: the pid check alone
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # its holder removed it while we opened it: try again
                    os.close(fd)
                    continue
                info = read_json_object(self.path)
                if info is not None and self._alive_elsewhere(info):
                    raise self._in_use(info)
                text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "start_time": _now_iso(), "argv": list(sys.argv)},
                                  indent=2) + "\n"
                os.ftruncate(fd, 0)
                os.pwrite(fd, text.encode("utf-8", "backslashreplace"), 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return self
        raise OutputExistsError(f"{self.directory} was taken by another job while starting; "
                                f"use -o to choose another")

    def release(self) -> None:
        """Remove the marker (if it is still ours) and drop the lock."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None

    def _locked_elsewhere(self) -> bool:
        try:
            fd = os.open(self.path, _open_flags("O_RDONLY", "O_NOFOLLOW", "O_NONBLOCK",
                                                "O_CLOEXEC"))
        except OSError:
            return False
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # (drops the shared lock just taken)
        return False

    @staticmethod
    def _alive_elsewhere(info: dict) -> bool:
        pid, host = info.get("pid"), info.get("host")
        return host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() \
            and _pid_alive(pid)

    def _in_use(self, info: dict) -> OutputExistsError:
        pid, host = info.get("pid", "unknown"), info.get("host", "this host")
        return OutputExistsError(
            f"output directory {self.directory} is in use by a running job (pid {pid} on "
            f"{host}); wait for it, or remove {self.path} if that process is not dm21")


class JobDirectory:
    """The output directory of one job.

    Usage (the runner)::

        jobdir = JobDirectory(Path("water.dm21"), overwrite=args.overwrite, inputs=[job_file])
        jobdir.prepare()            # may raise OutputExistsError
        try:
            ... compute; write_json_atomic(jobdir.file("result.json"), result) ...
        except BaseException:
            if not jobdir.abandon():    # nothing written -> directory removed
                jobdir.finalize("failed")  # or leave .running to mark it unfinished
            raise
        jobdir.finalize("success")

    Overwrite semantics: with ``overwrite=True`` an existing non-empty
    directory that dm21 wrote (`check_replaceable`; never one holding a file of
    `inputs`) is *renamed* to a hidden sibling ``.<name>.old-<random>`` by
    `prepare`, and deleted only by `finalize`.  If the run is killed in
    between, the old results are still on disk under that hidden name.
    `abandon` renames it back when the new run wrote nothing.
    """

    def __init__(self, path: Path, overwrite: bool = False, inputs: Iterable = ()):
        self._path = Path(path)
        self.overwrite = bool(overwrite)
        #: the job's input files: an overwrite never replaces a folder that holds one
        self.inputs = [Path(f) for f in inputs if f]
        self.status: str | None = None
        #: where the previous contents were moved by an overwrite (until finalize)
        self.old_path: Path | None = None
        self._created = False
        self._prepared = False
        self._running = RunningMarker(self._path)

    # -- properties ---------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def marker(self) -> Path:
        return self._running.path

    def file(self, name: str) -> Path:
        """The path of output file `name` (a plain relative name) in the directory."""
        rel = Path(name)
        if rel.is_absolute() or not rel.parts or any(p in ("..", "") for p in rel.parts):
            raise ValueError(f"output file name must be relative and inside the directory: {name!r}")
        return self._path / rel

    # -- describing what is already there -----------------------------------
    def _describe_existing(self) -> str:
        """What the directory already holds, e.g. 'results (from <date>)'."""
        result = read_json_object(self._path / "result.json")
        if result is not None:
            date = (fields(result).get("provenance") or {}).get("date")
            return f"results (from {date or 'an unknown date'})"
        marker = read_json_object(self.marker)
        if marker is not None:
            return f"an unfinished run (started {marker.get('start_time') or 'at an unknown time'})"
        if os.path.lexists(self._path / "result.json"):
            return "results (with an unreadable result.json)"
        return "files (no result.json)"

    # -- lifecycle ----------------------------------------------------------
    def prepare(self) -> "JobDirectory":
        """Create the directory (and parents), `OUTPUT_MARKER` and the ``.running`` marker.

        Raises OutputExistsError if the directory holds files and overwrite
        is off, or overwrite may not replace it (`check_replaceable`), or if
        another live process is running in it; OutputLocationError if it
        cannot be made (a file in its place, permissions).
        """
        if self._prepared:
            return self
        try:
            return self._prepare()
        except OSError as exc:  # read-only file system, no permission, disk full
            reraise_os_error(exc, self._path, "creating")

    def _prepare(self) -> "JobDirectory":
        p = self._path
        check_output_folder(p)
        if p.is_dir() and any(p.iterdir()):
            self._running.check_free()
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {p} already holds {self._describe_existing()}; "
                    f"use --overwrite to replace it or -o to choose another")
            check_replaceable(p, self.inputs)
            self.old_path = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
            # mkdtemp reserved a unique name; rename p onto it (an empty dir may be replaced).
            os.replace(p, self.old_path)
            fsync_dir(p.parent)
        created: list[Path] = []
        try:
            created = make_folder(p)
            self._created = bool(created)
            check_output_folder(p)
            self._running.claim()
            mark_output_folder(p, "run")
        except BaseException:
            # nothing of the new run exists yet: remove the folders made, put the old results back
            self._running.release()
            remove_folders(created)
            if self.old_path is not None:
                with contextlib.suppress(OSError):
                    os.replace(self.old_path, p)
                    self.old_path = None
            raise
        self._prepared = True
        return self

    def finalize(self, status: str = "success", keep_old: bool = False) -> Path | None:
        """Finish the job: remove ``.running`` and deal with overwritten old results.

        Call it once the result files (also those of a failed or unconverged
        run) are written.  `status` is kept in ``self.status`` for the caller.
        The old results an overwrite moved aside are deleted, unless
        `keep_old` (a failed or interrupted run): then they are moved to a
        visible sibling ``<name>.previous`` (``-2``, ``-3`` ... if taken),
        whose path is returned.
        """
        self.status = status
        self._running.release()
        fsync_dir(self._path)
        kept = None
        if self.old_path is not None:
            if keep_old:
                kept = self._path.with_name(f"{self._path.name}.previous")
                n = 1
                while os.path.lexists(kept):
                    n += 1
                    kept = self._path.with_name(f"{self._path.name}.previous-{n}")
                os.replace(self.old_path, kept)
                fsync_dir(self._path.parent)
            else:
                shutil.rmtree(self.old_path, ignore_errors=True)
            self.old_path = None
        return kept

    def abandon(self) -> bool:
        """Undo `prepare` if the job wrote nothing but the markers.

        Returns True if the directory was removed (or, if it existed empty
        before, emptied again) and any overwritten old directory put back.
        Returns False and changes nothing if other files were written: the
        ``.running`` marker then stays to show the run did not finish, and an
        overwritten old directory stays at ``self.old_path``.
        """
        if not self._prepared:
            return True
        p = self._path
        try:
            others = [c for c in p.iterdir() if c.name not in (MARKER_NAME, OUTPUT_MARKER)
                      and not (c.name.startswith(".") and c.name.endswith(".tmp"))]
        except FileNotFoundError:
            others = []
        if others:
            return False
        self._running.release()
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        with contextlib.suppress(FileNotFoundError):
            (p / OUTPUT_MARKER).unlink()
        for c in p.glob(".*.tmp") if p.exists() else []:  # stray temp files only
            with contextlib.suppress(OSError):
                c.unlink()
        if self._created or self.old_path is not None:
            with contextlib.suppress(FileNotFoundError):
                p.rmdir()
        if self.old_path is not None:
            os.replace(self.old_path, p)
            fsync_dir(p.parent)
            self.old_path = None
        self._prepared = False
        self.status = "abandoned"
        return True
