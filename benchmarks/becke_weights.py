"""The Becke weights' derivatives of the gradient's grid response: the compiled kernel
(_beckegrid.c, natm^2 switching functions per point) against PySCF's
VXCbecke_weight_derivative (natm^3), on the same points in the same process.

    python benchmarks/becke_weights.py [water benzene water8 water16] [--every 10] [--json FILE]

Each system's default grid (level 3, PySCF's Treutler size adjustment), every `every`-th point;
both routines use the threads PySCF is allowed.  Prints the seconds of each, their ratio and
the largest difference relative to the largest derivative; writes JSON (default
benchmarks/results/<date>-becke-weights.json).  In a DM21 gradient the weights' derivatives
are taken at the points the density reaches (about all of them for these molecules).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import WATER, benzene, water_cluster  # noqa: E402

SYSTEMS = {"water": lambda: WATER, "benzene": benzene, "water8": lambda: water_cluster(8),
           "water16": lambda: water_cluster(16)}


def measure(name: str, every: int) -> dict:
    import numpy as np
    from pyscf import dft, gto, lib

    from dm21cli.functional import kernels, xc_grad

    if not kernels.available():
        raise SystemExit(f"the compiled kernels are not in use: {kernels.status().reason}")
    mol = gto.M(atom=[(s, (x, y, z)) for s, x, y, z in SYSTEMS[name]()], basis="sto-3g")
    grids = dft.gen_grid.Grids(mol)
    grids.level = 3
    grids.build()
    points = np.arange(0, len(grids.coords), every)
    args = tuple(np.ascontiguousarray(a) for a in (
        grids.coords[points], grids.quadrature_weights[points],
        grids.atm_idx[points].astype(np.int32), mol.atom_coords()))
    table = xc_grad.becke_adjust_table(mol, grids)
    t0 = time.perf_counter()
    ref = xc_grad._pyscf_becke_derivatives(*args, table)
    t1 = time.perf_counter()
    got = kernels.becke_weight_derivatives(*args, table)
    t2 = time.perf_counter()
    return {"system": name, "atoms": mol.natm, "grid_points": len(grids.coords),
            "points": len(points), "threads": lib.num_threads(),
            "pyscf_s": t1 - t0, "kernel_s": t2 - t1, "ratio": (t1 - t0) / (t2 - t1),
            "max_relative_difference": float(np.abs(got - ref).max() / np.abs(ref).max())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("systems", nargs="*", default=list(SYSTEMS))
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.systems:
        row = measure(name, args.every)
        rows.append(row)
        print(f"{name}: {row['atoms']} atoms, {row['points']} of {row['grid_points']} points: "
              f"PySCF {row['pyscf_s']:.2f} s, kernel {row['kernel_s']:.3f} s, "
              f"{row['ratio']:.1f} x; largest difference {row['max_relative_difference']:.1e} "
              f"of the largest derivative", flush=True)
    out = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / (
        f"{datetime.date.today():%Y%m%d}-becke-weights.json")
    out.write_text(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "cpu_count": os.cpu_count(), "every": args.every, "rows": rows},
                              indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
