"""Cost of one DM21 nuclear gradient against the single point it follows.

    python benchmarks/gradient_cost.py water-tzvp [benzene-svp] [water16-svp] [--threads N]
                                       [--memory 8GB] [--json FILE]

For each system, in one process: the DM21 single point as `dm21 run` computes
it (runner's build_* functions, B3LYP warm start, SCF with escalation, final
float64 energy; default mixed precision and grid level 3), then the analytic
gradient of the converged SCF without and with grid response.  As in a
`task: gradient` job, the SCF keeps its last exchange features for the
gradient (`DM21XC.keep_features`); its convergence criteria are the energy
job's (a gradient job's are tighter and cost more cycles, so the single point
compared with is the cheaper one).  Wall and CPU seconds of each, and the XC
gradient's phases (`Gradients.timings_s`): the features (AO values, density,
and the exchange features: reused from the SCF's last evaluation when it was at
this density), the float64 network, the AO second derivatives, the meta-GGA
contractions, the derivative integrals (computed and summed to forces by the
compiled kernel), the other exchange terms, the Becke weight derivatives;
"PySCF terms" is the rest (one-electron, Coulomb, overlap).  Single runs: on
a shared machine they scatter (see docs/explanation/performance.md).
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from pathlib import Path

SYSTEMS = {
    "water-tzvp": ("water", "def2-tzvp"),
    "water-svp": ("water", "def2-svp"),
    "benzene-svp": ("benzene", "def2-svp"),
    "water16-svp": ("water16", "def2-svp"),
}


def _xyz(name: str) -> str:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from speed import WATER, benzene, water_cluster

    atoms = {"water": lambda: WATER, "benzene": benzene,
             "water16": lambda: water_cluster(16)}[name]()
    return "\n".join(f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, x, y, z in atoms)


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0):
    w, c = _clock()
    return round(w - t0[0], 3), round(c - t0[1], 3)


def measure(case: str, threads: int, memory: str | None = None, checkpoints=None) -> dict:
    import tempfile

    from dm21cli.core import resources
    from dm21cli.jobs.result import final_dm21_energy
    from dm21cli.jobs.build import build_grids, build_molecule, build_scf, load_network, warm_start
    from dm21cli.io.inputs.load import load_job
    from dm21cli.scf.escalation import run_with_escalation

    molecule, basis = SYSTEMS[case]
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / f"{case}.yaml"
        job.write_text(f"molecule:\n  xyz: |\n{textwrap.indent(_xyz(molecule), '    ')}\n"
                       f"basis: {basis}\nfunctional: DM21\n")
        spec = load_job(job, {"threads": threads, "memory": memory})
    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    resources.apply_threads(res["threads"])
    network = load_network(spec, checkpoints)
    network.workers = res["threads"]
    out = {"case": case, "threads": res["threads"], "memory_mb": res["memory_mb"]}

    t0 = _clock()
    mol = build_molecule(spec, max_memory_mb=res["memory_mb"])
    grids = build_grids(mol, spec)
    mf = build_scf(mol, spec, grids, network, max_memory_mb=res["memory_mb"])
    mf.chkfile = None
    # what build_scf does for `task: gradient` and `opt` jobs: the gradient reuses the last
    # evaluation's exchange features.  The SCF stays the energy job's (its convergence
    # criteria, which gradient jobs tighten): the cheaper single point to compare with.
    mf.dm21.keep_features = True
    dm0, _ = warm_start(mol, spec, grids, res["memory_mb"], lambda msg: None, main=mf)
    converged, _ = run_with_escalation(mf, dm0, max_attempts=spec.scf.max_attempts,
                                       log=lambda msg: None)
    final_dm21_energy(mf, lambda msg: None)
    out["single_point_wall_s"], out["single_point_cpu_s"] = _since(t0)
    out.update(converged=bool(converged), nao=mol.nao_nr(), grid_points=len(grids.weights),
               points_evaluated=mf.dm21.integrals_summary()["points_evaluated"],
               dm21_evaluations=mf.dm21.n_evaluations)

    for response in (False, True):
        g = mf.nuc_grad_method()
        g.grid_response = response
        computed = mf.dm21._integrals.points_computed
        t0 = _clock()
        de = g.kernel()
        wall, cpu = _since(t0)
        phases = {k: round(v, 3) for k, v in g.timings_s.items()}
        key = "with_grid_response" if response else "without_grid_response"
        out[key] = {"wall_s": wall, "cpu_s": cpu, "xc_phases_wall_s": phases,
                    "pyscf_terms_wall_s": round(wall - sum(g.timings_s.values()), 3),
                    "ratio_to_single_point_wall": round(wall / out["single_point_wall_s"], 3),
                    # grid points whose exchange integrals the gradient computed for its features
                    "feature_points_computed": int(mf.dm21._integrals.points_computed - computed),
                    "max_abs_gradient": float(abs(de).max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", choices=sorted(SYSTEMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory", default=None, help="memory budget, e.g. 4GB (default: dm21's)")
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    results = []
    for case in args.cases:
        results.append(measure(case, args.threads, args.memory, args.checkpoints))
        print(json.dumps(results[-1], indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
