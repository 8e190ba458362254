"""The result for people: ``summary.txt`` and the terminal table.

Energies in Ha and eV, geometry in Angstrom, dipole in Debye: the units
appear only here, in the renderings.  Both render a result.json document
(QCSchema AtomicResult or FailedOperation, read through
`dm21cli.io.outputs.qcschema.fields`).  Missing keys are tolerated.
"""

from __future__ import annotations

from typing import Any

from dm21cli.core.units import AU_DEBYE, BOHR_ANGSTROM, HARTREE_EV
from dm21cli.io.outputs.qcschema import fields


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


#: What to try when a solution is not aufbau (summary, log and result.json).
NON_AUFBAU_ADVICE = ("a state of lower energy may exist: try another starting density "
                     "(scf.guess: atom, huckel or minao, or scf.warm_start: null), scf.restricted: "
                     "false, or another multiplicity")


def non_aufbau_text(found: list[dict]) -> str:
    """One line for `non_aufbau`'s findings (non-empty), with what to try."""
    where = "; ".join(f"{f['spin']}: occupied {f['highest_occupied_hartree']:.4f} Ha above empty "
                      f"{f['lowest_empty_hartree']:.4f} Ha" for f in found)
    return f"non-aufbau solution, an occupied orbital above an empty one ({where}); {NON_AUFBAU_ADVICE}"


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


def solvent_text(solvent: dict) -> str:
    """``IEF-PCM, water, eps 78.355 (PySCF pyscf.solvent.pcm.PCM: radii 1.2 x modified
    Bondi, Lebedev order 29)`` from ``model.solvent``."""
    what = ", ".join(str(x) for x in (solvent.get("model"), solvent.get("name")) if x)
    text = f"{what}, eps {_fmt(solvent.get('eps'), 'g', '?')}"
    if solvent.get("pyscf_class"):
        text += (f" (PySCF {solvent['pyscf_class']}: radii {solvent.get('radii', '?')}, "
                 f"Lebedev order {solvent.get('lebedev_order', '?')})")
    return text


def _row(label: str, value: str) -> str:
    """One ``label  value`` line of summary.txt, labels in a column of 28."""
    return f"  {label:<28} {value}"


def _props(result: dict) -> dict:
    return result.get("properties") or {}


def _molecule(result: dict) -> dict:
    return result.get("molecule") or {}


def _status_lines(result: dict) -> list[str]:
    """The title, whether the job succeeded and converged, and a non-aufbau warning."""
    success, converged = result.get("success"), result.get("converged")
    conv_text = _yes_no(converged)
    if converged is False:
        conv_text = "NO -- NOT CONVERGED (energies are from the last SCF iteration)"
    out = ["DM21 calculation summary", "=" * 24,
           _row("Status", "SUCCESS" if success else ("FAILED" if success is not None else "unknown")),
           _row("Converged", conv_text)]
    if _props(result).get("non_aufbau"):
        out.append(_row("WARNING", non_aufbau_text(_props(result)["non_aufbau"])))
    return out


def _model_lines(result: dict) -> list[str]:
    """Method and basis, effective core potentials, the solvent and the driver."""
    model = result.get("model") or {}
    out = [_row("Method / basis", f"{model.get('method') or '?'} / {model.get('basis') or '?'}")]
    if model.get("ecp"):
        out.append(_row("ECP", _ecp_text(model["ecp"])))
        if model.get("ecp_note"):
            out.append(_row("Note", str(model["ecp_note"])))
    if isinstance(model.get("solvent"), dict):
        out.append(_row("Solvent", solvent_text(model["solvent"])))
    if result.get("driver"):
        out.append(_row("Driver", str(result["driver"])))
    return out


def _occupations_text(fixed: dict) -> str:
    """``alpha 1 0.5; beta - (1.5 electrons)`` from ``properties.fixed_occupations``."""
    def occ(values) -> str:
        return " ".join(format(v, "g") for v in values or []) or "-"

    return (f"alpha {occ(fixed.get('alpha'))}; beta {occ(fixed.get('beta'))} "
            f"({_fmt(_num(fixed.get('electrons')), 'g', '?')} electrons)")


