"""The cost of ``dm21 freq``: total CPU against one gradient times (6N+1), and wall time with
1, 2 and 4 workers.

    python benchmarks/freq_cost.py [water-svp] [benzene-svp] [--workers 1,2,4] [--json FILE]

Every job runs as a whole ``dm21`` process (start-up and imports included, as a user runs
it), DM21/def2-SVP at grid level 3, in a fresh folder: first one ``dm21 run --gradient`` at
the geometry (the reference: the cost of one gradient job), then ``dm21 freq`` once per
worker count.  CPU seconds are the children's user + system time (the workers included).
Prints each run and the ratios; writes JSON (default
benchmarks/results/<date>-freq-cost.json).  On a 2-core machine 4 workers share 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import WATER, benzene  # noqa: E402

SYSTEMS = {"water-svp": (WATER, "def2-svp"), "benzene-svp": (None, "def2-svp")}


def _job(folder: Path, case: str) -> Path:
    atoms, basis = SYSTEMS[case]
    atoms = atoms if atoms is not None else benzene()
    xyz = "".join(f"    {s} {x!r} {y!r} {z!r}\n" for s, x, y, z in atoms)
    path = folder / f"{case}.yaml"
    path.write_text(f"molecule:\n  xyz: |\n{xyz}basis: {basis}\nfunctional: DM21\n"
                    f"outputs: {{molden: false}}\n")
    return path


def _run(args: list[str], cwd: Path) -> dict:
    """One dm21 process: wall and CPU seconds (its own and its children's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dm21cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"dm21 {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def measure(case: str, workers: list[int], report=lambda row: None) -> dict:
    """One case's gradient job and freq runs; ``report(row)`` after each run (partial rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = _job(folder, case)
        natm = len(SYSTEMS[case][0] or benzene())
        gradient = _run(["run", job.name, "--gradient", "-o", "gradient"], folder)
        runs = []
        row = _row(case, natm, gradient, runs)
        for n in workers:
            run = _run(["freq", job.name, "-o", f"freq-{n}", "--workers", str(n)], folder)
            result = json.loads((folder / f"freq-{n}" / "result.json").read_text())
            run.update(workers=n, wavenumbers_cm1=result["extras"]["dm21cli"]["vibrations"]
                       ["wavenumbers_cm1"])
            runs.append(run)
            row = _row(case, natm, gradient, runs)
            report(row)
    return row


def _row(case: str, natm: int, gradient: dict, runs: list[dict]) -> dict:
    points = 6 * natm + 1
    return {"case": case, "atoms": natm, "points": points, "gradient": gradient,
            "freq": list(runs),
            "cpu_ratio_to_points_x_gradient": [r["cpu_s"] / (points * gradient["cpu_s"])
                                               for r in runs]}


def _write(out: Path, rows: list[dict]) -> None:
    out.write_text(json.dumps({"date": datetime.datetime.now().isoformat(timespec="seconds"),
                               "cpu_count": os.cpu_count(), "rows": rows}, indent=2) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", default=["water-svp"])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    out = Path(args.json) if args.json else Path(__file__).resolve().parent / "results" / (
        f"{datetime.date.today():%Y%m%d}-freq-cost.json")
    rows = []
    for case in args.cases:
        # Written after every freq run, so an interrupted benchmark keeps what it measured.
        row = measure(case, workers, report=lambda partial: _write(out, rows + [partial]))
        rows.append(row)
        g = row["gradient"]
        print(f"{case}: one gradient job {g['wall_s']:.1f} s wall, {g['cpu_s']:.1f} s CPU; "
              f"{row['points']} points", flush=True)
        first = row["freq"][0]
        for run, ratio in zip(row["freq"], row["cpu_ratio_to_points_x_gradient"]):
            # (the first run of this process is the reference: serial with the default --workers)
            print(f"  freq --workers {run['workers']}: {run['wall_s']:.1f} s wall, "
                  f"{run['cpu_s']:.1f} s CPU = {ratio:.2f} x ({row['points']} x one gradient's "
                  f"CPU); wall {run['wall_s'] / first['wall_s']:.2f} x the --workers "
                  f"{first['workers']} run's", flush=True)
    _write(out, rows)
    print(f"written {out}")


if __name__ == "__main__":
    main()
