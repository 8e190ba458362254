"""NaCl's dissociation in water against the gas phase: the curves and the charge on Cl.

    python benchmarks/nacl_water.py [--water DIR --gas DIR] [--out PREFIX]

Runs ``dm21 scan inputs/nacl-water.yaml`` (IEF-PCM water) and the same scan with
``--solvent none`` (the gas phase, against the same separated ions Na+ and Cl-), each in a
folder of its own (or reads two finished scans: --water, --gas), and plots from their own
output (scan.csv): E - E(Na+) - E(Cl-) in mHa and the Mulliken charge on Cl against the
distance, DM21 and B3LYP, water and gas.  Writes PREFIX.png and PREFIX.json (default
benchmarks/results/<date>-nacl-water).  Not a timing: nothing here is timed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "inputs" / "nacl-water.yaml"


def _scan(folder: Path, *extra: str) -> Path:
    proc = subprocess.run([sys.executable, "-m", "dm21cli", "scan", str(JOB), "-o", str(folder),
                           *extra], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"dm21 scan {' '.join(extra)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return folder


def read_curves(folder: Path) -> dict[str, list[dict]]:
    """{functional: [{"distance_angstrom", "binding_mhartree", "q_cl"}]} from scan.csv
    (relative_energy_hartree is against the separated ions; the moving fragment is Cl)."""
    curves: dict[str, list[dict]] = {}
    with open(folder / "scan.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["converged"] != "True":
                raise SystemExit(f"{folder}: the point at {row['distance_angstrom']} A did not converge")
            curves.setdefault(row["functional"], []).append({
                "distance_angstrom": float(row["distance_angstrom"]),
                "binding_mhartree": 1000 * float(row["relative_energy_hartree"]),
                "q_cl": float(row["charge_moving_fragment"])})
    return curves


def plot(water: dict, gas: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 7.2), sharex=True)
    styles = {"DM21": "C0", "B3LYP": "C3"}
    for phase, curves, line in (("water (IEF-PCM)", water, "-"), ("gas phase", gas, "--")):
        for functional, points in curves.items():
            r = [p["distance_angstrom"] for p in points]
            top.plot(r, [p["binding_mhartree"] for p in points], line, marker="o", ms=3,
                     color=styles.get(functional), label=f"{functional}, {phase}")
            bottom.plot(r, [p["q_cl"] for p in points], line, marker="o", ms=3,
                        color=styles.get(functional), label=f"{functional}, {phase}")
    top.axhline(0, color="grey", lw=0.5)
    top.set_ylabel("E - E(Na+) - E(Cl-) / mHa")
    top.set_title("NaCl, def2-SVP: the ion pair in water and in the gas phase")
    top.legend(fontsize=8)
    bottom.axhline(-1, color="grey", lw=0.5)
    bottom.set_ylabel("Mulliken charge on Cl")
    bottom.set_xlabel("Na-Cl distance / Angstrom")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--water", type=Path, help="a finished scan of inputs/nacl-water.yaml")
    parser.add_argument("--gas", type=Path, help="the same with --solvent none")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        f"{datetime.date.today():%Y%m%d}-nacl-water")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        water_dir = args.water or _scan(Path(tmp) / "water")
        gas_dir = args.gas or _scan(Path(tmp) / "gas", "--solvent", "none")
        water, gas = read_curves(water_dir), read_curves(gas_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(water, gas, args.out.with_suffix(".png"))
    document = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                "job": str(JOB.relative_to(ROOT)), "water": water, "gas": gas}
    args.out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    for phase, curves in (("water", water), ("gas", gas)):
        for functional, points in curves.items():
            low = min(points, key=lambda p: p["binding_mhartree"])
            last = points[-1]
            print(f"{phase:5} {functional:6} minimum {low['binding_mhartree']:8.1f} mHa at "
                  f"{low['distance_angstrom']:.1f} A; at {last['distance_angstrom']:.1f} A "
                  f"{last['binding_mhartree']:8.1f} mHa, q(Cl) {last['q_cl']:+.2f}")
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