def _system_lines(result: dict) -> list[str]:
    """The molecule, the reference (RKS or UKS), fixed occupations and the sizes."""
    props, mol = _props(result), _molecule(result)
    symbols = mol.get("symbols") or []
    out = []
    if symbols:
        charge, mult = mol.get("molecular_charge"), mol.get("molecular_multiplicity")
        out.append(_row("Molecule", f"{formula(symbols)} ({len(symbols)} atoms, charge "
                                    f"{charge if charge is not None else '?'}, multiplicity "
                                    f"{mult if mult is not None else '?'})"))
    restricted = props.get("restricted")
    if restricted is not None:
        out.append(_row("Reference", "restricted (RKS)" if restricted else "unrestricted (UKS)"))
    if isinstance(props.get("fixed_occupations"), dict):
        out.append(_row("Fixed occupations", _occupations_text(props["fixed_occupations"])))
    if props.get("nao") is not None:
        out.append(_row("Basis functions", str(props["nao"])))
    if props.get("grid_points") is not None:
        out.append(_row("Grid points", str(props["grid_points"])))
    return out


def _error_lines(result: dict) -> list[str]:
    """The ``Error`` section: its type and message."""
    error = result.get("error")
    if not error:
        return []
    return ["", "Error", _row("Type", str(error.get("error_type") or "?")),
            _row("Message", str(error.get("error_message") or ""))]


#: The energy components of the ``Energies`` section, in its order: (label, property).
ENERGY_COMPONENTS = (
    ("SCF total energy", "scf_total_energy"),
    ("Nuclear repulsion", "nuclear_repulsion_energy"),
    ("One-electron", "scf_one_electron_energy"),
    ("Coulomb", "scf_coulomb_energy"),
    ("Exchange-correlation", "scf_xc_energy"),
    ("Dispersion", "dispersion_energy"),
    ("Solvent polarisation", "solvent_polarization_energy"),
    ("SMD cavity-disp.-structure", "solvent_cds_energy"),
    ("Solute (without solvation)", "solute_energy"),
)


def _energy_lines(result: dict) -> list[str]:
    """The ``Energies`` section: the total energy in Ha and eV, the components present."""
    props = _props(result)
    e_tot = _num(result.get("return_energy", props.get("return_energy")))
    out = ["", f"Energies{'':<23}{'hartree':>18}{'eV':>18}",
           _row("Total energy", f"{e_tot:18.10f}{e_tot * HARTREE_EV:18.6f}" if e_tot is not None
                else f"{'n/a':>18}")]
    for label, key in ENERGY_COMPONENTS:
        v = _num(props.get(key))
        if v is not None:
            out.append(_row(label, f"{v:18.10f}"))
    return out


def _scf_lines(result: dict) -> list[str]:
    """The ``SCF`` section: iterations, and the table of attempts."""
    props = _props(result)
    attempts = props.get("scf_attempts") or []
    if props.get("scf_iterations") is None and not attempts:
        return []
    out = ["", "SCF"]
    if props.get("scf_iterations") is not None:
        out.append(_row("Iterations", str(props["scf_iterations"])))
    if attempts:
        out.append(_row("Attempts", str(len(attempts))))
        out.append(f"    {'#':>2}  {'strategy':<20} {'converged':<10} {'cycles':>6}  {'energy / hartree':>18}")
        for i, a in enumerate(attempts, 1):
            a = a or {}
            out.append(f"    {i:>2}  {a.get('strategy') or '?'!s:<20} "
                       f"{_yes_no(a.get('converged')):<10} {a.get('cycles', '')!s:>6}  "
                       f"{_fmt(a.get('energy_hartree', a.get('energy')), '18.10f'):>18}")
    return out


def _orbital_row(label: str, v: float) -> str:
    return _row(label, f"{v:18.6f}{v * HARTREE_EV:18.4f}")


