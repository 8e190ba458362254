"""The curve files of a scan: ``scan.csv``, ``scan.json``, ``scan.png`` and the text table."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from dm21cli.jobs.scan import fractional
from dm21cli.jobs.scan.plan import COORDINATES, Coordinate, ScanPlan
from dm21cli.jobs.scan.records import FILES, ScanReport, csv_columns


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, list):  # occupation numbers
        return " ".join(format(v, "g") for v in value)
    return value


def write_curves(plan: ScanPlan, report: ScanReport, plot: bool = True) -> None:
    """Write ``scan.csv``, ``scan.json``, the text table and (if `plot`) ``scan.png``.

    Energies are in hartree, the coordinate in the plan's unit (angstrom or degrees,
    or electrons for the fractional scans); adds the relative energies to the records.
    """
    from dm21cli.io.outputs.atomic import finite, write_json_atomic, write_text_atomic

    coordinate = plan.coordinate
    for rec in report.records:
        limit = (report.references.get(rec["functional"]) or {}).get("limit_energy_hartree")
        if limit is not None and rec["energy_hartree"] is not None:
            rec["relative_energy_hartree"] = rec["energy_hartree"] - limit
    if coordinate.kind in ("angle", "dihedral"):
        _relative_to_lowest(report.records)
    if not coordinate.moves_atoms:
        fractional.deviations(report.records, coordinate.kind, coordinate.column)
        report.curves = fractional.curves(report.records, coordinate.kind, coordinate.column)
    columns = csv_columns(coordinate, plan.relax)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for rec in report.records:
        writer.writerow({k: _csv_cell(rec.get(k)) for k in columns})
    write_text_atomic(plan.scan_dir / FILES["csv"], buf.getvalue())
    doc = {
        "schema_name": "dm21cli_scan", "schema_version": 1, "kind": coordinate.kind,
        "definition_hash": plan.definition_hash,
        "molecule": {"formula": plan.spec.molecule.formula(), "symbols": plan.spec.molecule.symbols,
                     "charge": plan.spec.molecule.charge,
                     "multiplicity": plan.spec.molecule.multiplicity},
    }
    if coordinate.kind == "distance":
        doc.update({
            "atoms": [plan.pair[0] + 1, plan.pair[1] + 1], "fragment": [k + 1 for k in plan.moving],
            "functionals": plan.functionals, "distances_angstrom": plan.values,
            "equilibrium_estimate_angstrom": plan.equilibrium_angstrom,
            "references": report.references})
        if plan.relax:
            doc["relax"] = True
    elif coordinate.moves_atoms:  # an angle or dihedral
        doc.update({
            "atoms": [a + 1 for a in plan.atoms], "fragment": [k + 1 for k in plan.moving],
            "functionals": plan.functionals, f"{coordinate.key}_degree": plan.values,
            "start_degree": plan.start_degree,
            "relative_energy": "to the lowest converged point of each functional's curve"})
        if plan.relax:
            doc["relax"] = True
    else:
        doc.update({"functionals": plan.functionals, coordinate.key: plan.values})
        if plan.states:
            doc["multiplicities"] = {str(n): m for n, m in plan.states.items()}
        doc["exact"] = ("straight lines between the integer-N energies" if coordinate.kind == "electrons"
                        else "constant: the f = 0 energy")
        doc["curves"] = report.curves
    doc.update({
        "counts": {"points": len(plan.all_points()), "finished": len(report.records),
                   "converged": report.converged, "not_converged": report.not_converged,
                   "failed": report.failed, "read_from_disk": report.reused},
        "points": report.records,
    })
    write_json_atomic(plan.scan_dir / FILES["json"], finite(doc))
    if plot and report.records:
        if coordinate.moves_atoms:
            write_plot(plan.scan_dir / FILES["png"], report, plan.functionals, coordinate)
        else:
            write_fractional_plot(plan.scan_dir / FILES["png"], report, plan.functionals, coordinate)


def _relative_to_lowest(records: list[dict]) -> None:
    """Angle and dihedral scans (no dissociation limit): each energy relative to the lowest
    converged point of the same functional."""
    for name in dict.fromkeys(r["functional"] for r in records):
        energies = [r["energy_hartree"] for r in records if r["functional"] == name
                    and r["converged"] and r["energy_hartree"] is not None]
        for r in records:
            if r["functional"] == name and energies and r["energy_hartree"] is not None:
                r["relative_energy_hartree"] = r["energy_hartree"] - min(energies)


def write_fractional_plot(path: Path, report: ScanReport, functionals: list[str],
                          coordinate: Coordinate) -> None:
    """Energy, with the exact straight (or flat) line, and its deviation from that line,
    against N or f; one line per functional."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dm21cli.io.outputs.atomic import atomic_path

    column = coordinate.column
    fig = Figure(figsize=(6.4, 7.2))
    FigureCanvasAgg(fig)
    ax_e, ax_d = fig.subplots(2, 1, sharex=True)
    exact = ("exact: straight lines between the integer-N energies" if coordinate.kind == "electrons"
             else "exact: the f = 0 energy")
    for name in functionals:
        rows = sorted((r for r in report.records if r["functional"] == name
                       and r["energy_hartree"] is not None), key=lambda r: r[column])
        if not rows:
            continue
        x = [r[column] for r in rows]
        line, = ax_e.plot(x, [r["energy_hartree"] for r in rows], "o-", label=name)
        lx = [r[column] for r in rows if r["line_energy_hartree"] is not None]
        ly = [r["line_energy_hartree"] for r in rows if r["line_energy_hartree"] is not None]
        ax_e.plot(lx, ly, "--", color=line.get_color(), linewidth=1, label=exact)
        exact = None  # (one legend entry for the dashed lines)
        bad = [(r[column], r["energy_hartree"]) for r in rows if not r["converged"]]
        if bad:
            ax_e.plot(*zip(*bad), "x", color="red", markersize=10)
        dx = [r[column] for r in rows if r["deviation_mhartree"] is not None]
        dy = [r["deviation_mhartree"] for r in rows if r["deviation_mhartree"] is not None]
        ax_d.plot(dx, dy, "o-", color=line.get_color(), label=name)
    ax_d.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="exact")
    ax_e.set_ylabel("E / Ha")
    ax_e.legend(fontsize="small")
    what = "fractional charge" if coordinate.kind == "electrons" else "fractional spin"
    ax_e.set_title(f"dm21 scan: {what}" + ("" if all(r["converged"] for r in report.records)
                                          else " (x: not converged)"))
    ax_d.set_xlabel(coordinate.axis)
    ax_d.set_ylabel("E - exact / mHa" if coordinate.kind == "electrons" else "E - E(f = 0) / mHa")
    ax_d.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def write_plot(path: Path, report: ScanReport, functionals: list[str],
               coordinate: Coordinate = COORDINATES["distance"]) -> None:
    """Energy (relative to the dissociation limit if known; of an angle or dihedral scan, to
    the lowest point) and the moving fragment's charge against the distance, angle or
    dihedral."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dm21cli.io.outputs.atomic import atomic_path

    fig = Figure(figsize=(6.4, 7.2))
    FigureCanvasAgg(fig)
    ax_e, ax_q = fig.subplots(2, 1, sharex=True)
    relative = all(r["relative_energy_hartree"] is not None for r in report.records
                   if r["energy_hartree"] is not None)
    for name in functionals:
        rows = [r for r in report.records if r["functional"] == name and r["energy_hartree"] is not None]
        if not rows:
            continue
        x = [r[coordinate.column] for r in rows]
        if relative:
            y = [r["relative_energy_hartree"] * 1000 for r in rows]
        else:
            y = [r["energy_hartree"] for r in rows]
        line, = ax_e.plot(x, y, "o-", label=name)
        bad = [(xi, yi) for xi, yi, r in zip(x, y, rows) if not r["converged"]]
        if bad:
            ax_e.plot(*zip(*bad), "x", color="red", markersize=10)
        qx = [r[coordinate.column] for r in rows if r["charge_moving_fragment"] is not None]
        qy = [r["charge_moving_fragment"] for r in rows if r["charge_moving_fragment"] is not None]
        ax_q.plot(qx, qy, "o-", color=line.get_color(), label=name)
    if relative and coordinate.kind != "distance":
        ax_e.set_ylabel("E - E(lowest point) / mHa")
    elif relative:
        ax_e.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="separated fragments")
        ax_e.set_ylabel("E - E(fragments) / mHa")
    else:
        ax_e.set_ylabel("E / Ha")
    ax_e.legend()
    ax_e.set_title("dm21 scan" + ("" if not any(not r["converged"] for r in report.records)
                                  else " (x: not converged)"))
    ax_q.set_xlabel(coordinate.axis)
    ax_q.set_ylabel("Mulliken charge of the moving fragment / e")
    ax_q.axhline(0.0, color="grey", linewidth=0.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def render_table_text(report: ScanReport, coordinate: Coordinate = COORDINATES["distance"]) -> str:
    """The curve as aligned plain text (one row per point and functional)."""
    from dm21cli.core.units import HARTREE_EV

    if not coordinate.moves_atoms:
        return _fractional_table(report, coordinate)

    head = ["functional", coordinate.short, "E/Ha", "dE/mHa", "q(moving)", "<S^2>", "gap/eV", "cycles", "status"]
    rows = [head]
    for name in dict.fromkeys(r["functional"] for r in report.records):
        rows_f = [r for r in report.records if r["functional"] == name]
        energies = [r["energy_hartree"] for r in rows_f if r["energy_hartree"] is not None]
        limit = (report.references.get(name) or {}).get("limit_energy_hartree")
        zero = limit if limit is not None else (min(energies) if energies else None)
        for r in rows_f:
            e = r["energy_hartree"]

            def f(x, spec):
                return "-" if x is None else format(x, spec)

            rows.append([name, f"{r[coordinate.column]:.3f}", f(e, ".8f"),
                         f(None if e is None or zero is None else (e - zero) * 1000, ".2f"),
                         f(r["charge_moving_fragment"], "+.3f"), f(r["s_squared"], ".3f"),
                         f(None if r["homo_lumo_gap_hartree"] is None
                           else r["homo_lumo_gap_hartree"] * HARTREE_EV, ".2f"),
                         f(r["scf_cycles"], "d"),
                         r["status"] + (" (disk)" if r["reused"] else "")])
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if c in (0, 8) else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    note = ("dE: relative to the separated fragments" if report.references and
            any(v.get("limit_energy_hartree") is not None for v in report.references.values())
            else "dE: relative to the lowest point of each curve")
    return "\n".join(lines) + f"\n{note}"


def _fractional_table(report: ScanReport, coordinate: Coordinate) -> str:
    """Electron-number and fractional-spin scans: one row per point, then one line per curve
    (and segment) with the largest deviation and the curvature."""
    from dm21cli.core.units import HARTREE_EV

    column = coordinate.column
    if report.curves is None:  # (the curve files were not written: --point)
        fractional.deviations(report.records, coordinate.kind, column)
        report.curves = fractional.curves(report.records, coordinate.kind, column)

    def f(x, spec):
        return "-" if x is None else format(x, spec)

    head = ["functional", coordinate.short, "E/Ha", "dev/mHa", "alpha", "beta", "gap/eV", "cycles",
            "status"]
    rows = [head]
    for r in report.records:
        rows.append([r["functional"], f"{r[column]:.3f}", f(r["energy_hartree"], ".8f"),
                     f(r["deviation_mhartree"], ".3f"), f(r.get("alpha_electrons"), ".3f"),
                     f(r.get("beta_electrons"), ".3f"),
                     f(None if r["homo_lumo_gap_hartree"] is None
                       else r["homo_lumo_gap_hartree"] * HARTREE_EV, ".2f"),
                     f(r["scf_cycles"], "d"), r["status"] + (" (disk)" if r["reused"] else "")])
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) if c in (0, 8) else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    sym = "N" if coordinate.kind == "electrons" else "f"
    for name, curve in (report.curves or {}).items():
        for seg in curve["segments"]:
            where = "" if seg["at"] is None else f" at {sym} = {seg['at']:.3f}"
            lines.append(f"{name} {sym} = {seg['from']:g} to {seg['to']:g}: largest deviation "
                         f"{f(seg['max_deviation_mhartree'], '+.3f')} mHa{where}, curvature "
                         f"d2E/d{sym}2 {f(seg['curvature_hartree'], '+.4f')} Ha")
    note = ("dev: E minus the straight line between the integer-N energies of the same functional "
            "(exact: 0)" if coordinate.kind == "electrons"
            else "dev: E minus the f = 0 energy of the same functional (exact: 0)")
    return "\n".join(lines) + f"\n{note}"
