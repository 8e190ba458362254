"""The frozen-XC inner SCF's density-fitted model against the direct-SCF one.

    python benchmarks/frozen_xc_fit.py water16-svp [--models fitted,direct] [--json FILE]

Where a molecule's two-electron integrals do not fit in memory, the inner SCF of
DM21's frozen-XC iterations used the exact Coulomb matrix alone (each inner cycle a
direct-SCF J build), and now uses a density-fitted Coulomb and exchange model
(`dm21cli.scf.escalation.FROZEN_XC_DENSITY_FITTING`).  This runs the case's DM21 job
(benchmarks/speed.py's molecules and inputs, default settings, no budget) once per
model, each in its own process (its own peak memory), through `dm21cli.jobs.run.run_job`
as `dm21 run` does, and records wall and CPU time, DM21 evaluations, energy, peak
memory and the log's frozen-XC lines.  The first model is the reference of the
printed ratios.  Single runs: on a shared machine they scatter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(case: str, model: str) -> dict:
    """The DM21 job of `case` in this process with the inner SCF `model`."""
    import resource

    sys.path.insert(0, str(HERE))
    from speed import _job

    from dm21cli.io.inputs.load import load_job
    from dm21cli.io.outputs.qcschema import fields
    from dm21cli.jobs.run import run_job
    from dm21cli.scf import escalation

    escalation.FROZEN_XC_DENSITY_FITTING = model == "fitted"
    with tempfile.TemporaryDirectory() as tmp:
        outdir = Path(tmp) / "dm21"
        spec = load_job(_job(Path(tmp), case, "DM21"), {"output_dir": str(outdir)})
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = fields(run_job(spec))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        log = (outdir / "dm21.log").read_text(encoding="utf-8").splitlines()
    props = result["properties"]
    return {"model": model, "wall_s": wall, "cpu_s": cpu, "converged": result["converged"],
            "energy_hartree": result["return_energy"],
            "dm21_evaluations": props.get("dm21_evaluations"),
            "timings_s": result["timings_s"], "dm21_timings_s": props.get("dm21_timings_s"),
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "frozen_xc_log": [line for line in log if "frozen-XC" in line or "inner SCF" in line]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case of benchmarks/speed.py (e.g. water16-svp)")
    parser.add_argument("--models", default="fitted,direct")
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_one(*args.worker)))
        return
    out = Path(args.json or HERE / "results" / f"{time.strftime('%Y%m%d')}-frozen-xc-fit.json")
    runs = []
    for model in args.models.split(","):
        proc = subprocess.run([sys.executable, __file__, args.case, "--worker", args.case, model],
                              capture_output=True, text=True, env=os.environ)
        if proc.returncode:
            sys.exit(f"{model}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "cpu_count": os.cpu_count(), "case": args.case,
                                   "runs": runs}, indent=2))
        r, ref = runs[-1], runs[0]
        print(f"{args.case} {model}: {r['wall_s']:.1f} s wall ({r['wall_s'] / ref['wall_s']:.2f} x "
              f"{ref['model']}), {r['dm21_evaluations']} DM21 evaluations, E = "
              f"{r['energy_hartree']:.9f} Ha ({r['energy_hartree'] - ref['energy_hartree']:+.1e}), "
              f"peak {r['peak_memory_mb']:.0f} MB", flush=True)
        for line in r["frozen_xc_log"]:
            print("   ", line)
    print(f"written {out}")


if __name__ == "__main__":
    main()