def _frontier_lines(result: dict) -> list[str]:
    """The ``Frontier orbitals`` section: HOMO, LUMO and gap, and per spin for UKS."""
    props = _props(result)
    homo, lumo = _num(props.get("homo_energy_hartree")), _num(props.get("lumo_energy_hartree"))
    gap = _num(props.get("homo_lumo_gap_hartree"))
    if gap is None and homo is not None and lumo is not None:
        gap = lumo - homo
    spins = _frontier_by_spin(props)
    if all(v is None for v in (homo, lumo, gap)) and not spins:
        return []
    out = ["", f"Frontier orbitals{'':<14}{'hartree':>18}{'eV':>18}"]
    out += [_orbital_row(label, v) for label, v in (("HOMO", homo), ("LUMO", lumo),
                                                     ("HOMO-LUMO gap", gap)) if v is not None]
    for spin, h, lu in spins:
        if h is not None:
            out.append(_orbital_row(f"HOMO ({spin})", h))
        if lu is not None:
            out.append(_orbital_row(f"LUMO ({spin})", lu))
    return out


def _spin_lines(result: dict) -> list[str]:
    """The ``Spin`` section: <S^2>, its exact value for the multiplicity, the multiplicity
    it implies."""
    props = _props(result)
    s2 = _num(props.get("s_squared"))
    if s2 is None:
        return []
    out = ["", "Spin", _row("<S^2>", f"{s2:.6f}")]
    mult = _molecule(result).get("molecular_multiplicity")
    if isinstance(mult, int):
        s = (mult - 1) / 2
        out.append(_row("<S^2> exact for multiplicity", f"{s * (s + 1):.6f}"))
    if _num(props.get("spin_multiplicity_computed")) is not None:
        out.append(_row("Multiplicity from <S^2>", f"{_num(props['spin_multiplicity_computed']):.4f}"))
    return out


def _atom_lines(result: dict) -> list[str]:
    """The ``Atoms and Mulliken charges`` section: the geometry in Angstrom, the charges and
    their sum (either may be missing)."""
    mol = _molecule(result)
    symbols = mol.get("symbols") or []
    if not symbols:
        return []
    geom, charges = mol.get("geometry_bohr"), _props(result).get("mulliken_charges")
    have_geom = isinstance(geom, list) and len(geom) == len(symbols)
    have_q = isinstance(charges, list) and len(charges) == len(symbols)
    if not (have_geom or have_q):
        return [""]
    head = f"    {'#':>3}  {'atom':<4}"
    if have_geom:
        head += f"{'x / Angstrom':>14}{'y / Angstrom':>14}{'z / Angstrom':>14}"
    if have_q:
        head += f"{'Mulliken charge':>17}"
    out = ["", "Atoms" + (" and Mulliken charges" if have_q else ""), head]
    for i, s in enumerate(symbols):
        line = f"    {i + 1:>3}  {s:<4}"
        if have_geom:
            line += "".join(_fmt(_scale(c, BOHR_ANGSTROM), "14.6f") for c in geom[i])
        if have_q:
            line += f"{_fmt(charges[i], '17.4f')}"
        out.append(line)
    if have_q:
        total_q = sum(_num(q) or 0.0 for q in charges)
        out.append(f"    {'':>3}  {'sum':<4}" + " " * (42 if have_geom else 0) + f"{total_q:17.4f}")
    return out


def _gradient_lines(result: dict) -> list[str]:
    """The ``Nuclear gradient`` section (task gradient, and an optimisation's last step), or
    why it is missing from a gradient job."""
    props = _props(result)
    grad = props.get("gradient_hartree_per_bohr")
    if not (isinstance(grad, list) and grad):
        if result.get("driver") != "gradient":
            return []
        return ["", "Nuclear gradient",
                _row("Not computed",
                     "the SCF did not converge" if result.get("converged") is False else "n/a")]
    symbols = _molecule(result).get("symbols") or []
    out = ["", "Nuclear gradient dE/dR (Hartree/bohr)",
           f"    {'#':>3}  {'atom':<4}{'x':>14}{'y':>14}{'z':>14}"]
    for i, g in enumerate(grad):
        label = symbols[i] if i < len(symbols) else "?"
        out.append(f"    {i + 1:>3}  {label:<4}" + "".join(_fmt(c, "14.8f") for c in (g or [])))
    out.append(_row("Maximum component", _fmt(props.get("gradient_max_hartree_per_bohr"), ".3e")))
    out.append(_row("RMS", _fmt(props.get("gradient_rms_hartree_per_bohr"), ".3e")))
    return out


