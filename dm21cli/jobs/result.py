"""The result of a finished SCF: energies, properties, provenance, cube files.

Atomic units (hartree, bohr) in the result; the renderings convert.
"""

from __future__ import annotations

import datetime
import platform
import socket
import sys
import time

import numpy as np

from dm21cli import __version__
from dm21cli.io.outputs.orbitals import orbital_label, write_cube
from dm21cli.scf import aufbau


def _frontier(mo_energy, mo_occ) -> tuple[float | None, float | None]:
    """(HOMO, LUMO) energies in Hartree over all spin channels."""
    e = np.asarray(mo_energy).ravel()
    occ = np.asarray(mo_occ).ravel()
    homo = float(e[occ > 0].max()) if np.any(occ > 0) else None
    lumo = float(e[occ == 0].min()) if np.any(occ == 0) else None
    return homo, lumo


def _orbital_by_spin(mo_energy, mo_occ, restricted: bool):
    """Yield (spin label or None, index (0-based), energy, occupation arrays)."""
    if restricted:
        return [(None, np.asarray(mo_energy), np.asarray(mo_occ))]
    return [("alpha", np.asarray(mo_energy[0]), np.asarray(mo_occ[0])),
            ("beta", np.asarray(mo_energy[1]), np.asarray(mo_occ[1]))]


def properties(mf, spec, e_disp: float | None) -> dict:
    """Energy terms and one-electron properties of a finished SCF, by dm21cli's names
    (`dm21cli.io.outputs.qcschema.STANDARD_PROPERTIES` says which become QCSchema's)."""
    summary = dict(getattr(mf, "scf_summary", {}) or {})
    restricted = np.asarray(mf.mo_occ).ndim == 1
    homo, lumo = _frontier(mf.mo_energy, mf.mo_occ)
    _, charges = mf.mulliken_pop(verbose=0)
    from pyscf.data import nist

    dipole_au = np.asarray(mf.dip_moment(unit="AU", verbose=0), dtype=float)
    dipole_debye = dipole_au * nist.AU2DEBYE  # as dip_moment(unit="Debye") computes it
    from dm21cli.scf import occupations

    fixed = occupations.fixed(mf)
    fractional = occupations.is_fractional(mf.mo_occ)
    s2 = mult = None
    if not restricted and not fractional:  # (an ensemble has no single-determinant <S^2>)
        s2, mult = mf.spin_square()
    e_scf = float(mf.e_tot)
    props = {
        "return_energy": e_scf + (e_disp or 0.0),
        "scf_total_energy": e_scf,
        "nuclear_repulsion_energy": float(summary.get("nuc", mf.energy_nuc())),
        "scf_one_electron_energy": _real(summary.get("e1")),
        "scf_coulomb_energy": _real(summary.get("coul")),
        "scf_xc_energy": _real(summary.get("exc")),
        "dispersion_energy": e_disp,
        "mo_energies_hartree": np.asarray(mf.mo_energy).tolist(),
        "mo_occupations": np.asarray(mf.mo_occ).tolist(),
        "homo_energy_hartree": homo,
        "lumo_energy_hartree": lumo,
        "homo_lumo_gap_hartree": (lumo - homo) if homo is not None and lumo is not None else None,
        "mulliken_charges": np.asarray(charges, dtype=float).tolist(),
        "dipole_moment_au": dipole_au.tolist(),
        "dipole_moment_debye": dipole_debye.tolist(),
        "dipole_moment_total_debye": float(np.linalg.norm(dipole_debye)),
        "s_squared": None if s2 is None else float(s2),
        "spin_multiplicity_computed": None if mult is None else float(mult),
        "restricted": bool(restricted),
        "nao": int(mf.mol.nao_nr()),
        "nmo": int(np.asarray(mf.mo_energy).shape[-1]),
        # (integers in QCSchema: none for an ensemble with fractional occupations)
        "nalpha": None if fractional else int(mf.mol.nelec[0]),
        "nbeta": None if fractional else int(mf.mol.nelec[1]),
        "natom": int(mf.mol.natm),
        "nelectron": float(np.sum(mf.mo_occ)) if fractional else int(mf.mol.nelectron),
        "fixed_occupations": None if fixed is None else fixed.to_dict(),
        "grid_points": int(len(mf.grids.weights)) if getattr(mf.grids, "weights", None) is not None else None,
        "non_aufbau": aufbau.non_aufbau(mf.mo_energy, mf.mo_occ) or None,
    }
    props.update(solvation_properties(mf, props["return_energy"]))
    return props


