"""DM21 vs B3LYP cost, side by side in the same process.

    python benchmarks/speed.py --quick            # a few minutes
    python benchmarks/speed.py --full             # all sizes: (H2O)n n = 1, 2, 4, 8, benzene,
                                                  # caffeine, (H2O)16, default budgets: hours
    python benchmarks/speed.py --case water-tzvp  # one system

Each system runs in its own subprocess (so peak memory is its own): first the
B3LYP job, then the DM21 job (B3LYP warm start included), both through
`dm21cli.jobs.run.run_job` with the same basis and grid, as `dm21 run` does;
`--repeat N` (default 3) runs them N times in turn and keeps each job's
fastest run, because single short runs on a shared VM scatter widely.
It records wall and CPU time per phase, SCF cycles, energies, peak memory,
grid points and basis size, and checks the fast DM21 path against the plain
one (integrals recomputed, one thread, no screening) on the converged density.
A third job (skip with --no-precision-check) runs DM21 with float64 SCF
cycles: the default's mixed-precision total energy is compared with it.
Peak memory is the process's high-water mark after each job.  Then both jobs
run once more as whole `dm21 run` processes (start-up and imports included, as
a user runs them), each with its own peak memory (skip with --no-process).
Cases with a memory budget (caffeine-svp-8GB, water16-svp-16GB) give it to both
jobs as `resources.memory`.  Results go to a JSON file; a table of DM21/B3LYP
ratios is printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WATER = [("O", 0.0, 0.0, 0.1173), ("H", 0.0, 0.7572, -0.4692), ("H", 0.0, -0.7572, -0.4692)]
METHANE = [("C", 0.0, 0.0, 0.0), ("H", 0.6276, 0.6276, 0.6276), ("H", -0.6276, -0.6276, 0.6276),
           ("H", -0.6276, 0.6276, -0.6276), ("H", 0.6276, -0.6276, -0.6276)]


def benzene():
    import math

    atoms = []
    for k in range(6):
        a = math.pi / 3 * k
        atoms.append(("C", 1.3970 * math.cos(a), 1.3970 * math.sin(a), 0.0))
        atoms.append(("H", 2.4810 * math.cos(a), 2.4810 * math.sin(a), 0.0))
    return atoms


def water_cluster(n: int):
    """n water molecules on a cubic lattice 3.0 Angstrom apart (cost scaling only)."""
    atoms = []
    side = max(1, round(n ** (1 / 3) + 0.49))
    for i in range(n):
        x, y, z = i % side, (i // side) % side, i // (side * side)
        atoms += [(s, ax + 3.0 * x, ay + 3.0 * y, az + 3.0 * z) for s, ax, ay, az in WATER]
    return atoms


#: Caffeine (C8H10N4O2): RDKit's ETKDG conformer (random seed 7) of
#: CN1C=NC2=C1C(=O)N(C(=O)N2C)C relaxed with MMFF94, Angstrom (a drug-sized test of cost).
CAFFEINE = [
    ("C", 3.3240, 0.0586, -0.2341), ("N", 2.0576, -0.6273, -0.1930), ("C", 1.8677, -1.9814, -0.2775),
    ("N", 0.5898, -2.2984, -0.2089), ("C", -0.0493, -1.1027, -0.0764), ("C", 0.8236, -0.0575, -0.0632),
    ("C", 0.4145, 1.2974, 0.0644), ("O", 1.2096, 2.2324, 0.0753), ("N", -0.9723, 1.4358, 0.1738),
    ("C", -1.9078, 0.3797, 0.1643), ("O", -3.1177, 0.6035, 0.2673), ("N", -1.4057, -0.9156, 0.0344),
    ("C", -2.3013, -2.0577, 0.0157), ("C", -1.5170, 2.7725, 0.3099), ("H", 4.1303, -0.6709, -0.3448),
    ("H", 3.3235, 0.7394, -1.0890), ("H", 3.4519, 0.6097, 0.7009), ("H", 2.6840, -2.6844, -0.3870),
    ("H", -3.3478, -1.7571, 0.1125), ("H", -2.0503, -2.7222, 0.8485), ("H", -2.1779, -2.5931, -0.9311),
    ("H", -2.2066, 2.9616, -0.5194), ("H", -2.0793, 2.8336, 1.2475), ("H", -0.7434, 3.5442, 0.3100),
]

#: name -> (atoms, basis, memory budget or None for the default)
CASES = {
    "water-svp": (WATER, "def2-svp", None),
    "water-tzvp": (WATER, "def2-tzvp", None),
    "methane-tzvp": (METHANE, "def2-tzvp", None),
    "benzene-svp": (benzene(), "def2-svp", None),
    "benzene-svp-3500MB": (benzene(), "def2-svp", "3500MB"),
    "caffeine-svp": (CAFFEINE, "def2-svp", None),
    "caffeine-svp-8GB": (CAFFEINE, "def2-svp", "8GB"),
    **{f"water{n}-svp": (water_cluster(n), "def2-svp", None) for n in range(2, 9)},
    # issue 24: the default settings, no budget given (before screening it needed 16GB by hand)
    "water16-svp": (water_cluster(16), "def2-svp", None),
    "water16-svp-16GB": (water_cluster(16), "def2-svp", "16GB"),
}
QUICK = ["water-svp", "water-tzvp", "water2-svp"]
FULL = ["water-svp", "water-tzvp", "methane-tzvp", "benzene-svp", "benzene-svp-3500MB", "water2-svp",
        "water4-svp", "water8-svp", "caffeine-svp", "water16-svp"]


def _job(folder: Path, name: str, functional: str, precision: str | None = None) -> Path:
    atoms, basis, memory = CASES[name]
    xyz = "\n".join(f"    {s} {x:.6f} {y:.6f} {z:.6f}" for s, x, y, z in atoms)
    path = folder / f"{name}-{functional}.yaml"
    path.write_text(textwrap.dedent("""\
        molecule:
          xyz: |
        {xyz}
        basis: {basis}
        functional: {functional}
        outputs: {{molden: false}}
        """).format(xyz=xyz, basis=basis, functional=functional))
    if precision:
        path.write_text(path.read_text() + f"scf: {{precision: {precision}}}\n")
    if memory:
        path.write_text(path.read_text() + f"resources: {{memory: {memory}}}\n")
    return path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(name: str, checkpoints: str | None, precision_check: bool = True, repeat: int = 1,
             plain_check: bool = True) -> dict:
    """Both jobs of one system in this process; returns the measurements.

    With precision_check, a third job runs DM21 with float64 SCF cycles, the
    reference for the default mixed-precision energy.  repeat: the jobs run
    this many times, in turn (B3LYP, DM21, B3LYP, ...); each job reports its
    fastest run (all wall times are in 'wall_s_runs'), since on a shared
    virtual machine a single short job varies by a factor up to 1.9.
    """
    import numpy as np

    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.run import run_job

    out: dict = {"case": name, "basis": CASES[name][1], "atoms": len(CASES[name][0]),
                 "memory_budget": CASES[name][2]}
    runs = [("b3lyp", "b3lyp", None), ("dm21", "DM21", None)]
    if precision_check:
        runs.append(("dm21_float64", "DM21", "float64"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep, (key, functional, precision) in itertools.product(range(repeat), runs):
            outdir = tmp / f"{key}-{rep}"
            spec = load_job(_job(tmp, name, functional, precision), {"output_dir": str(outdir)})
            wall0, cpu0 = time.perf_counter(), time.process_time()
            result = fields(run_job(spec, checkpoints=checkpoints))  # dm21cli's layout
            wall = time.perf_counter() - wall0
            props = result["properties"]
            if rep:
                out[key]["wall_s_runs"].append(wall)
                if wall < out[key]["wall_s"]:
                    out[key].update(wall_s=wall, cpu_s=time.process_time() - cpu0, phases_s=result["timings_s"],
                                    dm21_phases_s=props.get("dm21_timings_s"))
                continue
            out[key] = {
                "wall_s": wall,
                "wall_s_runs": [wall],
                "cpu_s": time.process_time() - cpu0,
                "energy_hartree": result["return_energy"],
                "converged": result["converged"],
                "precision": spec.scf.precision if functional == "DM21" else None,
                "scf_cycles": props["scf_iterations"],
                "phases_s": result["timings_s"],
                "dm21_phases_s": props.get("dm21_timings_s"),
                "dm21_evaluations": props.get("dm21_evaluations"),
                "dm21_exchange_integrals": props.get("dm21_exchange_integrals"),
                "dm21_final_energy": props.get("dm21_final_energy"),
                "peak_memory_mb": _peak_mb(),
                "grid_points": props["grid_points"],
                "nao": props["nao"],
            }
            if key == "dm21" and plain_check:
                out["dm21"]["fast_vs_plain"] = _fast_vs_plain(spec, outdir, checkpoints, np)
    out["ratio_wall"] = out["dm21"]["wall_s"] / out["b3lyp"]["wall_s"]
    if precision_check:
        out["energy_mixed_minus_float64_hartree"] = (out["dm21"]["energy_hartree"]
                                                     - out["dm21_float64"]["energy_hartree"])
    return out


def _fast_vs_plain(spec, outdir: Path, checkpoints, np) -> dict:
    """E_xc and V_xc on the converged density: default path vs the plain one.

    Both use the float64 network (the float32 SCF network's effect is in the
    mixed-vs-float64 comparison); the default path stores the integrals as
    the run did.
    """
    from pyscf import lib
    from pyscf.scf import chkfile

    from dm21cli.jobs.build import build_grids, build_molecule, integral_dtype, load_network
    from dm21cli.functional.xc import DM21XC

    mol = build_molecule(spec)
    grids = build_grids(mol, spec).build()
    scf = chkfile.load(str(outdir / "scf.chk"), "scf")
    mo, occ = scf["mo_coeff"], scf["mo_occ"]
    dm = (mo * occ) @ mo.T
    dm_spin = np.stack([dm / 2, dm / 2])
    net = load_network(spec, checkpoints)
    net.workers = lib.num_threads()
    fast = DM21XC(net, integral_dtype=integral_dtype(spec)).evaluate(mol, grids, dm_spin, True)
    plain_net = load_network(spec, checkpoints)
    # plain: integrals recomputed per block, one thread, no density screening of the grid
    # points (rho_screen), of the shell pairs (backends.FEATURE_SCREEN) or of the orbitals
    # in the density and potential products (ao_screen)
    from dm21cli.functional import backends

    screen, backends.FEATURE_SCREEN = backends.FEATURE_SCREEN, 0.0
    try:
        plain_xc = DM21XC(plain_net, max_memory_mb=1, rho_screen=0.0, cache_bytes=0)
        plain_xc.ao_screen = 0.0
        plain = plain_xc.evaluate(mol, grids, dm_spin, True)
    finally:
        backends.FEATURE_SCREEN = screen
    return {"exc_difference_hartree": float(fast[1] - plain[1]),
            "vxc_max_difference_hartree": float(np.abs(fast[2] - plain[2]).max())}


def _process_runs(name: str, checkpoints: str | None) -> dict:
    """B3LYP, then DM21, each as one whole `dm21 run` process (start-up and imports
    included): wall time and the process's own peak memory (os.wait4's ru_maxrss)."""
    out: dict = {}
    env = dict(os.environ)
    if checkpoints:
        env["DM21_CHECKPOINTS"] = checkpoints
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key, functional in (("b3lyp", "b3lyp"), ("dm21", "DM21")):
            job = _job(tmp, name, functional)
            cmd = [sys.executable, "-m", "dm21cli", "run", str(job), "-o", str(tmp / key)]
            err_path = tmp / f"{key}.stderr"  # a file, not a pipe: nothing blocks a long run
            with open(err_path, "wb") as err:
                t0 = time.perf_counter()
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
                _, status, usage = os.wait4(proc.pid, 0)  # its own rusage: its own peak memory
                wall = time.perf_counter() - t0
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                text = err_path.read_text(errors="replace")
                raise RuntimeError(f"{name} {functional}: dm21 run exited {code}\n{text[-2000:]}")
            out[key] = {"wall_s": wall, "peak_memory_mb": usage.ru_maxrss / 1024.0}
    out["ratio_wall"] = out["dm21"]["wall_s"] / out["b3lyp"]["wall_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help=f"cases {', '.join(QUICK)} (default)")
    group.add_argument("--full", action="store_true", help=f"cases {', '.join(FULL)}")
    group.add_argument("--case", action="append", choices=sorted(CASES), help="run these cases")
    parser.add_argument("--checkpoints", default=os.environ.get("DM21_CHECKPOINTS"))
    parser.add_argument("--no-precision-check", action="store_true",
                        help="skip the third job (DM21 with float64 SCF cycles)")
    parser.add_argument("--no-plain-check", action="store_true",
                        help="skip checking the fast DM21 path against the plain one (for large "
                             "cases: the plain path recomputes every integral on one thread)")
    parser.add_argument("--no-process", action="store_true",
                        help="skip the whole-process `dm21 run` measurement")
    parser.add_argument("--repeat", type=int, default=3,
                        help="run each job this many times and report the fastest (default 3)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/<date>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:  # one system, in this (sub)process, tuned as `dm21 run` is
        from dm21cli.core.resources import settle_blas_threads, tune_allocator

        settle_blas_threads()  # NumPy is not imported yet in this process

        tune_allocator()
        print(json.dumps(run_case(args.worker, args.checkpoints, not args.no_precision_check,
                                  max(1, args.repeat), not args.no_plain_check)))
        return

    cases = args.case or (FULL if args.full else QUICK)
    results = []
    for name in cases:
        cmd = [sys.executable, __file__, "--worker", name]
        if args.checkpoints:
            cmd += ["--checkpoints", args.checkpoints]
        if args.no_precision_check:
            cmd.append("--no-precision-check")
        if args.no_plain_check:
            cmd.append("--no-plain-check")
        cmd += ["--repeat", str(args.repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not args.no_process:
            results[-1]["process"] = _process_runs(name, args.checkpoints)
        _print_row(results[-1])
    import platform

    report = {"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
              "cpus": len(os.sched_getaffinity(0)), "repeat": args.repeat, "cases": results}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten {out}")


def _print_row(r: dict) -> None:
    d, b = r["dm21"], r["b3lyp"]
    phases = d.get("dm21_phases_s") or {}
    print(f"{r['case']:<14} nao {d['nao']:>4}  grid {d['grid_points']:>7}  "
          f"B3LYP {b['wall_s']:7.2f} s  DM21 {d['wall_s']:7.2f} s  ratio {r['ratio_wall']:5.1f}x  "
          f"DM21 cycles {d['scf_cycles']:>3}  evals {d['dm21_evaluations']:>3}  "
          f"peak {d['peak_memory_mb']:7.0f} MB"
          + (f"  |dExc fast-plain| {abs(d['fast_vs_plain']['exc_difference_hartree']):.1e}"
             if "fast_vs_plain" in d else "")
          + (f"  |dE mixed-float64| {abs(r['energy_mixed_minus_float64_hartree']):.1e}"
             if "energy_mixed_minus_float64_hartree" in r else ""))
    if "process" in r:
        p = r["process"]
        print(f"               whole dm21 run processes: B3LYP {p['b3lyp']['wall_s']:.2f} s "
              f"({p['b3lyp']['peak_memory_mb']:.0f} MB), DM21 {p['dm21']['wall_s']:.2f} s "
              f"({p['dm21']['peak_memory_mb']:.0f} MB), ratio {p['ratio_wall']:.1f}x"
              + (f", budget {r['memory_budget']}" if r.get("memory_budget") else ""))
    if phases:
        print("               phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))


if __name__ == "__main__":
    main()