def _dipole_lines(result: dict) -> list[str]:
    """The ``Dipole moment (Debye)`` section: the components and the total (also in a.u.)."""
    props = _props(result)
    dip = props.get("dipole_moment_debye")
    dip_total = _num(props.get("dipole_moment_total_debye"))
    have_vector = isinstance(dip, list) and len(dip) == 3
    if not have_vector and dip_total is None:
        return []
    out = ["", "Dipole moment (Debye)"]
    if have_vector:
        out.append(_row("x, y, z", "  ".join(_fmt(c, "10.4f") for c in dip)))
        if dip_total is None and all(_num(c) is not None for c in dip):
            dip_total = sum(_num(c) ** 2 for c in dip) ** 0.5
    if dip_total is not None:
        out.append(_row("total", f"{dip_total:10.4f}  ({dip_total / AU_DEBYE:.4f} a.u.)"))
    return out


def _timing_lines(result: dict) -> list[str]:
    """The ``Timings (s)`` section, the stages that have a number."""
    timings = result.get("timings_s") or {}
    rows = [_row(k.replace("_", " "), f"{_num(v):10.2f}") for k, v in timings.items()
            if _num(v) is not None]
    return ["", "Timings (s)", *rows] if rows else []


def _file_lines(result: dict) -> list[str]:
    """The ``Files`` section: each output file (cubes and the like one a line)."""
    files = result.get("files") or {}
    if not files:
        return []
    out = ["", "Files"]
    for k, v in files.items():
        if isinstance(v, dict):
            out += [_row(f"{k}: {k2}", str(v2)) for k2, v2 in v.items() if v2]
        elif v:
            out.append(_row(k, str(v)))
    return out


#: The rows of the ``Provenance`` section after the program, in its order: (key, label).
PROVENANCE_ROWS = (("routine", "Routine"), ("date", "Date"), ("hostname", "Host"),
                   ("python", "Python"), ("pyscf", "PySCF"), ("numpy", "numpy"),
                   ("tensorflow", "TensorFlow"), ("threads", "Threads"),
                   ("memory_mb", "Memory (MB)"), ("compiled_kernels", "Compiled kernels"))


def _provenance_lines(result: dict) -> list[str]:
    """The ``Provenance`` section: program, versions, host and resources, the DM21
    checkpoint and its checksums."""
    prov = result.get("provenance") or {}
    if not prov:
        return []
    out = ["", "Provenance"]
    if prov.get("creator"):
        out.append(_row("Program", f"{prov['creator']} {prov.get('version') or ''}".rstrip()))
    out += [_row(label, str(prov[key])) for key, label in PROVENANCE_ROWS
            if prov.get(key) is not None]
    ckpt = prov.get("checkpoint")
    if isinstance(ckpt, dict):
        out.append(_row("Checkpoint", f"{ckpt.get('variant') or '?'} at {ckpt.get('path') or '?'}"))
        out += [_row("  sha256", f"{digest}  {name}")
                for name, digest in (ckpt.get("sha256") or {}).items()]
    return out


def render_summary(result: dict) -> str:
    """The text of ``summary.txt`` for a result.json document (missing keys are tolerated):
    its sections in order, each from its own function."""
    result = fields(result)
    opt = result.get("optimization")
    lines = (_status_lines(result) + _model_lines(result) + _system_lines(result)
             + _error_lines(result) + _energy_lines(result) + _scf_lines(result)
             + _frontier_lines(result) + _spin_lines(result) + _atom_lines(result)
             + _gradient_lines(result) + _optimization_lines(opt) + _irc_lines(opt)
             + _vibration_lines(result) + _dipole_lines(result) + _timing_lines(result)
             + _file_lines(result) + _provenance_lines(result))
    return "\n".join(lines) + "\n"


