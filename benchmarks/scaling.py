"""How DM21's cost grows with size against B3LYP's: (H2O)n, def2-SVP, whole processes.

    python benchmarks/scaling.py                        # n = 1, 2, 4, 8, 16, 32: hours
    python benchmarks/scaling.py --sizes 1,2,4          # minutes
    python benchmarks/scaling.py --memory 32=18GB       # a budget for some sizes
    python benchmarks/scaling.py --json F.json --resume # F.json's sizes kept, the others run

For every n, B3LYP and then DM21 run as one whole `dm21 run` process each (start-up and
imports included, as a user runs them), on n waters 3.0 A apart on a cubic lattice
(`speed.water_cluster`), def2-SVP, default grid and settings; a size given a budget with
--memory runs both functionals with it.  Recorded per run: wall seconds, the process's peak
memory (its own rusage), the number of basis functions and grid points, DM21's exchange
integrals (backend, points computed, the shell-pair blocks its density screening left out)
from result.json.  Then log(wall) is fitted against log(basis functions) for each
functional (least squares over the sizes given): the slopes are printed with their
difference (issue 24 asks for them within 0.3 of each other), and a log-log plot of both
(matplotlib) is written next to the JSON (default benchmarks/results/<date>-scaling.json
and .png), both again after every size, so a run stopped at a large size keeps the sizes it
finished; with --resume the sizes an earlier run wrote there are kept, not run again (and
the plot is drawn again from them).  Each size's row records when it finished ("date").
Run it on a machine with nothing else computing.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import water_cluster  # noqa: E402


def _job(folder: Path, n: int, functional: str, memory: str | None) -> Path:
    xyz = "".join(f"    {s} {x!r} {y!r} {z!r}\n" for s, x, y, z in water_cluster(n))
    path = folder / f"water{n}-{functional.lower()}.yaml"
    path.write_text(f"molecule:\n  xyz: |\n{xyz}basis: def2-svp\nfunctional: {functional}\n"
                    "outputs: {molden: false}\n"
                    + (f"resources: {{memory: {memory}}}\n" if memory else ""))
    return path


def run(n: int, functional: str, memory: str | None, folder: Path) -> dict:
    """One `dm21 run` process: wall seconds, its own peak memory, and what result.json says."""
    job = _job(folder, n, functional, memory)
    outdir = folder / job.stem
    err_path = folder / f"{job.stem}.stderr"  # a file, not a pipe: nothing blocks a long run
    cmd = [sys.executable, "-m", "dm21cli", "run", str(job), "-o", str(outdir)]
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, NO_COLOR="1"))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"(H2O){n} {functional}: dm21 run exited {code}\n"
                         f"{err_path.read_text(errors='replace')[-2000:]}")
    from dm21cli.io.outputs.qcschema import fields

    result = fields(json.loads((outdir / "result.json").read_text()))  # dm21cli's layout
    props = result["properties"]
    return {"wall_s": wall, "peak_memory_mb": usage.ru_maxrss / 1024.0,
            "energy_hartree": result["return_energy"], "nao": props["nao"],
            "grid_points": props["grid_points"], "memory": memory,
            "dm21_evaluations": props.get("dm21_evaluations"),
            "dm21_exchange_integrals": props.get("dm21_exchange_integrals")}


def slopes(rows: list[dict]) -> dict:
    """Least-squares slope of log(wall) against log(basis functions) per functional."""
    import numpy as np

    out = {}
    for key in ("b3lyp", "dm21"):
        x = np.log([r["nao"] for r in rows])
        y = np.log([r[key]["wall_s"] for r in rows])
        out[key] = float(np.polyfit(x, y, 1)[0]) if len(rows) > 1 else None
    out["difference"] = (out["dm21"] - out["b3lyp"]) if len(rows) > 1 else None
    return out


def plot(rows: list[dict], fit: dict, path: Path) -> None:
    """Both functionals' wall time against basis functions on log-log axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6, 4.5))
    nao = [r["nao"] for r in rows]
    for key, label in (("b3lyp", "B3LYP"), ("dm21", "DM21")):
        slope = f", slope {fit[key]:.2f}" if fit[key] is not None else ""
        ax.loglog(nao, [r[key]["wall_s"] for r in rows], "o-", label=f"{label}{slope}")
    for r in rows:
        ax.annotate(f"n={r['n']}", (r["nao"], r["dm21"]["wall_s"]), textcoords="offset points",
                    xytext=(-4, 6), ha="right", fontsize=8)
    ax.set_xticks(nao)  # the clusters' basis sizes, in plain numbers
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("basis functions (def2-SVP)")
    ax.set_ylabel("wall time of dm21 run (s)")
    ax.set_title("(H2O)n: DM21 and B3LYP cost against size")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4,8,16,32", help="waters per cluster, comma-separated")
    parser.add_argument("--memory", action="append", default=[], metavar="N=BUDGET",
                        help="a memory budget for size N (both functionals), e.g. 32=18GB")
    parser.add_argument("--json", default=None, help="output (default benchmarks/results/<date>-scaling.json)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the sizes the output file already holds and run the others")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    budgets = {int(k): v for k, v in (item.split("=", 1) for item in args.memory)}
    stamp = time.strftime("%Y%m%d")
    results = Path(__file__).parent / "results"
    out = Path(args.json) if args.json else results / f"{stamp}-scaling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text())["rows"] if args.resume and out.exists() else []
    rows = [row for row in rows if row["n"] in sizes]
    fit = slopes(rows)
    ran = False
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            if any(row["n"] == n for row in rows):
                continue
            row = {"n": n}
            for key, functional in (("b3lyp", "B3LYP"), ("dm21", "DM21")):
                row[key] = run(n, functional, budgets.get(n), Path(tmp))
            row["nao"], row["grid_points"] = row["dm21"]["nao"], row["dm21"]["grid_points"]
            row["ratio_wall"] = row["dm21"]["wall_s"] / row["b3lyp"]["wall_s"]
            row["date"] = time.strftime("%Y-%m-%dT%H:%M:%S")  # when this size finished
            rows.append(row)
            rows.sort(key=lambda r: r["n"])
            ints = row["dm21"]["dm21_exchange_integrals"] or {}
            print(f"(H2O){n:<3} nao {row['nao']:5d}  B3LYP {row['b3lyp']['wall_s']:8.1f} s  "
                  f"DM21 {row['dm21']['wall_s']:8.1f} s  ratio {row['ratio_wall']:5.2f}  "
                  f"peak {row['dm21']['peak_memory_mb']:7.0f} MB  screened "
                  f"{ints.get('screened_feature_blocks')}", flush=True)
            fit = _write(out, rows)  # (the JSON and the plot, after every size)
            ran = True
    if rows and not ran:  # every size was kept (--resume): the plot is drawn again
        plot(rows, fit, out.with_suffix(".png"))
    if fit["difference"] is not None:
        print(f"slope of log(wall) on log(basis functions): B3LYP {fit['b3lyp']:.2f}, DM21 "
              f"{fit['dm21']:.2f}, difference {fit['difference']:+.2f}")
    print(f"written {out} and {out.with_suffix('.png')}")


def _write(out: Path, rows: list[dict]) -> dict:
    """The JSON (written to a temporary file, then renamed) and the plot of `rows`; the fit."""
    fit = slopes(rows)
    part = out.with_name(out.name + ".part")
    part.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "cpu_count": len(os.sched_getaffinity(0)), "rows": rows,
                                "slopes": fit}, indent=2))
    part.replace(out)
    plot(rows, fit, out.with_suffix(".png"))
    return fit

if __name__ == "__main__":
    main()
