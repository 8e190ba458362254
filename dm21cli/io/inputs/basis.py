"""Names PySCF must know: functionals (libxc), basis sets and their effective core potentials.

PySCF is imported inside the functions, so reading a job file stays cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import warnings
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from dm21cli.core import elements
from dm21cli.core.errors import InputError
from dm21cli.io.inputs.fields import DM21_BY_LOWER, DM21_FUNCTIONALS, show_value

if TYPE_CHECKING:  # annotations only: the model imports nothing from here
    from dm21cli.io.inputs.models import JobSpec, SpecMeta

#: said wherever a DM21 job uses an effective core potential.
ECP_DM21_NOTE = ("DM21 was trained on all-electron calculations: DM21 energies with "
                 "ECPs are outside its training")


@contextlib.contextmanager
def _quiet():
    """Silence PySCF's prints and warnings while probing names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


@functools.lru_cache(maxsize=256)
def xc_problem(name: str) -> str | None:
    """None if PySCF/libxc understands `name`, else a message."""
    from pyscf.dft import libxc

    try:
        with _quiet():
            libxc.parse_xc(name)
        return None
    except Exception:  # noqa: BLE001 - PySCF raises KeyError, ValueError, ... for bad names
        pass
    known = [n.lower() for n in (*libxc.XC_ALIAS, *libxc.XC_CODES)] + [f.lower() for f in DM21_FUNCTIONALS]
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
    hint = f" (did you mean {DM21_BY_LOWER.get(close[0], close[0])!r}?)" if close else ""
    return f"unknown functional {show_value(name)}{hint}; use DM21, DM21m, DM21mc, DM21mu or a PySCF/libxc name"


@functools.lru_cache(maxsize=1024)
def basis_problem(name: str, symbol: str) -> str | None:
    """None if basis `name` has functions for `symbol`, else a message."""
    from pyscf import gto

    try:
        with _quiet():
            shells = gto.basis.load(name, symbol)
    except Exception as exc:  # noqa: BLE001 - BasisNotFoundError, parse errors of files, ...
        text = str(exc)
        if "not found for" in text:
            return f"basis {show_value(name)} has no functions for {symbol}"
        hint = ""
        try:
            from pyscf.gto.basis import ALIAS, _format_basis_name

            close = difflib.get_close_matches(_format_basis_name(name), list(ALIAS), n=1, cutoff=0.8)
            if close:
                hint = f" (did you mean {close[0]!r}?)"
        except Exception:  # noqa: BLE001 - suggestions are best effort
            pass
        return f"unknown basis set {show_value(name)}{hint}"
    if not shells:
        return f"basis {show_value(name)} has no functions for {symbol}"
    return None


def basis_key_path(meta: SpecMeta, key: str) -> tuple:
    """The key path (``("basis", "O")``) of the basis entry for element or ``default`` `key`, as written."""
    for path in meta.lines:
        if len(path) == 2 and path[0] == "basis" and isinstance(path[1], str):
            raw = path[1].strip()
            norm = "default" if raw.lower() == "default" else (elements.normalise_symbol(raw) or raw)
            if norm == key:
                return path
    return ("basis", key)


def basis_location(spec: JobSpec, symbol: str) -> dict:
    """file / line / field of the basis entry that covers `symbol`."""
    meta: SpecMeta = spec._meta
    if isinstance(spec.basis, dict):
        key = symbol if symbol in spec.basis else "default"
        return meta.locate(basis_key_path(meta, key))
    return meta.locate(("basis",))


class EcpEntry(NamedTuple):
    """The effective core potential of one element: its basis name and the electrons it replaces."""

    basis: str
    core_electrons: int


@functools.lru_cache(maxsize=1024)
def _ecp_lookup(name: str, symbol: str) -> tuple[int | None, str | None]:
    """(core electrons, or None for an all-electron element; a problem message or None).

    PySCF's ``gto.basis.load_ecp`` returns [] for an element without an ECP
    in its own library, ``[ncore, ...]`` with one, and falls back to the
    basis-set-exchange package for names it does not know (which raises
    BasisNotFoundError 'No ECP defined for ...' for an all-electron element).
    Anything else means we cannot tell, and the job is refused.
    """
    from pyscf.gto import basis as pyscf_basis
    from pyscf.lib.exceptions import BasisNotFoundError

    cannot = f"cannot tell whether basis {show_value(name)} has an effective core potential for {symbol}"
    try:
        with _quiet():
            data = pyscf_basis.load_ecp(name, symbol)
    except BasisNotFoundError as exc:
        if str(exc).startswith("No ECP defined for"):
            return None, None
        return None, f"{cannot} ({str(exc).splitlines()[0][:80] if str(exc) else 'not found'})"
    except Exception as exc:  # noqa: BLE001 - parse errors of files, missing packages, ...
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        return None, f"{cannot} ({reason})"
    if data is None or (isinstance(data, (list, tuple)) and len(data) == 0):
        return None, None
    try:
        ncore = int(data[0])
        ok = isinstance(data[0], (int, np.integer)) and 0 <= ncore <= elements.atomic_number(symbol)
    except (TypeError, ValueError, IndexError):
        ok = False
    if not ok:
        return None, f"{cannot} (PySCF gives no core-electron count)"
    return ncore, None


def ecp_map(spec: JobSpec) -> dict[str, EcpEntry]:
    """The effective core potentials of a job: {element: EcpEntry}, for each element present
    whose basis has an ECP (any name PySCF knows, or basis-set-exchange when installed).

    The one rule for every Mole a job builds (`dm21cli.jobs.build.build_molecule`,
    the orbital counts of validation) and for what result.json records.  Raises
    `InputError` at the basis entry when PySCF cannot tell.
    """
    found: dict[str, EcpEntry] = {}
    for symbol in dict.fromkeys(spec.molecule.symbols):
        name = spec.basis_for(symbol)
        if name is None:
            continue  # validate_job reports the missing basis
        ncore, problem = _ecp_lookup(name, symbol)
        if problem:
            raise InputError(problem, **basis_location(spec, symbol))
        if ncore is not None:
            found[symbol] = EcpEntry(name, ncore)
    return found


def ecp_summary(ecp: dict[str, EcpEntry]) -> str:
    """``Na lanl2dz (10 core electrons), Cl lanl2dz (10 core electrons)``."""
    return ", ".join(f"{symbol} {entry.basis} ({entry.core_electrons} core electron"
                     f"{'' if entry.core_electrons == 1 else 's'})" for symbol, entry in ecp.items())


def pyscf_ecp(spec: JobSpec) -> dict[str, str]:
    """``ecp=`` for ``gto.M``: {element: basis name} for the elements whose basis has an
    effective core potential (`ecp_map`, the one rule); empty for all-electron jobs."""
    return {symbol: entry.basis for symbol, entry in ecp_map(spec).items()}


def count_orbitals(spec: JobSpec) -> int:
    """Number of orbitals (spherical AOs) the basis gives the molecule, with its ECPs attached.

    The Mole is built neutral with the spin PySCF derives, so that an absurd
    charge never reaches PySCF; the electrons are checked against this count.
    """
    from pyscf import gto

    mol = spec.molecule
    try:
        with _quiet():
            pmol = gto.M(atom=mol.pyscf_atom(), unit="Bohr", basis=spec.pyscf_basis(),
                         ecp=pyscf_ecp(spec) or None, charge=0, spin=None, verbose=0)
        return int(pmol.nao_nr())
    except Exception as exc:  # noqa: BLE001 - report rather than crash
        raise InputError(f"PySCF cannot build this molecule: {exc}",
                         **spec._meta.locate(("molecule",))) from None