def _table_title(result: dict) -> str:
    """The terminal table's title: ``DM21 result``, the formula and the basis when known."""
    symbols = (result.get("molecule") or {}).get("symbols") or []
    model = result.get("model") or {}
    title = "DM21 result"
    if symbols:
        title += f": {formula(symbols)}"
    if model.get("basis"):
        title += f" / {model['basis']}"
    return title


def _state_rows(result: dict) -> list[tuple]:
    """The table's (quantity, value, unit) rows of the ECP, whether the SCF converged and
    whether its state is non-aufbau."""
    from rich.text import Text

    props = result.get("properties") or {}
    model = result.get("model") or {}
    rows = []
    if model.get("ecp"):
        rows.append(("ECP", _ecp_text(model["ecp"]), ""))
        if model.get("ecp_note"):
            rows.append(("note", Text(str(model["ecp_note"]), style="yellow"), ""))
    converged = result.get("converged")
    if converged is False:
        rows.append(("converged", Text("NO", style="bold red"), ""))
    else:
        rows.append(("converged", _yes_no(converged), ""))
    if props.get("non_aufbau"):
        rows.append(("aufbau", Text("NO: an occupied orbital lies above an empty one "
                                    "(summary.txt says what to try)", style="bold yellow"), ""))
    return rows


def _energy_rows(result: dict) -> list[tuple]:
    """The table's rows of the total energy (Ha), its dispersion and solvent polarisation
    parts, and the SCF iterations."""
    props = result.get("properties") or {}
    energy = _num(result.get("return_energy", props.get("return_energy")))
    rows = [("total energy", _fmt(energy, ".10f"), "Ha")]
    if _num(props.get("dispersion_energy")):
        rows.append(("  of which dispersion", _fmt(props["dispersion_energy"], ".10f"), "Ha"))
    if _num(props.get("solvent_polarization_energy")) is not None:
        rows.append(("  of which solvent polarisation",
                     _fmt(props["solvent_polarization_energy"], ".10f"), "Ha"))
    if props.get("scf_iterations") is not None:
        attempts = props.get("scf_attempts") or []
        extra = f" ({len(attempts)} attempts)" if len(attempts) > 1 else ""
        rows.append(("SCF iterations", f"{props['scf_iterations']}{extra}", ""))
    return rows


def _property_rows(props: dict) -> list[tuple]:
    """The table's rows of the frontier orbitals (eV), the dipole moment (D), <S^2> and the
    gradient (Ha/bohr) in ``properties``, those given."""
    rows = []
    for label, key in (("HOMO", "homo_energy_hartree"), ("LUMO", "lumo_energy_hartree"),
                       ("HOMO-LUMO gap", "homo_lumo_gap_hartree")):
        v = _num(props.get(key))
        if v is not None:
            rows.append((label, f"{v * HARTREE_EV:.4f}", "eV"))
    dip = _num(props.get("dipole_moment_total_debye"))
    if dip is not None:
        rows.append(("dipole moment", f"{dip:.4f}", "D"))
    s2 = _num(props.get("s_squared"))
    if s2 is not None:
        rows.append(("<S^2>", f"{s2:.4f}", ""))
    gmax = _num(props.get("gradient_max_hartree_per_bohr"))
    if gmax is not None:
        rms = _fmt(props.get("gradient_rms_hartree_per_bohr"), ".2e")
        rows.append(("gradient max / RMS", f"{gmax:.2e} / {rms}", "Ha/bohr"))
    return rows


