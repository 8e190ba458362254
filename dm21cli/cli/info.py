"""``dm21 info``: versions, weights status, threads and memory, in one screen.

Meant to be pasted into a bug report.  Package versions come from the
installed metadata (``importlib.metadata``), so neither PySCF nor TensorFlow
is imported; the weights are verified by ``dm21cli.functional.weights.status``, which
never raises for missing weights: they are reported, and the command exits 0.
"""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata
from pathlib import Path

import click

from dm21cli.cli.common import print_if_it_fits, use_rich

#: distributions whose versions are reported (by their installed metadata).
PACKAGES = ("pyscf", "numpy", "scipy", "click", "pydantic", "pyyaml", "rich", "pyscf-dispersion")
#: the distribution names TensorFlow may be installed under.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel",
                            "tensorflow-macos", "tf-nightly", "tf-nightly-cpu")
TENSORFLOW_ABSENT = "not installed (optional; only the tests use it)"
#: environment variables that change what dm21 does, shown when set.
ENVIRONMENT = ("DM21_CHECKPOINTS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "PYSCF_MAX_MEMORY",
               "SLURM_MEM_PER_NODE", "NO_COLOR", "XDG_DATA_HOME", "DM21_TRACEBACK", "DM21_NO_KERNELS",
               "OPENBLAS_THREAD_TIMEOUT")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _tensorflow() -> dict | None:
    """{'version', 'distribution'} of an installed TensorFlow, or None."""
    for name in TENSORFLOW_DISTRIBUTIONS:
        version = _version(name)
        if version is not None:
            return {"version": version, "distribution": name}
    return None


def _resources() -> dict:
    """What a run would use (`dm21cli.core.resources.resolve`), or {'problem': ...} when an
    environment variable it reads holds something it cannot mean (a run exits 2)."""
    from dm21cli.core import resources
    from dm21cli.core.errors import InputError

    try:
        return resources.resolve(None, None)
    except InputError as exc:
        return {"problem": f"{exc} (dm21 run, scan, opt and validate exit with status 2)"}


def collect(checkpoints: str | os.PathLike | None = None) -> dict:
    """Everything ``dm21 info`` reports, as a JSON-ready dict."""
    from dm21cli import __version__
    from dm21cli.functional import kernels, weights

    root, source = weights.resolve_root(checkpoints)
    states = weights.status(checkpoints)
    return {
        "dm21cli": __version__,
        "python": {"version": ".".join(map(str, sys.version_info[:3])), "executable": sys.executable},
        "packages": {name: _version(name) for name in PACKAGES},
        "tensorflow": _tensorflow(),
        "weights": {
            "root": str(root),
            "source": source,
            "variants": [{"variant": s.variant, "verified": s.verified,
                          "path": str(s.path) if s.path else None, "problem": s.problem}
                         for s in states],
            "hint": None if all(s.verified for s in states) else weights.fix_hint(checkpoints),
        },
        "user_data_dir": str(weights.user_checkpoints_dir()),
        "resources": _resources(),
        "kernels": kernels.available(),
        "kernels_status": _kernel_status(kernels),
        "environment": {var: os.environ[var] for var in ENVIRONMENT if var in os.environ},
    }


def _kernel_status(kernels) -> dict:
    """The compiled kernels' state (`kernels.status`), and the command that rebuilds them
    when they are missing or stale."""
    st = kernels.status()
    return {"state": st.state, "reason": st.reason, "path": st.path, "abi": kernels.KERNELS_ABI,
            "rebuild": None if st.state in ("loaded", "off") else kernels.rebuild_command()}


def _sections(info: dict) -> list[tuple[str, list[tuple[str, str, bool | None]]]]:
    """(title, [(key, value, ok)]) for the text and table renderings; ok colours a row."""
    tf = info["tensorflow"]
    versions = [("dm21cli", info["dm21cli"], None),
                ("python", f"{info['python']['version']} ({info['python']['executable']})", None)]
    versions += [(name, version or "not installed", None if version else False)
                 for name, version in info["packages"].items()]
    versions.append(("tensorflow", TENSORFLOW_ABSENT if tf is None else
                     f"{tf['version']} ({tf['distribution']}; optional, only the tests use it)", None))

    w = info["weights"]
    weights_rows = [("checkpoint root", f"{w['root']} ({w['source']})", None)]
    for v in w["variants"]:
        detail = v["path"] if v["verified"] else v["problem"]
        weights_rows.append((v["variant"], f"verified {'yes' if v['verified'] else 'no'}: {detail}",
                             v["verified"]))
    if w["hint"]:
        weights_rows.append(("to fix", w["hint"], None))
    weights_rows.append(("user data dir", info["user_data_dir"], None))

    r = info["resources"]
    resource_rows = [("problem", r["problem"], False)] if "problem" in r else [
        ("threads", f"{r['threads']} ({r['threads_source']})", None),
        ("memory", f"{r['memory_mb']} MB ({r['memory_source']}), the whole process's "
                   f"budget; 'dm21 validate FILE' shows what a job needs", None)]
    st = info["kernels_status"]
    resource_rows += [("compiled kernels", "yes" if info["kernels"] else
                      f"no, {st['reason']}: libcint and NumPy do their work, slower"
                      + (f" (rebuild: {st['rebuild']})" if st["rebuild"] else ""), info["kernels"])]
    env_rows = [(var, value, None) for var, value in info["environment"].items()] or [("(none set)", "", None)]
    return [("versions", versions), ("weights", weights_rows),
            ("resources", resource_rows), ("environment", env_rows)]


def _print_text(sections) -> None:
    width = max(len(key) for _, rows in sections for key, _, _ in rows)
    blocks = []
    for title, rows in sections:
        lines = [f"{title}:"] + [f"  {key.ljust(width)}  {value}".rstrip() for key, value, _ in rows]
        blocks.append("\n".join(lines))
    click.echo("\n\n".join(blocks))


def _print_rich(sections) -> bool:
    """The sections as a rich table, if the terminal is wide enough for it; whether it was."""
    from rich.table import Table
    from rich.text import Text

    styles = {True: "green", False: "bold red", None: ""}
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    for i, (title, rows) in enumerate(sections):
        if i:
            table.add_row("", "")
        table.add_row(Text(title, style="bold"), "")
        for key, value, ok in rows:  # Text, not markup: paths may contain "[...]"
            table.add_row(Text(f"  {key}"), Text(value, style=styles[ok]))
    return print_if_it_fits(table)


@click.command("info")
@click.option("--checkpoints", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Checkpoint root to check (default: $DM21_CHECKPOINTS, then the user data dir).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(checkpoints: Path | None, as_json: bool) -> None:
    """Versions, weights status, threads and memory (paste this into bug reports).

    Exits 0 even when weights are missing; they are reported as 'verified no'.
    """
    data = collect(checkpoints)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif not (use_rich(sys.stdout) and _print_rich(_sections(data))):
        _print_text(_sections(data))
