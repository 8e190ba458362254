"""The step and the SCF of a Hessian's points: what they do to the wavenumbers and the cost.

    python benchmarks/freq_step.py [water] [benzene] [--steps 0.001,0.0025,0.005,0.01]
                                   [--points 1,2,3,5,7,8] [--json FILE]

water: ``dm21 freq`` (through the library, `dm21cli.jobs.freq.run_freq`) of
inputs/water-freq.yaml (DM21/def2-SVP at its optimised geometry, grid level 3) at each
step with the points' default SCF (DISPLACED_CONV_TOL 1e-10 Ha, DISPLACED_CONV_TOL_GRAD
1e-6, DISPLACED_PRECISION float64); at the default step also with the points' orbital
gradient converged ten times looser (1e-8, 1e-5) and tighter (1e-10, 1e-7), and at the
looser thresholds in a single point's mixed precision (the float32 network in the SCF
cycles): the defaults of dm21cli 0.5.  Wavenumbers, the Hessian's asymmetry (its noise),
the DM21 evaluations per point and how many points needed the escalation ladder after
the frozen-XC iterations.

benzene: the reference and the displaced points `--points` of benzene/def2-SVP's Hessian
(`run_freq(point=k)`), once with dm21cli 0.5's SCF settings (mixed precision, 1e-8 and 1e-5;
the start from the reference's orbitals is this version's) and once with the defaults
(float64, 1e-10 and 1e-6): per point its DM21 evaluations, whether the frozen-XC
iterations converged, wall seconds, and the gradient.

Writes JSON (default benchmarks/results/<date>-freq-step.json).  The wall seconds are
single runs: compare them only within one quiet run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@contextmanager
def points_scf(conv_tol: float, conv_tol_grad: float, precision: str):
    """The Hessian points' SCF settings (dm21cli.jobs.freq.plan's constants) for a while."""
    from dm21cli.jobs.freq import plan

    saved = (plan.DISPLACED_CONV_TOL, plan.DISPLACED_CONV_TOL_GRAD, plan.DISPLACED_PRECISION)
    plan.DISPLACED_CONV_TOL, plan.DISPLACED_CONV_TOL_GRAD = conv_tol, conv_tol_grad
    plan.DISPLACED_PRECISION = precision
    try:
        yield
    finally:
        plan.DISPLACED_CONV_TOL, plan.DISPLACED_CONV_TOL_GRAD, plan.DISPLACED_PRECISION = saved


def _point_record(folder: Path) -> dict:
    """A computed point's cost and convergence, from its result.json."""
    result = json.loads((folder / "result.json").read_text())
    props = result["extras"]["dm21cli"]["properties"]
    attempts = props["scf_attempts"]
    return {"dm21_evaluations": props["dm21_evaluations"],
            "frozen_xc_converged": bool(attempts[0]["strategy"] == "frozen-xc"
                                        and attempts[0]["converged"]),
            "attempts": [a["strategy"] for a in attempts],
            "wall_s": result["extras"]["dm21cli"]["timings_s"]["total"],
            "gradient_hartree_per_bohr": result["return_result"]}


def water(steps: list[float], checkpoints=None) -> list[dict]:
    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.freq import plan_freq, run_freq

    text = (ROOT / "inputs" / "water-freq.yaml").read_text()
    variants = [(step, 1e-10, 1e-6, "float64") for step in steps]
    variants += [(0.005, 1e-8, 1e-5, "float64"), (0.005, 1e-10, 1e-7, "float64"),
                 (0.005, 1e-8, 1e-5, "mixed")]
    rows = []
    for step, tol, tol_grad, precision in variants:
        with tempfile.TemporaryDirectory() as tmp, points_scf(tol, tol_grad, precision):
            job = Path(tmp) / "water.yaml"
            job.write_text(text.replace("step: 0.005 ", f"step: {step!r} "))
            spec = load_job(job, {"output_dir": str(Path(tmp) / "freq")})
            t0 = time.perf_counter()
            document = run_freq(plan_freq(spec), checkpoints=checkpoints)
            wall = time.perf_counter() - t0
            vib = document["extras"]["dm21cli"]["vibrations"]
            points = sorted((Path(tmp) / "freq" / "displacements").iterdir())
            records = [_point_record(p) for p in points]
        rows.append({
            "step_bohr": step, "conv_tol": tol, "conv_tol_grad": tol_grad,
            "precision": precision, "wall_s": wall,
            "wavenumbers_cm1": vib["wavenumbers_cm1"],
            "hessian_asymmetry_hartree_bohr2": vib["hessian_asymmetry_hartree_bohr2"],
            "dm21_evaluations_mean": float(np.mean([r["dm21_evaluations"] for r in records])),
            "points_after_the_ladder": sum(not r["frozen_xc_converged"] for r in records)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def benzene(indices: list[int], checkpoints=None) -> list[dict]:
    from speed import benzene as benzene_atoms

    from dm21cli.io.inputs.load import load_job
    from dm21cli.jobs.freq import plan_freq, run_freq

    xyz = "".join(f"    {s} {x!r} {y!r} {z!r}\n" for s, x, y, z in benzene_atoms())
    rows = []
    for tol, tol_grad, precision in ((1e-8, 1e-5, "mixed"), (1e-10, 1e-6, "float64")):
        with tempfile.TemporaryDirectory() as tmp, points_scf(tol, tol_grad, precision):
            job = Path(tmp) / "benzene.yaml"
            job.write_text(f"molecule:\n  xyz: |\n{xyz}basis: def2-svp\nfunctional: DM21\n"
                           "outputs: {molden: false}\n")
            plan = plan_freq(load_job(job, {"output_dir": str(Path(tmp) / "freq")}))
            folders = [p.directory for p in plan.points[plan.functionals[0]]]
            for k in [0, *indices]:
                run_freq(plan, checkpoints=checkpoints, point=k)
                record = _point_record(folders[k])
                rows.append({"precision": precision, "conv_tol": tol, "conv_tol_grad": tol_grad,
                             "point": k, **record})
                print(json.dumps({key: v for key, v in rows[-1].items()
                                  if key != "gradient_hartree_per_bohr"}), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=["water", "benzene"])
    parser.add_argument("--steps", default="0.001,0.0025,0.005,0.01")
    parser.add_argument("--points", default="1,2,3,5,7,8")
    parser.add_argument("--checkpoints", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds")}
    if "water" in args.cases:
        out["water"] = water([float(s) for s in args.steps.split(",")], args.checkpoints)
    if "benzene" in args.cases:
        out["benzene"] = benzene([int(k) for k in args.points.split(",")], args.checkpoints)
    path = Path(args.json) if args.json else ROOT / "benchmarks" / "results" / (
        f"{datetime.date.today():%Y%m%d}-freq-step.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
