"""Harmonic wavenumbers of diatomics: ``dm21 opt --freq`` against a fit of single points.

    python benchmarks/freq_diatomics.py [CO N2 HF LiH] [--functional DM21] [--basis def2-svp]
                                        [--json FILE]

For each molecule, in one process and through the library (the code ``dm21 opt --freq``
runs): the geometry optimisation (geomeTRIC, GAU_TIGHT), the Hessian by central
differences of analytic gradients at the optimised bond length and its wavenumber; then
single points at r_e + k delta (k = -4 .. 4, delta = 0.005 A) and the harmonic wavenumber
of least-squares polynomials through them, omega = sqrt(E''(r_e) / mu) with mu the
reduced mass of the most abundant isotopes (`fit_wavenumber`: its uncertainty combines
the fit's statistical error, from DM21's energy noise, with the spread over polynomial
degrees and point sets).  --refit FILE recomputes the fits of a results file.  Writes JSON (default benchmarks/results/<date>-freq-diatomics.json) and prints a
table.  Not a timing: the numbers are the same on any machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import textwrap
from pathlib import Path

import numpy as np

#: a starting bond length (Angstrom) and the multiplicity of each molecule
MOLECULES = {"CO": (1.13, 1), "N2": (1.10, 1), "HF": (0.92, 1), "LiH": (1.60, 1),
             "H2": (0.74, 1)}
DELTA_ANGSTROM = 0.005
POINTS = range(-4, 5)


def _job(folder: Path, name: str, r_angstrom: float, functional: str, basis: str,
         task: str) -> Path:
    symbols = {"CO": ("C", "O"), "N2": ("N", "N"), "HF": ("H", "F"), "LiH": ("Li", "H"),
               "H2": ("H", "H")}[name]
    path = folder / f"{name}-{task}-{r_angstrom:.6f}.yaml"
    path.write_text(textwrap.dedent(f"""\
        molecule:
          xyz: |
            {symbols[0]} 0 0 0
            {symbols[1]} 0 0 {r_angstrom!r}
        basis: {basis}
        functional: {functional}
        outputs: {{molden: false}}
        opt: {{convergence_set: GAU_TIGHT}}
        job: {{task: {task}}}
        """))
    return path


def measure(name: str, functional: str, basis: str, checkpoints=None) -> dict:
    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.freq.plan import freq_spec_at
    from dm21cli.jobs.freq import plan_freq, run_freq
    from dm21cli.jobs.opt import run_opt
    from dm21cli.jobs.run import run_job
    from dm21cli.core.units import BOHR_ANGSTROM

    r0, _ = MOLECULES[name]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = load_job(_job(folder, name, r0, functional, basis, "opt"),
                        {"output_dir": str(folder / "opt")})
        optimised = fields(run_opt(spec, checkpoints=checkpoints))
        coords = np.asarray(optimised["molecule"]["geometry_bohr"], dtype=float)
        r_e = float(np.linalg.norm(coords[1] - coords[0])) * BOHR_ANGSTROM
        freq = fields(run_freq(plan_freq(freq_spec_at(spec, coords, folder / "freq")),
                               checkpoints=checkpoints))
        vib = freq["vibrations"]
        energies = []
        for k in POINTS:
            point = load_job(_job(folder, name, r_e + k * DELTA_ANGSTROM, functional, basis,
                                  "energy"), {"output_dir": str(folder / f"sp{k:+d}")})
            point.scf.conv_tol = 1e-10
            energies.append(fields(run_job(point, checkpoints=checkpoints))["return_energy"])
    fit = fit_wavenumber(optimised["molecule"]["symbols"], energies)
    return {"molecule": name, "functional": functional, "basis": basis,
            "r_e_angstrom": r_e, "opt_steps": len(optimised["optimization"]["history"]),
            "freq_wavenumber_cm1": vib["wavenumbers_cm1"][0], **fit,
            "single_points_hartree": [float(v) for v in energies], "delta_angstrom": DELTA_ANGSTROM,
            "hessian_asymmetry_hartree_bohr2": vib["hessian_asymmetry_hartree_bohr2"],
            "stationary": vib["stationarity"]["ok"]}


def fit_wavenumber(symbols, energies_hartree) -> dict:
    """The harmonic wavenumber (cm^-1) of E(r) sampled at r_e + k DELTA_ANGSTROM (k in POINTS)
    and its uncertainty: the mean over polynomials of degree 4, 5 and 6 through all nine and
    the inner seven points; the uncertainty combines the statistical error of E''(r_e) in the
    degree-4 fit of nine points (the residuals measure DM21's energy noise, ~3e-7 Ha) with
    half the spread over the fits (the model's)."""
    from dm21cli.core.units import BOHR_ANGSTROM, ELECTRON_MASS_AMU, WAVENUMBER_HARTREE
    from dm21cli.vib.masses import default_masses_amu

    m = default_masses_amu(list(symbols))
    mu_me = m[0] * m[1] / (m[0] + m[1]) / ELECTRON_MASS_AMU
    x = np.array(list(POINTS)) * DELTA_ANGSTROM / BOHR_ANGSTROM  # bohr from r_e
    e = np.asarray(energies_hartree, dtype=float)
    e = e - e.mean()
    waves = []
    for lo in (0, 1):  # all nine points; the inner seven
        xs, es = x[lo:len(x) - lo], e[lo:len(e) - lo]
        for degree in (4, 5, 6):
            if degree < len(xs):
                coef = np.polynomial.polynomial.polyfit(xs, es, degree)
                waves.append(float(np.sqrt(2.0 * coef[2] / mu_me) / WAVENUMBER_HARTREE))
    design = np.vander(x, 5, increasing=True)
    coef, *_ = np.linalg.lstsq(design, e, rcond=None)
    residual = e - design @ coef
    variance = residual @ residual / (len(x) - 5)
    sigma_k = 2.0 * np.sqrt(variance * np.linalg.inv(design.T @ design)[2, 2])
    w4 = np.sqrt(2.0 * coef[2] / mu_me) / WAVENUMBER_HARTREE
    statistical = w4 * sigma_k / (2.0 * 2.0 * coef[2])  # d omega = omega dk / 2k
    spread = (max(waves) - min(waves)) / 2
    return {"fit_wavenumber_cm1": float(np.mean(waves)),
            "fit_uncertainty_cm1": float(np.hypot(statistical, spread)),
            "fit_statistical_cm1": float(statistical), "fit_spread_cm1": float(spread),
            "fit_wavenumbers_cm1": waves, "fit_residual_rms_hartree": float(np.sqrt(variance))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("molecules", nargs="*", default=["CO", "N2", "HF", "LiH"])
    parser.add_argument("--functional", default="DM21")
    parser.add_argument("--basis", default="def2-svp")
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--refit", default=None, metavar="FILE",
                        help="recompute the fits of a results file (and write it again)")
    args = parser.parse_args(argv)
    if args.refit:
        data = json.loads(Path(args.refit).read_text())
        for row in data["rows"]:
            symbols = {"CO": "CO", "N2": "NN", "HF": "HF", "LiH": ["Li", "H"],
                       "H2": "HH"}[row["molecule"]]
            row.update(fit_wavenumber(list(symbols), row["single_points_hartree"]))
            _print(row)
        Path(args.refit).write_text(json.dumps(data, indent=2) + "\n")
        return
    rows = []
    for name in args.molecules:
        row = measure(name, args.functional, args.basis, args.checkpoints)
        rows.append(row)
        _print(row)
    out = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / (
        f"{datetime.date.today():%Y%m%d}-freq-diatomics-{args.functional.lower()}.json")
    out.write_text(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "rows": rows}, indent=2) + "\n")
    print(f"written {out}")


def _print(row: dict) -> None:
    print(f"{row['molecule']:4s} r_e {row['r_e_angstrom']:.4f} A  freq "
          f"{row['freq_wavenumber_cm1']:8.1f}  fit {row['fit_wavenumber_cm1']:8.1f} +- "
          f"{row['fit_uncertainty_cm1']:.1f} cm^-1  difference "
          f"{row['freq_wavenumber_cm1'] - row['fit_wavenumber_cm1']:+.1f}", flush=True)


if __name__ == "__main__":
    main()