def solvation_properties(mf, total_hartree: float) -> dict:
    """The split of the total energy `total_hartree` of an SCF in an implicit solvent (Ha):
    'solvent_polarization_energy' (1/2 q.V, the surface charges' energy in the solute's
    field), 'solvent_cds_energy' (SMD's cavity-dispersion-solvent-structure term, else
    None), 'solute_energy' (the total without them: the gas-phase-like energy of the
    solute at its polarised density) and 'solvent_surface_points' (the PCM family's and
    SMD's cavity; None for ddCOSMO); {} in the gas phase."""
    from dm21cli.scf import solvent as solvation

    model = solvation.solvent_of(mf)
    if model is None:
        return {}
    terms = solvation.terms(mf)
    solvation_hartree = terms["polarization"] + (terms["cds"] or 0.0)
    return {"solvent_polarization_energy": terms["polarization"],
            "solvent_cds_energy": terms["cds"],
            "solute_energy": total_hartree - solvation_hartree,
            "solvent_surface_points": solvation.parameters(model).get("surface_points")}


def final_dm21_energy(mf, log) -> dict:
    """The DM21 energy of the converged density on the full grid, and its checks.

    E_xc is evaluated again (`DM21XC.final_correction`): in float64 where the SCF
    ran in float32 (precision "mixed"), and with the grid points the SCF left out
    as empty added.  Changes mf.e_tot and mf.scf_summary['exc']; returns the
    record, with the wall time and 'problems': the checks the density failed
    (empty when it passed them; a density that fails is not a result).
    """
    from dm21cli.functional.xc import split_spin
    from dm21cli.scf.occupations import electron_count

    t0 = time.perf_counter()
    restricted, dm_spin, _ = split_spin(mf.make_rdm1())
    info = mf.dm21.final_correction(mf.mol, mf.grids, dm_spin, restricted,
                                    nelec_expected=electron_count(mf))
    mf.e_tot = float(mf.e_tot) + info["correction_hartree"]
    if getattr(mf, "scf_summary", None) is not None:
        mf.scf_summary["exc"] = info["exc_final_hartree"]
    info["wall_s"] = time.perf_counter() - t0
    precision = "float64" if mf.dm21.mixed else "the SCF's precision"
    log(f"final E_xc in {precision} on the full grid: {info['exc_final_hartree']:.10f} Ha "
        f"({info['correction_hartree']:+.2e} Ha against the SCF's, {info['left_out_points']} "
        f"points left out as empty adding {info['exc_left_out_hartree']:+.1e} Ha; "
        f"{info['wall_s']:.1f} s)")
    log(f"density check: {info['nelec_grid']:.6f} electrons on the evaluated grid points, "
        f"{info['nelec_expected']:.6f} expected"
        + ("" if not mf.dm21.points_added else
           f"; {mf.dm21.points_added} grid points joined the evaluated set as the density moved"))
    for problem in info["problems"]:
        log(f"FAILED density check: {problem}")
    return info


def _real(value) -> float | None:
    return None if value is None else float(np.real(value))


