"""What an optimisation continues from (``dm21 opt --restart``): the output folder's
result.json, or, after SIGKILL or a full disk, its trajectory.xyz; and the command that
continues it.  `dm21cli.jobs.opt.run_opt` calls `previous_optimisation`; ``dm21 opt --freq
--restart`` asks `converged_optimisation` whether only the frequencies are left.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np

from dm21cli.core.errors import InputError, OutputExistsError
from dm21cli.core.units import ANGSTROM_BOHR
from dm21cli.io.outputs.qcschema import fields
from dm21cli.jobs.run import FILES

#: files of an optimisation besides those of a single point
OPT_FILES = {"trajectory": "trajectory.xyz", "final": "final.xyz"}


def restart_command(spec, file: str | None = None, options: list[str] | None = None) -> str:
    """``dm21 opt FILE [OPTIONS] --restart -o DIR``: the command that continues the optimisation
    of `spec` in its output directory.  file: the input as the user named it (default: the
    spec's source file); options: the command-line options that shaped the spec."""
    name = file or (str(spec.source_path) if spec.source_path is not None else "FILE")
    words = ["dm21", "opt", name, *(options or []), "--restart", "-o", str(spec.output_path())]
    return shlex.join(words)


def _restart_key(resolved: dict) -> dict:
    """What must not change for a restart: the resolved input without names, folders,
    resources, output files, the geometry, the starting guess and the limits on cycles,
    attempts and iterations (none of which changes a converged result), and the ``freq``
    section (the frequencies after it check their own inputs)."""
    key = {k: v for k, v in resolved.items() if k not in ("job", "resources", "outputs", "freq")}
    key["molecule"] = {k: v for k, v in (key.get("molecule") or {}).items() if k != "xyz"}
    key["scf"] = {k: v for k, v in (key.get("scf") or {}).items()
                  if k not in ("guess", "max_cycle", "max_attempts")}
    key["opt"] = {k: v for k, v in (key.get("opt") or {}).items()
                  if k not in ("maxiter", "hessian_every")}
    return json.loads(json.dumps(key))


def previous_optimisation(spec) -> dict:
    """The optimisation to continue in the output directory of `spec` (``--restart``).

    From result.json when there is one (the history of every step, the initial geometry),
    else, after SIGKILL or a full disk, from the last complete frame of trajectory.xyz
    (`read_trajectory`) of a folder whose input.resolved.yaml is this input's.  Returns
    {"path", "history", "geometry_bohr" (None: no step finished), "initial_geometry_bohr",
    "chkfile" (None: none usable), "source"}.  InputError (exit 2) when there is nothing
    to continue (no directory, an empty one); OutputExistsError (exit 5) for a directory
    holding a converged optimisation, another input's, or no optimisation.
    """
    path = spec.output_path()
    if not path.is_dir() or not any(p for p in path.iterdir() if not p.name.startswith(".")):
        what = "is empty" if path.is_dir() else "does not exist"
        raise InputError(f"{path} {what}: there is no optimisation to continue; start one "
                         f"without --restart", field="--restart")
    try:
        result = fields(json.loads((path / FILES["result"]).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        result = None
    if isinstance(result, dict):
        previous = _from_result(spec, path, result)
    else:
        previous = _from_trajectory(spec, path)
    history = previous["history"]
    previous["geometry_bohr"] = np.array(history[-1]["geometry_bohr"]) if history else None
    chk = path / FILES["chkfile"]
    previous["chkfile"] = chk if _readable_chkfile(chk) else None
    return previous


def _no_optimisation(path: Path) -> OutputExistsError:
    return OutputExistsError(f"output directory {path} holds no geometry optimisation to "
                             f"restart; use --overwrite to replace it or -o to choose another")


def _check_same_input(path: Path, resolved: dict, symbols, spec) -> None:
    """OutputExistsError unless `resolved` (the folder's resolved input) and `symbols` (its
    atoms) are those of `spec`, up to what a restart may change (`_restart_key`)."""
    if symbols != spec.molecule.symbols or \
            _restart_key(resolved) != _restart_key(spec.to_resolved_dict()):
        raise OutputExistsError(f"output directory {path} holds an optimisation of another input "
                                f"(molecule, basis, functional, SCF or opt settings differ); use "
                                f"--overwrite to replace it or -o to choose another")


def converged_optimisation(spec) -> dict | None:
    """result.json of the converged optimisation of `spec` in its output folder, or None
    (no folder, no result.json, not an optimisation, not converged: `previous_optimisation`
    says which); OutputExistsError if it is another input's.  ``dm21 opt --freq --restart``
    (and ``--ts``) continues its frequencies."""
    path = spec.output_path()
    try:
        document = json.loads((path / FILES["result"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    result = fields(document) if isinstance(document, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("optimization"), dict) \
            or result.get("status") != "success":
        return None
    _check_same_input(path, result.get("input") or {},
                      (result.get("molecule") or {}).get("symbols"), spec)
    return document


def _from_result(spec, path: Path, result: dict) -> dict:
    opt = result.get("optimization")
    if not isinstance(opt, dict):
        raise _no_optimisation(path)
    _check_same_input(path, result.get("input") or {}, (result.get("molecule") or {}).get("symbols"),
                      spec)
    if result.get("status") == "success":
        raise OutputExistsError(f"output directory {path} holds a converged optimisation: nothing "
                                f"to restart; use --overwrite to start again or -o for another "
                                f"directory")
    history = [h for h in opt.get("history") or [] if h.get("geometry_bohr") is not None]
    initial = opt.get("initial_geometry_bohr") or (history[0]["geometry_bohr"] if history else None)
    return {"path": path, "history": history, "initial_geometry_bohr": initial,
            "source": FILES["result"]}


def _from_trajectory(spec, path: Path) -> dict:
    """The steps of an optimisation that left no result.json (SIGKILL, a full disk)."""
    import yaml

    try:
        resolved = yaml.safe_load((path / FILES["input"]).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        resolved = None
    if not isinstance(resolved, dict) or (resolved.get("job") or {}).get("task") != "opt":
        raise _no_optimisation(path)
    xyz = str((resolved.get("molecule") or {}).get("xyz") or "")
    _check_same_input(path, resolved, [line.split()[0] for line in xyz.splitlines() if line.split()],
                      spec)
    history = read_trajectory(path / OPT_FILES["trajectory"], spec.molecule.symbols)
    initial = history[0]["geometry_bohr"] if history and history[0]["step"] == 1 else None
    return {"path": path, "history": history, "initial_geometry_bohr": initial,
            "source": OPT_FILES["trajectory"]}


def _readable_chkfile(path: Path) -> bool:
    """Whether `path` is a PySCF chkfile with orbitals (a restart's starting density)."""
    if not path.is_file():
        return False
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return all(isinstance(h5.get(f"scf/{k}"), h5py.Dataset) for k in ("mo_coeff", "mo_occ"))
    except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, ... for broken files
        return False


#: trajectory.xyz's comment line: step, energy (Ha), largest gradient component (Ha/bohr), run
_FRAME_COMMENT = re.compile(r"step (\d+)\s+E = (\S+) Ha\s+max \|dE/dR\| = (\S+) Ha/bohr"
                            r"(?:\s+run (\d+))?")


def read_trajectory(path: Path, symbols: list[str]) -> list[dict]:
    """The complete frames of a trajectory.xyz as history entries (geometry in bohr).

    A frame is complete when it parses in full: the atom count and the symbols are those
    of `symbols`, every coordinate is a finite number, and its comment line names the step,
    its energy and its largest gradient component.  Reading stops at the first frame that
    is not (a truncated last frame is dropped).  A missing file has no frames.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return []
    natm = len(symbols)
    history: list[dict] = []
    k = 0
    while k + 2 + natm <= len(lines):
        match = _FRAME_COMMENT.match(lines[k + 1].strip())
        if lines[k].strip() != str(natm) or match is None:
            break
        rows = [line.split() for line in lines[k + 2:k + 2 + natm]]
        if any(len(row) != 4 for row in rows) or [row[0] for row in rows] != list(symbols):
            break
        try:
            coords = np.array([[float(x) for x in row[1:]] for row in rows])
            energy, gmax = float(match.group(2)), float(match.group(3))
        except ValueError:
            break
        if not (np.isfinite(coords).all() and math.isfinite(energy) and math.isfinite(gmax)):
            break
        history.append({"step": int(match.group(1)), "run": int(match.group(4) or 1),
                        "energy_hartree": energy, "gradient_max_hartree_per_bohr": gmax,
                        "scf_converged": True, "geometry_bohr": (coords * ANGSTROM_BOHR).tolist(),
                        "recovered_from": OPT_FILES["trajectory"]})
        k += 2 + natm
    return history