def _vibration_rows(vib: Any) -> list[tuple]:
    """The table's rows of ``vibrations``: the first three wavenumbers (cm^-1, imaginary
    ones with ``i``), the stationary point's classification and a gradient that is not
    stationary."""
    from rich.text import Text

    if not isinstance(vib, dict):
        return []
    rows = []
    waves = vib.get("wavenumbers_cm1") or []
    if waves:
        shown = ", ".join(f"{abs(w):.1f}{'i' if w < 0 else ''}" for w in waves[:3])
        rows.append(("wavenumbers", shown + (" ..." if len(waves) > 3 else ""), "cm^-1"))
    verdict = vib.get("classification") or {}
    if verdict.get("message"):
        style = None if verdict.get("ok") else "bold red"
        rows.append(("stationary point", Text(str(verdict["message"]), style=style), ""))
    if not (vib.get("stationarity") or {}).get("ok", True):
        rows.append(("gradient", Text("NOT stationary: optimise first", style="bold red"), ""))
    return rows


def _closing_rows(result: dict) -> list[tuple]:
    """The table's last rows: the first temperature's ZPVE and Gibbs free energy (Ha), the
    optimisation's convergence and steps, the wall time (s) and the error."""
    from rich.text import Text

    rows = []
    thermo = result.get("thermochemistry")
    if isinstance(thermo, list) and thermo:
        first = thermo[0]
        rows.append(("ZPVE", _fmt(first.get("zpve_hartree"), ".6f"), "Ha"))
        rows.append((f"G ({_fmt(first.get('temperature_K'), 'g')} K)",
                     _fmt(first.get("gibbs_free_energy_hartree"), ".8f"), "Ha"))
    opt = result.get("optimization")
    if isinstance(opt, dict):
        state = "yes" if opt.get("converged") else Text("NO", style="bold red")
        rows.append(("geometry converged", state, ""))
        rows.append(("optimisation steps", str(len(opt.get("history") or [])), ""))
    total = _num(_get(result, "timings_s", "total"))
    if total is not None:
        rows.append(("wall time", f"{total:.1f}", "s"))
    error = result.get("error")
    if error:
        rows.append(("error", Text(f"{error.get('error_type') or '?'}: "
                                   f"{error.get('error_message') or ''}", style="red"), ""))
    return rows


def render_table(result: dict):
    """A `rich.table.Table` with the key numbers of a result.json document, for the terminal:
    columns quantity, value and unit, its rows from one function per group."""
    from rich.table import Table

    result = fields(result)
    table = Table(title=_table_title(result), show_header=True, header_style="bold")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("unit")
    rows = (_state_rows(result) + _energy_rows(result)
            + _property_rows(result.get("properties") or {})
            + _vibration_rows(result.get("vibrations")) + _closing_rows(result))
    for row in rows:
        table.add_row(*row)
    return table


def _vibration_lines(result: dict) -> list[str]:
    """summary.txt's sections of a Hessian (``result.json``'s ``vibrations``,
    ``thermochemistry`` and ``hessian_points``): how it was computed, the classification,
    the table of modes and the thermochemistry table, units in the headers."""
    from dm21cli.io.outputs.vibrations import modes_table_lines, thermo_table_lines

    vib = result.get("vibrations")
    if not isinstance(vib, dict):
        return []
    out = ["", "Vibrations (harmonic)"]
    points = result.get("hessian_points") or {}
    if points:
        out.append(f"  Hessian by {points.get('method', '?')}: {points.get('points', '?')} "
                   f"geometries, step {_fmt(points.get('step_bohr'), 'g')} bohr, SCF conv_tol "
                   f"{_fmt(points.get('scf_conv_tol'), 'g')} and conv_tol_grad "
                   f"{_fmt(points.get('scf_conv_tol_grad'), 'g')}"
                   + (f" ({points['scf_precision']})" if points.get("scf_precision") else "")
                   + "; Hessian asymmetry "
                   f"{_fmt(vib.get('hessian_asymmetry_hartree_bohr2'), '.1e')} Eh/bohr^2")
    for key in ("classification", "stationarity"):
        entry = vib.get(key) or {}
        if entry.get("message"):
            out.append(("  " if entry.get("ok", True) else "  WARNING: ") + str(entry["message"]))
    out.append(f"  {vib.get('n_vibrations', '?')} vibrations"
               f"{' (linear molecule)' if vib.get('linear') else ''}, masses (u): "
               + " ".join(f"{m:.5f}" for m in vib.get("masses_amu") or []))
    out += modes_table_lines(vib)
    thermo = result.get("thermochemistry")
    if isinstance(thermo, list) and thermo:
        out += ["", "Thermochemistry"]
        out += thermo_table_lines(thermo)
    return out