def provenance(res: dict, spec, network) -> dict:
    import pyscf

    from dm21cli.functional import kernels

    prov = {
        "creator": "dm21cli", "version": __version__, "routine": "dm21cli.jobs.run.run_job",
        "pyscf": pyscf.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "hostname": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": res["threads"], "threads_source": res["threads_source"],
        "memory_mb": res["memory_mb"], "memory_source": res["memory_source"],
        "compiled_kernels": kernels.available(),
        "command": " ".join(sys.argv),
        "checkpoint": None,
    }
    try:
        import scipy

        prov["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    if network is not None:
        from dm21cli.functional import weights

        prov["checkpoint"] = {
            "variant": network.name, "path": str(getattr(network, "source", "")),
            "precision": spec.scf.precision,
            "sha256": dict(weights.CHECKSUMS[network.name]),
        }
    return prov


def _cube_jobs(spec, mf) -> list[tuple[str, str, dict, str]]:
    """(file name, kind, arrays, comment) for every requested cube."""
    restricted = np.asarray(mf.mo_occ).ndim == 1
    method = spec.functional
    dm = np.asarray(mf.make_rdm1())
    jobs = []
    channels = _orbital_by_spin(mf.mo_energy, mf.mo_occ, restricted)
    coeffs = [mf.mo_coeff] if restricted else [mf.mo_coeff[0], mf.mo_coeff[1]]

    def orbital(spin_index: int, idx: int, label: str, fname: str):
        spin, energy, occ = channels[spin_index]
        spin_txt = f", {spin}" if spin else ""
        comment = (f"{method} orbital {idx + 1} ({label}{spin_txt}), energy {energy[idx]:.6f} Ha, "
                   f"occupation {occ[idx]:g}")
        jobs.append((fname, "orbital", {"coeff": coeffs[spin_index][:, idx]}, comment))

    for request in spec.outputs.cube_requests():
        if request == "density":
            total = dm if restricted else dm[0] + dm[1]
            jobs.append(("density.cube", "density", {"dm": total}, f"{method} total electron density, e/bohr^3"))
        elif request == "spin_density":
            spin_dm = np.zeros_like(dm) if restricted else dm[0] - dm[1]
            jobs.append(("spin_density.cube", "spin_density", {"dm": spin_dm},
                         f"{method} spin density (alpha - beta), e/bohr^3"))
        elif request in ("homo", "lumo"):
            for s, (spin, energy, occ) in enumerate(channels):
                if request == "homo":
                    idx_set = np.flatnonzero(occ > 0)
                    if len(idx_set) == 0:
                        continue
                    idx = int(idx_set[np.argmax(energy[idx_set])])
                else:
                    idx_set = np.flatnonzero(occ == 0)
                    if len(idx_set) == 0:
                        continue
                    idx = int(idx_set[np.argmin(energy[idx_set])])
                suffix = f"_{spin}" if spin else ""
                orbital(s, idx, request.upper(), f"{request}{suffix}.cube")
        elif request.startswith("orbital:"):
            token = request.split(":", 1)[1]
            spin_index = 0
            if token[-1] in "ab":
                spin_index = 0 if token[-1] == "a" else 1
                token = token[:-1]
            idx = int(token) - 1
            if restricted:
                orbital(0, idx, orbital_label(idx, mf.mo_occ), f"orbital_{idx + 1}.cube")
                continue
            spin = channels[spin_index][0]
            orbital(spin_index, idx, orbital_label(idx, mf.mo_occ[spin_index]),
                    f"orbital_{idx + 1}_{spin}.cube")
    return jobs


def write_cube_files(jobdir, spec, mf, log) -> dict:
    """The requested cube files; returns {request: file name}."""
    from dm21cli.core.units import ANGSTROM_BOHR

    cubes: dict = {}
    spacing_bohr = spec.outputs.cube_spacing * ANGSTROM_BOHR
    margin_bohr = spec.outputs.cube_margin * ANGSTROM_BOHR
    for fname, kind, arrays, comment in _cube_jobs(spec, mf):
        log(f"writing {fname}")
        write_cube(jobdir.file(fname), mf.mol, kind, spacing_bohr=spacing_bohr,
                       margin_bohr=margin_bohr, comment=comment, **arrays)
        cubes[fname.removesuffix(".cube")] = fname
    return cubes


def _ecp_record(spec) -> dict:
    """``model.ecp``: {element: {basis, core_electrons}} or None; and for DM21 the note that
    DM21 was trained on all-electron calculations."""
    from dm21cli.io.inputs.basis import ECP_DM21_NOTE, ecp_map

    ecp = ecp_map(spec)
    record: dict = {"ecp": {symbol: {"basis": entry.basis, "core_electrons": entry.core_electrons}
                            for symbol, entry in ecp.items()} or None}
    if ecp and spec.is_dm21:
        record["ecp_note"] = ECP_DM21_NOTE
    return record


def _solvent_record(spec) -> dict:
    """``model.solvent``: the job's solvent (model, name, eps) and PySCF's settings of its
    model (`dm21cli.scf.solvent.parameters`); nothing in the gas phase."""
    if spec.solvent is None:
        return {}
    from dm21cli.scf import solvent as solvation

    settings = spec.solvent
    record = solvation.default_parameters(settings.model, settings.dielectric(), settings.name)
    return {"solvent": {**settings.resolved(), **record}}


def base_result(spec, res, network) -> dict:
    """A run's record in dm21cli's layout, before the SCF (`dm21cli.io.outputs.qcschema.
    to_qcschema` turns it into result.json)."""
    from dm21cli.io.inputs.qcschema import driver_of

    mol = spec.molecule
    return {
        "success": False, "converged": False, "driver": driver_of(spec),
        "model": {"method": spec.functional, "basis": spec.basis_label(),
                  "dispersion": spec.dispersion, **_ecp_record(spec), **_solvent_record(spec)},
        "molecule": {"symbols": list(mol.symbols),
                     "geometry_bohr": np.asarray(mol.coords_bohr()).tolist(),
                     "molecular_charge": mol.charge, "molecular_multiplicity": mol.multiplicity},
        "return_energy": None, "properties": {}, "timings_s": {}, "files": {},
        "provenance": provenance(res, spec, network), "input": spec.to_resolved_dict(),
        "error": None,
    }
