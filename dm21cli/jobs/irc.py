"""The reaction path of an intrinsic-reaction-coordinate run (``dm21 opt --irc``).

geomeTRIC's IRC (`dm21cli.jobs.opt.run_opt` with ``opt.irc``) walks down from the transition
state, forward along the imaginary mode and then backward, each leg ending in an optimisation
to its minimum; the optimisation's history holds every geometry computed, each labelled with
its leg (``ts``, ``forward``, ``backward``) and whether geomeTRIC accepted it.  Here the
accepted ones become the path, in order from the backward leg's minimum through the
transition state to the forward leg's, with

- ``s``: the mass-weighted arc length from the transition state, in amu^1/2 bohr, positive
  along the forward leg (consecutive geometries aligned first: Kabsch's rotation about the
  centre of mass, with the masses as weights, so that overall motion adds nothing);
- the energy, and its value relative to the transition state in kcal/mol;

and the files ``irc.xyz`` (the path, one frame per point) and ``irc.csv``.
"""

from __future__ import annotations

import numpy as np

from dm21cli.core.units import BOHR_ANGSTROM, HARTREE_KCAL_MOL
from dm21cli.vib.masses import default_masses_amu

#: files of a reaction path besides those of an optimisation
IRC_FILES = {"path": "irc.xyz", "table": "irc.csv"}

LEGS = ("ts", "forward", "backward")


def aligned(coords_bohr: np.ndarray, reference_bohr: np.ndarray,
            masses_amu: np.ndarray) -> np.ndarray:
    """`coords_bohr` (N, 3) moved onto `reference_bohr` (N, 3): centres of mass made equal and
    the mass-weighted rotation that minimises the distance applied (Kabsch)."""
    w = masses_amu / masses_amu.sum()
    a = coords_bohr - w @ coords_bohr
    b = reference_bohr - w @ reference_bohr
    u, _, vt = np.linalg.svd((a * masses_amu[:, None]).T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rotation = u @ np.diag([1.0, 1.0, d]) @ vt
    return a @ rotation + w @ reference_bohr


def mass_weighted_distance(a_bohr: np.ndarray, b_bohr: np.ndarray, masses_amu: np.ndarray) -> float:
    """|a - b| with each atom's displacement weighted by sqrt(mass), amu^1/2 bohr (b aligned
    onto a)."""
    diff = aligned(b_bohr, a_bohr, masses_amu) - a_bohr
    return float(np.sqrt(np.sum(masses_amu[:, None] * diff**2)))


def path_points(history: list[dict], symbols: list[str]) -> list[dict]:
    """The accepted points of `history` (the optimisation's entries with ``leg`` and
    ``accepted``) in path order, each {"leg", "step", "s_amu_half_bohr", "energy_hartree",
    "relative_kcal_mol", "geometry_bohr"}; an empty list without a transition state."""
    masses = default_masses_amu(symbols)
    accepted = [h for h in history if h.get("accepted") and h.get("leg") in LEGS]
    ts = [h for h in accepted if h["leg"] == "ts"]
    if not ts:
        return []
    top = ts[0]
    points = []
    for leg, sign in (("forward", 1.0), ("backward", -1.0)):
        previous = np.asarray(top["geometry_bohr"], dtype=float)
        s = 0.0
        for h in (h for h in accepted if h["leg"] == leg):
            coords = np.asarray(h["geometry_bohr"], dtype=float)
            s += mass_weighted_distance(previous, coords, masses)
            previous = coords
            points.append((leg, sign * s, h))
    points.append(("ts", 0.0, top))
    points.sort(key=lambda p: p[1])
    e_ts = float(top["energy_hartree"])
    return [{"leg": leg, "step": int(h["step"]), "s_amu_half_bohr": s,
             "energy_hartree": float(h["energy_hartree"]),
             "relative_kcal_mol": (float(h["energy_hartree"]) - e_ts) * HARTREE_KCAL_MOL,
             "geometry_bohr": h["geometry_bohr"]} for leg, s, h in points]


def path_xyz(points: list[dict], symbols: list[str], name: str) -> str:
    """irc.xyz: the path's frames (Angstrom), each aligned onto the one before, the comment
    naming the point, its s and its energies."""
    masses = default_masses_amu(symbols)
    frames, previous = [], None
    for p in points:
        coords = np.asarray(p["geometry_bohr"], dtype=float).reshape(-1, 3)
        if previous is not None:
            coords = aligned(coords, previous, masses)
        previous = coords
        xyz = coords * BOHR_ANGSTROM
        frames.append(f"{len(symbols)}\n{p['leg']} step {p['step']}  s = "
                      f"{p['s_amu_half_bohr']:.4f} amu^1/2 bohr  E = {p['energy_hartree']:.10f} Ha  "
                      f"{p['relative_kcal_mol']:+.3f} kcal/mol from the TS  ({name}, dm21 opt --irc)\n"
                      + "".join(f"{s:<2} {x:16.10f} {y:16.10f} {z:16.10f}\n"
                                for s, (x, y, z) in zip(symbols, xyz)))
    return "".join(frames)


def path_csv(points: list[dict]) -> str:
    """irc.csv: one row per point of the path, units in the header."""
    rows = ["leg,step,s_amu_half_bohr,energy_hartree,relative_kcal_mol"]
    rows += [f"{p['leg']},{p['step']},{p['s_amu_half_bohr']:.6f},{p['energy_hartree']:.10f},"
             f"{p['relative_kcal_mol']:.6f}" for p in points]
    return "\n".join(rows) + "\n"


def path_record(points: list[dict], legs: dict[str, bool]) -> dict:
    """result.json's ``optimization.irc``: each leg's end (converged, its energy and barrier
    seen from it, its geometry) and the path without geometries; legs: leg -> converged."""
    if not points:
        return {"legs": {}, "path": []}
    ts = next(p for p in points if p["leg"] == "ts")
    out = {"ts_energy_hartree": ts["energy_hartree"], "legs": {}}
    for leg in ("forward", "backward"):
        mine = [p for p in points if p["leg"] == leg]
        end = (mine[-1] if leg == "forward" else mine[0]) if mine else None
        out["legs"][leg] = {
            "converged": bool(legs.get(leg, False)), "points": len(mine),
            "end_step": end["step"] if end else None,
            "end_energy_hartree": end["energy_hartree"] if end else None,
            "barrier_kcal_mol": -end["relative_kcal_mol"] if end else None,
            "end_geometry_bohr": end["geometry_bohr"] if end else None}
    out["path"] = [{k: v for k, v in p.items() if k != "geometry_bohr"} for p in points]
    return out