def _irc_lines(opt: Any) -> list[str]:
    """summary.txt's section of a reaction path (``optimization.irc``): each leg's end and
    the path, from the backward leg's end through the transition state to the forward's."""
    irc = opt.get("irc") if isinstance(opt, dict) else None
    if not isinstance(irc, dict) or not irc.get("path"):
        return []
    out = ["", "Reaction path (IRC, geomeTRIC)"]
    out.append(f"  {'Transition state energy':<28} {_fmt(_num(irc.get('ts_energy_hartree')), '.10f')} hartree")
    for leg, end in (irc.get("legs") or {}).items():
        if not isinstance(end, dict):
            continue
        state = "its minimum" if end.get("converged") else "NOT at its minimum"
        out.append(f"  {leg.capitalize() + ' leg':<28} {end.get('points')} points, end (step "
                   f"{end.get('end_step')}) {_fmt(_num(end.get('barrier_kcal_mol')), '.3f')} "
                   f"kcal/mol below the TS, {state}")
    out.append(f"    {'leg':<8}  {'step':>4}  {'s / amu^1/2 bohr':>16}  {'energy / hartree':>18}  "
               f"{'rel. / kcal/mol':>15}")
    for p in irc["path"]:
        out.append(f"    {p.get('leg')!s:<8}  {p.get('step', '?'):>4}  "
                   f"{_fmt(_num(p.get('s_amu_half_bohr')), '16.4f'):>16}  "
                   f"{_fmt(_num(p.get('energy_hartree')), '18.10f'):>18}  "
                   f"{_fmt(_num(p.get('relative_kcal_mol')), '15.3f'):>15}")
    return out


def _optimization_lines(opt: Any) -> list[str]:
    """summary.txt's section of a geometry optimisation (``result.json``'s ``optimization``)."""
    if not isinstance(opt, dict):
        return []
    kind = ("Reaction path steps" if opt.get("irc") else "Transition-state search"
            if opt.get("transition") else "Geometry optimisation")
    out = ["", f"{kind} (geomeTRIC)"]

    def row(label: str, value: str) -> None:
        out.append(f"  {label:<28} {value}")

    converged = opt.get("converged")
    row("Converged", "yes" if converged else "NO -- NOT CONVERGED")
    history = opt.get("history") or []
    row("Steps", f"{len(history)} (maxiter {opt.get('maxiter', '?')})")
    criteria = opt.get("criteria") or {}
    if criteria:
        row("Criteria", ", ".join(f"{k} {_fmt(v, 'g')}" for k, v in criteria.items()
                                  if k.startswith("convergence_") and _num(v) is not None))
    for text in opt.get("constraints_text") or []:
        row("Constraint", str(text))
    if history:
        out.append(f"    {'step':>4}  {'energy / hartree':>18}  {'dE / hartree':>12}  "
                   f"{'max |g|':>10}  {'RMS g':>10}  {'|g|':>10}  {'SCF':>4}")
        previous = None
        for entry in history:
            energy = _num(entry.get("energy_hartree"))
            delta = "" if previous is None or energy is None else f"{energy - previous:12.3e}"
            out.append(f"    {entry.get('step', '?'):>4}  {_fmt(energy, '18.10f'):>18}  {delta:>12}  "
                       f"{_fmt(entry.get('gradient_max_hartree_per_bohr'), '10.2e'):>10}  "
                       f"{_fmt(entry.get('gradient_rms_hartree_per_bohr'), '10.2e'):>10}  "
                       f"{_fmt(entry.get('gradient_norm_hartree_per_bohr'), '10.2e'):>10}  "
                       f"{entry.get('scf_iterations', '')!s:>4}")
            previous = energy if energy is not None else previous
        out.append("    (gradients in Hartree/bohr)")
    if opt.get("restarted_from"):
        row("Restarted from", str(opt["restarted_from"]))
    return out
