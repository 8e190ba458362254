"""Writing a job's output directory: atomically, never over results silently.

Rules kept here:

* Every file is written atomically: into a hidden temporary file in the same
  directory, flushed and fsync'ed, then renamed over the final name with
  ``os.replace``.  A reader (or a crashed run) sees either the old file, the
  complete new file, or no file -- never a half-written one under the final
  name.  Temporary files are named ``.<name>.<random>.tmp``.
* `JobDirectory` refuses an output directory that already holds files unless
  ``overwrite=True``.  With overwrite the old directory is first moved aside to
  a hidden sibling (``.<name>.old-<random>``) and deleted only by
  `JobDirectory.finalize`, once the new results exist; `JobDirectory.abandon`
  puts it back when the new run wrote nothing.
* A ``.running`` marker (pid, host, start time) sits in the directory while a
  job runs; `JobDirectory.finalize` removes it.  A directory that still holds
  ``.running`` is from a run that did not finish.

Everything here takes atomic units (bohr, hartree); Angstrom, eV and Debye
appear only in the human-readable renderings.  PySCF, numpy, yaml and rich are
imported inside the functions that need them so that importing this module
stays cheap.  Library code: no printing, no ``sys.exit``.
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
from typing import IO, Any, Iterator

from dm21cli.errors import OutputExistsError, OutputLocationError, reraise_os_error
from dm21cli.units import AU_DEBYE, BOHR_ANGSTROM, HARTREE_EV

__all__ = [
    "MARKER_NAME",
    "CUBE_KINDS",
    "atomic_path",
    "atomic_write",
    "write_text_atomic",
    "write_json_atomic",
    "write_yaml_atomic",
    "write_bytes_atomic",
    "write_text_files_atomic",
    "chkfile_bytes",
    "to_builtin",
    "JobDirectory",
    "write_cube",
    "write_molden",
    "render_summary",
    "render_table",
]

#: name of the marker file present while a job runs in a directory.
MARKER_NAME = ".running"
#: what `write_cube` can write.
CUBE_KINDS = ("density", "spin_density", "orbital")
#: default first line of a cube file, per kind (the caller may give a better one).
_CUBE_DEFAULT_COMMENT = {
    "density": "total electron density, e/bohr^3",
    "spin_density": "spin density (alpha - beta), e/bohr^3",
    "orbital": "orbital amplitude, bohr^-3/2",
}
#: grid points evaluated per block in `write_cube` (as pyscf.tools.cubegen).
_CUBE_BLOCK_POINTS = 8000


# ----------------------------------------------------------------------------
# atomic writes
# ----------------------------------------------------------------------------
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


def chkfile_bytes(mol, e_tot: float, mo_energy, mo_coeff, mo_occ) -> bytes:
    """A PySCF chkfile (HDF5) of an SCF state, built in memory.

    The layout is `pyscf.scf.chkfile.dump_scf`'s ('mol', 'scf/e_tot',
    'scf/mo_energy', 'scf/mo_occ', 'scf/mo_coeff'), so ``scf.chkfile.load_scf``
    and ``mf.from_chk`` read it.  Building it in memory keeps HDF5 away from
    the output disk: written with `write_bytes_atomic`, a full disk is an
    ordinary error instead of a half-written file (or a crash inside HDF5).
    """
    import io

    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["mol"] = mol.dumps()
        scf = f.create_group("scf")
        scf["e_tot"] = float(e_tot)
        scf["mo_energy"] = np.asarray(mo_energy)
        scf["mo_occ"] = np.asarray(mo_occ)
        scf["mo_coeff"] = np.asarray(mo_coeff)
    return buf.getvalue()


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


# ----------------------------------------------------------------------------
# the output directory of one job
# ----------------------------------------------------------------------------
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
            date = (result.get("provenance") or {}).get("date")
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


# ----------------------------------------------------------------------------
# cube and molden files
# ----------------------------------------------------------------------------
def cube_grid_shape(atom_coords_bohr, spacing_bohr: float, margin_bohr: float):
    """Points along x, y, z of a cube file's grid (floats; inf if absurdly many).

    The box is the atoms' bounding box plus `margin_bohr` on each side; the
    points include both box ends and are at most `spacing_bohr` apart.  One
    rule for `write_cube` and for the size check of the input validation.
    """
    import numpy as np

    coords = np.asarray(atom_coords_bohr, dtype=float).reshape(-1, 3)
    extent = coords.max(axis=0) - coords.min(axis=0) + 2 * float(margin_bohr)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(2.0, np.ceil(extent / float(spacing_bohr) - 1e-9) + 1)


def write_cube(path: Path, mol, kind: str, *, dm=None, coeff=None,
               spacing_bohr: float, margin_bohr: float, comment: str = "") -> Path:
    """Write a Gaussian cube file of a density or an orbital; return the path.

    kind: ``"density"`` (`dm` = total density matrix), ``"spin_density"``
    (`dm` = dm_alpha - dm_beta) or ``"orbital"`` (`coeff` = one MO coefficient
    vector, AO basis).  The box is the atoms' bounding box plus `margin_bohr`
    on each side; points are at most `spacing_bohr` apart (the grid includes
    both box ends, so the actual spacing is box length / (points - 1), slightly
    below the requested one).  PySCF's `Cube` works in bohr.  Values are in e/bohr^3 (densities) or
    bohr^-3/2 (orbitals), coordinates in bohr, as the cube format wants.
    `comment` becomes the first line of the file.
    """
    import numpy as np
    from pyscf import lib
    from pyscf.dft import numint
    from pyscf.tools.cubegen import Cube

    if kind not in CUBE_KINDS:
        raise ValueError(f"cube kind must be one of {', '.join(CUBE_KINDS)}, not {kind!r}")
    if not spacing_bohr > 0 or not margin_bohr >= 0:
        raise ValueError("cube spacing must be > 0 and margin >= 0 (bohr)")
    if kind == "orbital":
        if coeff is None:
            raise ValueError("an orbital cube needs coeff (one MO coefficient vector)")
        coeff = np.asarray(coeff, dtype=float)
        if coeff.shape != (mol.nao_nr(),):
            raise ValueError(f"orbital coefficients must have shape ({mol.nao_nr()},), "
                             f"not {coeff.shape}")
    else:
        if dm is None:
            raise ValueError(f"a {kind} cube needs dm (a density matrix)")
        dm = np.asarray(dm, dtype=float)
        if dm.shape != (mol.nao_nr(), mol.nao_nr()):
            raise ValueError(f"density matrix must have shape ({mol.nao_nr()}, {mol.nao_nr()}), "
                             f"not {dm.shape} (pass alpha+beta or alpha-beta)")

    # PySCF's Cube(resolution=h) uses ceil(L/h) points including both box ends,
    # i.e. a spacing L/(ceil(L/h)-1) that can exceed h.  Choose the point counts
    # ourselves so that the spacing never exceeds the requested one.
    npts = [int(n) for n in cube_grid_shape(mol.atom_coords(), spacing_bohr, margin_bohr)]
    cube = Cube(mol, *npts, resolution=None, margin=float(margin_bohr))
    coords = cube.get_coords()
    ngrids = cube.get_ngrids()
    field = np.empty(ngrids)
    for p0, p1 in lib.prange(0, ngrids, _CUBE_BLOCK_POINTS):
        ao = mol.eval_gto("GTOval", coords[p0:p1])
        if kind == "orbital":
            field[p0:p1] = ao @ coeff
        else:
            field[p0:p1] = numint.eval_rho(mol, ao, dm, hermi=1)
    field = field.reshape(cube.nx, cube.ny, cube.nz)

    text = " ".join((comment or _CUBE_DEFAULT_COMMENT[kind]).split())  # one line
    path = Path(path)
    with atomic_path(path) as tmp:
        cube.write(field, str(tmp), comment=text)
    return path


def orbital_label(index: int, mo_occ, spin: str | None = None) -> str:
    """'HOMO', 'HOMO-1', 'LUMO+2', ... for 0-based orbital `index` of one spin set."""
    occupied = [i for i, o in enumerate(mo_occ) if o > 1e-8]
    homo = occupied[-1] if occupied else -1
    if index <= homo:
        label = "HOMO" if index == homo else f"HOMO-{homo - index}"
    else:
        label = "LUMO" if index == homo + 1 else f"LUMO+{index - homo - 1}"
    return f"{label}, {spin}" if spin else label


def write_molden(path: Path, mol, mo_energy, mo_coeff, mo_occ, spin: str | None = None) -> Path:
    """Write orbitals in Molden format (readable by ``pyscf.tools.molden.load``).

    Restricted: `mo_coeff` is (nao, nmo).  Unrestricted: arrays with a leading
    spin axis of 2 (as PySCF's UKS); both sets are written in one ``[MO]``
    section labelled ``Spin= Alpha`` / ``Spin= Beta``, exactly as
    ``molden.dump_scf`` does, and ``molden.load`` returns them as pairs.
    spin: None (infer from the array shape) or ``"Alpha"`` for a single
    restricted-shaped set.  A lone ``"Beta"`` set is refused: ``molden.load``
    cannot read a file whose only orbitals are labelled Beta.
    """
    import numpy as np
    from pyscf.tools import molden

    mo_coeff = np.asarray(mo_coeff, dtype=float)
    mo_energy = np.asarray(mo_energy, dtype=float)
    mo_occ = np.asarray(mo_occ, dtype=float)
    if mo_coeff.ndim == 3:
        if mo_coeff.shape[0] != 2 or mo_energy.shape[0] != 2 or mo_occ.shape[0] != 2:
            raise ValueError("unrestricted orbitals need a leading spin axis of length 2")
        if spin not in (None, "both"):
            raise ValueError("spin must be None for unrestricted (2, nao, nmo) orbitals")
        sets = [("Alpha", 0), ("Beta", 1)]
    elif mo_coeff.ndim == 2:
        if spin not in (None, "Alpha"):
            raise ValueError(f"spin must be None or 'Alpha' for one set of orbitals, not {spin!r} "
                             "(pyscf.tools.molden.load cannot read a lone Beta set)")
        sets = [("Alpha", None)]
    else:
        raise ValueError(f"mo_coeff must be 2- or 3-dimensional, not shape {mo_coeff.shape}")

    path = Path(path)
    with atomic_write(path, "w") as f:
        molden.header(mol, f)
        # orbital_coeff writes the "[MO]" line for Alpha only: one [MO] section
        # with Spin= labels, which molden.load splits back into (alpha, beta).
        for label, s in sets:
            c = mo_coeff if s is None else mo_coeff[s]
            e = mo_energy if s is None else mo_energy[s]
            o = mo_occ if s is None else mo_occ[s]
            molden.orbital_coeff(mol, f, c, spin=label, ene=e, occ=o)
    return path


# ----------------------------------------------------------------------------
# human-readable renderings
# ----------------------------------------------------------------------------
def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return default
        d = d.get(k)
        if d is None:
            return default
    return d


def _num(x: Any) -> float | None:
    try:
        if x is None or isinstance(x, bool):
            return None
        return float(x)
    except (TypeError, ValueError):
        return None


def _scale(x: Any, factor: float) -> float | None:
    v = _num(x)
    return None if v is None else v * factor


def _fmt(x: Any, spec: str, missing: str = "n/a") -> str:
    v = _num(x)
    return missing if v is None else format(v, spec)


def formula(symbols: list[str]) -> str:
    """Hill formula (C, H first if C present, then alphabetical): ['O','H','H'] -> 'H2O'."""
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    order = sorted(counts)
    if "C" in counts:
        order = ["C"] + (["H"] if "H" in counts else []) + [s for s in order if s not in ("C", "H")]
    return "".join(s + (str(counts[s]) if counts[s] > 1 else "") for s in order)


def _frontier_by_spin(props: dict) -> list[tuple[str, float | None, float | None]]:
    """[(spin, homo, lumo)] per spin from mo_energies/occupations (UKS only)."""
    energies, occs = props.get("mo_energies_hartree"), props.get("mo_occupations")
    if not (isinstance(energies, list) and isinstance(occs, list) and energies
            and isinstance(energies[0], list) and len(energies) == 2 and len(occs) == 2):
        return []
    rows = []
    for label, e, o in zip(("alpha", "beta"), energies, occs):
        occ_e = [float(ei) for ei, oi in zip(e, o) if oi is not None and oi > 1e-8]
        vir_e = [float(ei) for ei, oi in zip(e, o) if oi is not None and oi <= 1e-8]
        rows.append((label, max(occ_e) if occ_e else None, min(vir_e) if vir_e else None))
    return rows


def _yes_no(flag: Any) -> str:
    if flag is None:
        return "unknown"
    return "yes" if flag else "NO"


def _ecp_text(ecp: dict) -> str:
    """``Na lanl2dz (10 core electrons), Cl lanl2dz (10 core electrons)`` from ``model.ecp``."""
    return ", ".join(f"{symbol} {(entry or {}).get('basis', '?')} "
                     f"({(entry or {}).get('core_electrons', '?')} core electrons)"
                     for symbol, entry in ecp.items())


def render_summary(result: dict) -> str:
    """The text of ``summary.txt`` for a result dict (missing keys are tolerated)."""
    result = result or {}
    props = result.get("properties") or {}
    mol = result.get("molecule") or {}
    model = result.get("model") or {}
    lines: list[str] = []
    add = lines.append

    def row(label: str, value: str) -> None:
        add(f"  {label:<28} {value}")

    add("DM21 calculation summary")
    add("=" * 24)
    symbols = mol.get("symbols") or []
    success = result.get("success")
    converged = result.get("converged")
    row("Status", "SUCCESS" if success else ("FAILED" if success is not None else "unknown"))
    conv_text = _yes_no(converged)
    if converged is False:
        conv_text = "NO -- NOT CONVERGED (energies are from the last SCF iteration)"
    row("Converged", conv_text)
    method = model.get("method") or "?"
    basis = model.get("basis") or "?"
    row("Method / basis", f"{method} / {basis}")
    if model.get("ecp"):
        row("ECP", _ecp_text(model["ecp"]))
        if model.get("ecp_note"):
            row("Note", str(model["ecp_note"]))
    if result.get("driver"):
        row("Driver", str(result["driver"]))
    if symbols:
        charge = mol.get("molecular_charge")
        mult = mol.get("molecular_multiplicity")
        row("Molecule", f"{formula(symbols)} ({len(symbols)} atoms, charge "
                        f"{charge if charge is not None else '?'}, multiplicity "
                        f"{mult if mult is not None else '?'})")
    restricted = props.get("restricted")
    if restricted is not None:
        row("Reference", "restricted (RKS)" if restricted else "unrestricted (UKS)")
    if props.get("nao") is not None:
        row("Basis functions", str(props["nao"]))
    if props.get("grid_points") is not None:
        row("Grid points", str(props["grid_points"]))

    error = result.get("error")
    if error:
        add("")
        add("Error")
        row("Type", str(error.get("error_type") or "?"))
        row("Message", str(error.get("error_message") or ""))

    # --- energies
    energy = result.get("return_energy", props.get("return_energy"))
    add("")
    add(f"Energies{'':<23}{'hartree':>18}{'eV':>18}")
    e_tot = _num(energy)
    row("Total energy", f"{e_tot:18.10f}{e_tot * HARTREE_EV:18.6f}" if e_tot is not None
        else f"{'n/a':>18}")
    components = [
        ("SCF total energy", "scf_total_energy"),
        ("Nuclear repulsion", "nuclear_repulsion_energy"),
        ("One-electron", "scf_one_electron_energy"),
        ("Coulomb", "scf_coulomb_energy"),
        ("Exchange-correlation", "scf_xc_energy"),
        ("Dispersion", "dispersion_energy"),
    ]
    for label, key in components:
        v = _num(props.get(key))
        if v is not None:
            row(label, f"{v:18.10f}")

    # --- SCF
    attempts = props.get("scf_attempts") or []
    if props.get("scf_iterations") is not None or attempts:
        add("")
        add("SCF")
        if props.get("scf_iterations") is not None:
            row("Iterations", str(props["scf_iterations"]))
        if attempts:
            row("Attempts", str(len(attempts)))
            add(f"    {'#':>2}  {'strategy':<20} {'converged':<10} {'cycles':>6}  {'energy / hartree':>18}")
            for i, a in enumerate(attempts, 1):
                a = a or {}
                add(f"    {i:>2}  {str(a.get('strategy') or '?'):<20} "
                    f"{_yes_no(a.get('converged')):<10} {str(a.get('cycles', '')):>6}  "
                    f"{_fmt(a.get('energy_hartree', a.get('energy')), '18.10f'):>18}")

    # --- orbitals
    homo, lumo = _num(props.get("homo_energy_hartree")), _num(props.get("lumo_energy_hartree"))
    gap = _num(props.get("homo_lumo_gap_hartree"))
    if gap is None and homo is not None and lumo is not None:
        gap = lumo - homo
    spins = _frontier_by_spin(props)
    if any(v is not None for v in (homo, lumo, gap)) or spins:
        add("")
        add(f"Frontier orbitals{'':<14}{'hartree':>18}{'eV':>18}")
        for label, v in (("HOMO", homo), ("LUMO", lumo), ("HOMO-LUMO gap", gap)):
            if v is not None:
                row(label, f"{v:18.6f}{v * HARTREE_EV:18.4f}")
        for spin, h, lu in spins:
            if h is not None:
                row(f"HOMO ({spin})", f"{h:18.6f}{h * HARTREE_EV:18.4f}")
            if lu is not None:
                row(f"LUMO ({spin})", f"{lu:18.6f}{lu * HARTREE_EV:18.4f}")

    # --- spin
    s2 = _num(props.get("s_squared"))
    if s2 is not None:
        add("")
        add("Spin")
        row("<S^2>", f"{s2:.6f}")
        mult = mol.get("molecular_multiplicity")
        if isinstance(mult, int):
            s = (mult - 1) / 2
            row("<S^2> exact for multiplicity", f"{s * (s + 1):.6f}")
        if _num(props.get("spin_multiplicity_computed")) is not None:
            row("Multiplicity from <S^2>", f"{_num(props['spin_multiplicity_computed']):.4f}")

    # --- geometry (Angstrom) and charges
    geom = mol.get("geometry_bohr")
    charges = props.get("mulliken_charges")
    if symbols:
        add("")
        have_geom = isinstance(geom, list) and len(geom) == len(symbols)
        have_q = isinstance(charges, list) and len(charges) == len(symbols)
        if have_geom or have_q:
            head = f"    {'#':>3}  {'atom':<4}"
            if have_geom:
                head += f"{'x / Angstrom':>14}{'y / Angstrom':>14}{'z / Angstrom':>14}"
            if have_q:
                head += f"{'Mulliken charge':>17}"
            add("Atoms" + (" and Mulliken charges" if have_q else ""))
            add(head)
            for i, s in enumerate(symbols):
                line = f"    {i + 1:>3}  {s:<4}"
                if have_geom:
                    line += "".join(_fmt(_scale(c, BOHR_ANGSTROM), "14.6f") for c in geom[i])
                if have_q:
                    line += f"{_fmt(charges[i], '17.4f')}"
                add(line)
            if have_q:
                total_q = sum(_num(q) or 0.0 for q in charges)
                add(f"    {'':>3}  {'sum':<4}" + " " * (42 if have_geom else 0) + f"{total_q:17.4f}")

    # --- dipole
    dip = props.get("dipole_moment_debye")
    dip_total = _num(props.get("dipole_moment_total_debye"))
    if isinstance(dip, list) and len(dip) == 3 or dip_total is not None:
        add("")
        add("Dipole moment (Debye)")
        if isinstance(dip, list) and len(dip) == 3:
            row("x, y, z", "  ".join(_fmt(c, "10.4f") for c in dip))
            if dip_total is None and all(_num(c) is not None for c in dip):
                dip_total = sum(_num(c) ** 2 for c in dip) ** 0.5
        if dip_total is not None:
            row("total", f"{dip_total:10.4f}  ({dip_total / AU_DEBYE:.4f} a.u.)")

    # --- timings
    timings = result.get("timings_s") or {}
    if any(_num(v) is not None for v in timings.values()):
        add("")
        add("Timings (s)")
        for k, v in timings.items():
            if _num(v) is not None:
                row(k.replace("_", " "), f"{_num(v):10.2f}")

    # --- files
    files = result.get("files") or {}
    if files:
        add("")
        add("Files")
        for k, v in files.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    if v2:
                        row(f"{k}: {k2}", str(v2))
            elif v:
                row(k, str(v))

    # --- provenance
    prov = result.get("provenance") or {}
    if prov:
        add("")
        add("Provenance")
        creator = prov.get("creator")
        if creator:
            row("Program", f"{creator} {prov.get('version') or ''}".rstrip())
        for key, label in (("routine", "Routine"), ("date", "Date"), ("hostname", "Host"),
                           ("python", "Python"), ("pyscf", "PySCF"), ("numpy", "numpy"),
                           ("tensorflow", "TensorFlow"), ("threads", "Threads"),
                           ("memory_mb", "Memory (MB)"), ("compiled_kernels", "Compiled kernels")):
            if prov.get(key) is not None:
                row(label, str(prov[key]))
        ckpt = prov.get("checkpoint")
        if isinstance(ckpt, dict):
            row("Checkpoint", f"{ckpt.get('variant') or '?'} at {ckpt.get('path') or '?'}")
            for name, digest in (ckpt.get("sha256") or {}).items():
                row("  sha256", f"{digest}  {name}")
    return "\n".join(lines) + "\n"


def render_table(result: dict):
    """A `rich.table.Table` with the key numbers of a result, for the terminal."""
    from rich.table import Table
    from rich.text import Text

    result = result or {}
    props = result.get("properties") or {}
    mol = result.get("molecule") or {}
    model = result.get("model") or {}
    title = "DM21 result"
    symbols = mol.get("symbols") or []
    if symbols:
        title += f": {formula(symbols)}"
    if model.get("basis"):
        title += f" / {model['basis']}"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("unit")

    if model.get("ecp"):
        table.add_row("ECP", _ecp_text(model["ecp"]), "")
        if model.get("ecp_note"):
            table.add_row("note", Text(str(model["ecp_note"]), style="yellow"), "")
    converged = result.get("converged")
    if converged is False:
        table.add_row("converged", Text("NO", style="bold red"), "")
    else:
        table.add_row("converged", _yes_no(converged), "")
    energy = _num(result.get("return_energy", props.get("return_energy")))
    table.add_row("total energy", _fmt(energy, ".10f"), "Ha")
    if _num(props.get("dispersion_energy")):
        table.add_row("  of which dispersion", _fmt(props["dispersion_energy"], ".10f"), "Ha")
    if props.get("scf_iterations") is not None:
        attempts = props.get("scf_attempts") or []
        extra = f" ({len(attempts)} attempts)" if len(attempts) > 1 else ""
        table.add_row("SCF iterations", f"{props['scf_iterations']}{extra}", "")
    for label, key in (("HOMO", "homo_energy_hartree"), ("LUMO", "lumo_energy_hartree"),
                       ("HOMO-LUMO gap", "homo_lumo_gap_hartree")):
        v = _num(props.get(key))
        if v is not None:
            table.add_row(label, f"{v * HARTREE_EV:.4f}", "eV")
    dip = _num(props.get("dipole_moment_total_debye"))
    if dip is not None:
        table.add_row("dipole moment", f"{dip:.4f}", "D")
    s2 = _num(props.get("s_squared"))
    if s2 is not None:
        table.add_row("<S^2>", f"{s2:.4f}", "")
    total = _num(_get(result, "timings_s", "total"))
    if total is not None:
        table.add_row("wall time", f"{total:.1f}", "s")
    error = result.get("error")
    if error:
        table.add_row("error", Text(f"{error.get('error_type') or '?'}: "
                                    f"{error.get('error_message') or ''}", style="red"), "")
    return table
