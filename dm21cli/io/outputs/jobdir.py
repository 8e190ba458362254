"""The output directory of one job: never over results silently, marked while it runs.

`JobDirectory` refuses an output directory that already holds files unless
``overwrite=True``.  With overwrite the old directory is first moved aside to
a hidden sibling (``.<name>.old-<random>``) and deleted only by
`JobDirectory.finalize`, once the new results exist; `JobDirectory.abandon`
puts it back when the new run wrote nothing.  A ``.running`` marker (pid,
host, start time) sits in the directory while a job runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from dm21cli.core.errors import OutputExistsError, OutputLocationError, reraise_os_error
from dm21cli.io.outputs.atomic import _fsync_dir, _new_temp_path
from dm21cli.io.outputs.qcschema import fields

#: name of the marker file present while a job runs in a directory.
MARKER_NAME = ".running"


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


class JobDirectory:
    """The output directory of one job.

    Usage (the runner)::

        jobdir = JobDirectory(Path("water.dm21"), overwrite=args.overwrite)
        jobdir.prepare()            # may raise OutputExistsError
        try:
            ... compute; write_json_atomic(jobdir.file("result.json"), result) ...
        except BaseException:
            if not jobdir.abandon():    # nothing written -> directory removed
                jobdir.finalize("failed")  # or leave .running to mark it unfinished
            raise
        jobdir.finalize("success")

    Overwrite semantics: with ``overwrite=True`` an existing non-empty
    directory is *renamed* to a hidden sibling ``.<name>.old-<random>`` by
    `prepare`, and deleted only by `finalize`.  If the run is killed in
    between, the old results are still on disk under that hidden name.
    `abandon` renames it back when the new run wrote nothing.
    """

    def __init__(self, path: Path, overwrite: bool = False):
        self._path = Path(path)
        self.overwrite = bool(overwrite)
        self.status: str | None = None
        #: where the previous contents were moved by an overwrite (until finalize)
        self.old_path: Path | None = None
        self._created = False
        self._prepared = False

    # -- properties ---------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def marker(self) -> Path:
        return self._path / MARKER_NAME

    def file(self, name: str) -> Path:
        """The path of output file `name` (a plain relative name) in the directory."""
        rel = Path(name)
        if rel.is_absolute() or not rel.parts or any(p in ("..", "") for p in rel.parts):
            raise ValueError(f"output file name must be relative and inside the directory: {name!r}")
        return self._path / rel

    # -- describing what is already there -----------------------------------
    def _describe_existing(self) -> str:
        """What the directory already holds, e.g. 'results (from <date>)'."""
        result = _read_json(self._path / "result.json")
        if result is not None:
            date = (fields(result).get("provenance") or {}).get("date")
            return f"results (from {date or 'an unknown date'})"
        marker = _read_json(self.marker)
        if marker is not None:
            return f"an unfinished run (started {marker.get('start_time') or 'at an unknown time'})"
        if (self._path / "result.json").exists():
            return "results (with an unreadable result.json)"
        return "files (no result.json)"

    def _check_not_in_use(self) -> None:
        marker = _read_json(self.marker)
        if not marker:
            return
        pid, host = marker.get("pid"), marker.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() \
                and _pid_alive(pid):
            raise OutputExistsError(
                f"output directory {self._path} is in use by a running job (pid {pid} on "
                f"{host}); wait for it, or remove {self.marker} if that process is not dm21")

    # -- lifecycle ----------------------------------------------------------
    def prepare(self) -> "JobDirectory":
        """Create the directory (and parents) and the ``.running`` marker.

        Raises OutputExistsError if the directory holds files and overwrite
        is off, or if another live process on this host is running in it.
        """
        if self._prepared:
            return self
        try:
            return self._prepare()
        except OSError as exc:  # read-only file system, no permission, disk full
            reraise_os_error(exc, self._path, "creating")

    def _prepare(self) -> "JobDirectory":
        p = self._path
        for ancestor in p.parents:
            if ancestor.exists():
                if not ancestor.is_dir():
                    raise OutputLocationError(f"creating {p} failed: {ancestor} is a file, not a "
                                              f"directory; choose another output directory with -o")
                break
        if p.exists() and not p.is_dir():
            raise OutputExistsError(
                f"output path {p} exists and is not a directory; use -o to choose another")
        if p.is_dir() and any(p.iterdir()):
            self._check_not_in_use()
            if not self.overwrite:
                raise OutputExistsError(
                    f"output directory {p} already holds {self._describe_existing()}; "
                    f"use --overwrite to replace it or -o to choose another")
            self.old_path = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
            # mkdtemp reserved a unique name; rename p onto it (an empty dir may be replaced).
            os.replace(p, self.old_path)
            _fsync_dir(p.parent)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                p.mkdir()
                self._created = True
            except FileExistsError:
                if not p.is_dir():
                    raise OutputExistsError(
                        f"output path {p} exists and is not a directory; use -o to choose another"
                    ) from None
            self._write_marker()
        except BaseException:
            # nothing of the new run exists yet: put the old results back
            if self.old_path is not None:
                if self._created:
                    with contextlib.suppress(OSError):
                        p.rmdir()
                with contextlib.suppress(OSError):
                    os.replace(self.old_path, p)
                    self.old_path = None
            raise
        self._prepared = True
        return self

    def _write_marker(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _now_iso(),
                "argv": list(sys.argv)}
        text = json.dumps(info, indent=2) + "\n"
        tmp = _new_temp_path(self.marker)
        try:
            tmp.write_text(text, encoding="utf-8")
            try:
                os.link(tmp, self.marker)  # atomic and exclusive: fails if it exists
            except FileExistsError:
                raise OutputExistsError(
                    f"output directory {self._path} was taken by another job while "
                    f"starting; use -o to choose another") from None
            except OSError:  # file system without hard links
                fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

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
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        _fsync_dir(self._path)
        kept = None
        if self.old_path is not None:
            if keep_old:
                kept = self._path.with_name(f"{self._path.name}.previous")
                n = 1
                while kept.exists():
                    n += 1
                    kept = self._path.with_name(f"{self._path.name}.previous-{n}")
                os.replace(self.old_path, kept)
                _fsync_dir(self._path.parent)
            else:
                shutil.rmtree(self.old_path, ignore_errors=True)
            self.old_path = None
        return kept

    def abandon(self) -> bool:
        """Undo `prepare` if the job wrote nothing but the marker.

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
            others = [c for c in p.iterdir() if c.name != MARKER_NAME
                      and not (c.name.startswith(".") and c.name.endswith(".tmp"))]
        except FileNotFoundError:
            others = []
        if others:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        for c in p.glob(".*.tmp") if p.exists() else []:  # stray temp files only
            with contextlib.suppress(OSError):
                c.unlink()
        if self._created or self.old_path is not None:
            with contextlib.suppress(FileNotFoundError):
                p.rmdir()
        if self.old_path is not None:
            os.replace(self.old_path, p)
            _fsync_dir(p.parent)
            self.old_path = None
        self._prepared = False
        self.status = "abandoned"
        return True
