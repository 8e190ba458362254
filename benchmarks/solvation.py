"""Solvation energies in water, DM21 and B3LYP side by side (docs/howto/solvent.md).

    python benchmarks/solvation.py                     # the five molecules, IEF-PCM and SMD
    python benchmarks/solvation.py --molecules water,acetate --models IEF-PCM

Each molecule at one fixed geometry (below, Angstrom; no relaxation in the solvent: vertical
solvation), def2-SVP, grid level 3, each functional's default SCF settings: the gas-phase
energy and the energy in water with each model, every one through ``dm21 run``'s own
single point (`dm21cli.jobs.point.compute_point`).  Prints, per molecule and functional,
E(water) - E(gas) in kcal/mol (with SMD that includes its cavity-dispersion-solvent-
structure term: SMD's estimate of the solvation free energy) and IEF-PCM's polarisation
energy 1/2 q.V; writes JSON (default benchmarks/results/<date>-solvation.json).  Times are
not measured.  About 10 minutes on one core.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
from pathlib import Path

from dm21cli.core.units import HARTREE_KCAL_MOL as HARTREE_KCAL

#: (charge, atoms in Angstrom): water's experimental geometry, methanol's (CCCBDB-like),
#: acetate and ammonium built from standard bond lengths and angles, NaCl at its
#: experimental r_e (2.3609 A, rounded)
MOLECULES = {
    "water": (0, "O 0.0 0.0 0.1173\nH 0.0 0.7572 -0.4692\nH 0.0 -0.7572 -0.4692\n"),
    "methanol": (0, ("C -0.04652 0.66285 0.0\nO -0.04652 -0.75415 0.0\nH -1.08606 0.97519 0.0\n"
                    "H 0.43779 1.07178 0.8894\nH 0.43779 1.07178 -0.8894\nH 0.8652 -1.0418 0.0\n")),
    "acetate": (-1, ("C 0.0 0.0 0.0\nC 1.54 0.0 0.0\nO 2.15 1.10 0.0\nO 2.15 -1.10 0.0\n"
                    "H -0.38 1.03 0.0\nH -0.38 -0.51 0.89\nH -0.38 -0.51 -0.89\n")),
    "ammonium": (1, ("N 0.0 0.0 0.0\nH 0.5947 0.5947 0.5947\nH -0.5947 -0.5947 0.5947\n"
                    "H -0.5947 0.5947 -0.5947\nH 0.5947 -0.5947 -0.5947\n")),
    "NaCl": (0, "Na 0.0 0.0 0.0\nCl 0.0 0.0 2.36\n"),
}


def energy(name: str, functional: str, model: str | None, networks: dict) -> dict:
    """The single point of molecule `name` in the gas phase (model None) or in water."""
    from dm21cli.io.inputs.load import load_job_data
    from dm21cli.jobs.build import build_molecule, load_network
    from dm21cli.jobs.point import compute_point

    charge, xyz = MOLECULES[name]
    data = {"molecule": {"xyz": xyz, "charge": charge}, "basis": "def2-svp",
            "functional": functional}
    if model is not None:
        data["solvent"] = {"model": model, "name": "water"}
    spec = load_job_data(data)
    if spec.is_dm21 and functional not in networks:
        networks[functional] = load_network(spec)
    point = compute_point(spec, build_molecule(spec), network=networks.get(functional),
                          memory_mb=4000, log=lambda line: None)
    if not point.converged:
        raise SystemExit(f"{name} {functional} {model or 'gas'}: {point.failure}")
    props = point.props
    record = {"energy_hartree": point.energy_hartree,
              "polarization_hartree": props.get("solvent_polarization_energy"),
              "cds_hartree": props.get("solvent_cds_energy"),
              "dm21_evaluations": props.get("dm21_evaluations")}
    del point
    gc.collect()  # the SCF's caches go before the next point sizes its own (as dm21 opt does)
    return record


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", default=",".join(MOLECULES))
    parser.add_argument("--functionals", default="DM21,B3LYP")
    parser.add_argument("--models", default="IEF-PCM,SMD")
    parser.add_argument("--json", default=None, metavar="FILE")
    args = parser.parse_args(argv)
    molecules = args.molecules.split(",")
    functionals = args.functionals.split(",")
    models = args.models.split(",")
    networks: dict = {}
    rows = []
    for name in molecules:
        for functional in functionals:
            gas = energy(name, functional, None, networks)
            row = {"molecule": name, "functional": functional, "gas": gas}
            for model in models:
                water = energy(name, functional, model, networks)
                water["solvation_kcal_mol"] = (water["energy_hartree"]
                                               - gas["energy_hartree"]) * HARTREE_KCAL
                row[model] = water
            rows.append(row)
            print(f"{name:10s} {functional:6s} " + "  ".join(
                f"{model} {row[model]['solvation_kcal_mol']:8.2f} kcal/mol "
                f"(E_pol {row[model]['polarization_hartree'] * HARTREE_KCAL:8.2f})"
                for model in models), flush=True)
    print()
    header = " | ".join(f"{f} {m}" for m in models for f in functionals)
    print(f"| molecule | {header} |")
    print("|---" * (1 + len(models) * len(functionals)) + "|")
    for name in molecules:
        cells = []
        for model in models:
            for functional in functionals:
                row = next(r for r in rows if r["molecule"] == name and r["functional"] == functional)
                cells.append(f"{row[model]['solvation_kcal_mol']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    out = Path(args.json) if args.json else (Path(__file__).resolve().parent / "results" /
                                             f"{datetime.date.today():%Y%m%d}-solvation.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    import pyscf

    out.write_text(json.dumps({"pyscf": pyscf.__version__, "basis": "def2-svp", "grid_level": 3,
                               "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
