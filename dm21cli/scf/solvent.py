"""Implicit solvation: PySCF's continuum models (`pyscf.solvent`) on any SCF object, DM21's too.

`attach(mf, model, eps, name)` wraps an SCF object the way ``mf.PCM()`` does
(`pyscf.solvent._attach_solvent.SCFWithSolvent`): its ``get_veff`` calls the wrapped
class's (for DM21, `dm21cli.scf.ks.get_veff`: DM21's own potential) and tags the
result with the solvent's energy and potential of that density; ``get_fock`` adds the
reaction-field potential to the Fock matrix (before DIIS), ``energy_elec`` the
polarisation energy E_pol = 1/2 q.V (and SMD's cavity-dispersion-solvent-structure
term) to the electronic energy, once.  So every SCF path of dm21cli sees the solvent
through these three methods: the Fock iterations, direct minimisation
(`dm21cli.scf.directmin`), the frozen-XC iterations (`dm21cli.scf.escalation`, whose
inner SCF holds the reaction field of the last DM21 density fixed) and the final DM21
energy (which changes E_xc alone).  The nuclear gradient is PySCF's too
(``mf.nuc_grad_method()``: `pyscf.solvent.grad.pcm.make_grad_object`): the gradient of
the SCF without the solvent (for DM21, `dm21cli.scf.grad`) plus the solvent's
(``with_solvent.grad(dm)``: the surface charges' interaction with the density and the
nuclei, and the motion of the cavity).

The cavity, its discretisation and every parameter besides the model and the dielectric
constant are PySCF's defaults (`parameters` reads them for the log and result.json):
the PCM family on spheres of 1.2 x modified Bondi radii (H 1.1 Angstrom) with Lebedev
order 29 (302 points per sphere) and the SWIG switching of Lange and Herbert; ddCOSMO
on 1.1 x UFF radii, Lebedev order 17, spherical harmonics to l = 6; SMD on its own
radii with IEF-PCM and Lebedev order 41 (590 points).  Atomic units throughout.
"""

from __future__ import annotations

import numpy as np

#: dm21's model names (`dm21cli.io.inputs.solvent_model.MODELS`) that are PySCF's PCM class,
#: with its ``method`` for each
PCM_METHODS = {"IEF-PCM": "IEF-PCM", "C-PCM": "C-PCM", "SS(V)PE": "SS(V)PE", "COSMO": "COSMO"}
#: PySCF's PCM family (SMD too) works with dense matrices of the surface's size n: at its
#: peak it holds this many n x n float64 arrays while it builds its matrices and solves for
#: the surface charges (every SCF cycle), and while it computes its nuclear gradient.
#: Measured with tracemalloc on benzene (IEF-PCM, SS(V)PE and C-PCM: n = 1538; SMD: 2966):
#: 14.0 for every model; the gradient 31.1 (C-PCM: 18.1).
PCM_ENERGY_MATRICES = 14
PCM_GRADIENT_MATRICES = 31


def make_model(mol, model: str, eps: float, name: str | None = None):
    """PySCF's solvent object for `mol`: `model` (dm21's name) with dielectric constant
    `eps`; `name` is the solvent's name in PySCF's table (SMD takes its descriptors from
    it).  Everything else is PySCF's default."""
    if model in PCM_METHODS:
        from pyscf.solvent import pcm

        obj = pcm.PCM(mol)
        obj.method = PCM_METHODS[model]
    elif model == "ddCOSMO":
        from pyscf.solvent import ddcosmo

        obj = ddcosmo.DDCOSMO(mol)
    elif model == "SMD":
        from pyscf.solvent import smd

        if not name:
            raise ValueError("SMD needs a named solvent (its descriptors)")
        obj = smd.SMD(mol, solvent=name)
        if eps == smd.solvent_db[name][5]:
            return obj  # (PySCF's own path: eps from the descriptors)
    else:
        raise ValueError(f"unknown solvent model {model!r}")
    obj.eps = float(eps)
    return obj


def attach(mf, model: str, eps: float, name: str | None = None):
    """`mf` in the solvent (PySCF's solvent-attached SCF class, as ``mf.PCM()`` /
    ``mf.ddCOSMO()`` / ``mf.SMD()`` make it).  Call it before anything sets methods on the
    instance (`dm21cli.scf.reproducible.install`, fixed occupations): their closures
    must see the object that runs."""
    from pyscf.solvent import _attach_solvent

    return _attach_solvent._for_scf(mf, make_model(mf.mol, model, eps, name))


def surface_points(mol, model: str, name: str | None = None) -> int:
    """The number of points of the cavity surface PySCF's PCM family builds for `mol`
    (`pyscf.solvent.pcm.gen_surface` with the model's radii and Lebedev grid); 0 for
    ddCOSMO, which has no dense surface matrices."""
    from pyscf.data import radii
    from pyscf.dft.gen_grid import LEBEDEV_ORDER
    from pyscf.solvent import pcm

    if model == "ddCOSMO":
        return 0
    obj = make_model(mol, model, 2.0, name)  # (the dielectric constant changes no point)
    if model == "SMD":
        from pyscf.solvent import smd

        table, ng = smd.smd_radii(smd.solvent_db[name][2]), obj.sasa_ng
    else:
        table = obj.vdw_scale * pcm.modified_Bondi + obj.r_probe / radii.BOHR
        ng = LEBEDEV_ORDER[obj.lebedev_order]
    surface = pcm.gen_surface(mol, ng=ng, rad=table,
                              surface_discretization_method=obj.surface_discretization_method)
    return len(surface["grid_coords"])


def peak_mb(mol, model: str, name: str | None = None, gradient: bool = False) -> float:
    """The most memory (MB) PySCF's solvent model takes at once for `mol`: its dense
    surface matrices at their peak (PCM_ENERGY_MATRICES, with `gradient`
    PCM_GRADIENT_MATRICES, of n x n float64, n = `surface_points`)."""
    n = surface_points(mol, model, name)
    return 8.0 * n * n * (PCM_GRADIENT_MATRICES if gradient else PCM_ENERGY_MATRICES) / 1e6


def solvent_of(mf):
    """The solvent object of an SCF in solvent, or None (gas phase)."""
    return getattr(mf, "with_solvent", None)


def terms(mf) -> dict:
    """The solvation terms of the SCF energy at `mf`'s density (Ha): {'polarization': 1/2 q.V
    (PySCF's E_solvent), 'cds': SMD's cavity-dispersion-solvent-structure energy or None}.
    Computed again at the final density (the last energy PySCF stored may belong to a
    trial density of a line search)."""
    solvent = solvent_of(mf)
    e_pol, _ = solvent.kernel(mf.make_rdm1())
    cds = None
    if getattr(solvent, "method", "").upper() == "SMD":
        cds = float(np.ravel(solvent.get_cds())[0])
    return {"polarization": float(np.real(e_pol)), "cds": cds}


def parameters(solvent) -> dict:
    """PySCF's settings of a solvent object (for the log and result.json): the class,
    the model, the dielectric constant, the radii, the Lebedev order and points per
    sphere, the surface discretisation; and, once the cavity is built, its number of
    surface points."""
    from pyscf.dft.gen_grid import LEBEDEV_ORDER

    kind = type(solvent).__name__
    record: dict = {"pyscf_class": f"{type(solvent).__module__}.{kind}"}
    if kind == "SMD":
        from pyscf.solvent import smd

        n, _, alpha, beta, gamma, eps, phi, psi = smd.solvent_db[solvent.solvent]
        record.update(model="SMD", eps=float(solvent.eps or eps), radii="SMD (pyscf.solvent.smd."
                      "smd_radii)", lebedev_order=int(solvent.lebedev_order),
                      points_per_sphere=int(solvent.sasa_ng),
                      surface_discretization=solvent.surface_discretization_method,
                      descriptors={"n": n, "alpha": alpha, "beta": beta, "gamma": gamma,
                                   "phi": phi, "psi": psi})
    elif kind == "PCM":
        record.update(model=solvent.method, eps=float(solvent.eps),
                      radii=(f"{solvent.vdw_scale:g} x modified Bondi (H 1.1 Angstrom)"
                             + (f" + {solvent.r_probe:g} Angstrom" if solvent.r_probe else "")
                             if solvent.radii_table is None else "user table"),
                      lebedev_order=int(solvent.lebedev_order),
                      points_per_sphere=int(LEBEDEV_ORDER[solvent.lebedev_order]),
                      surface_discretization=solvent.surface_discretization_method)
    else:  # ddCOSMO
        record.update(model="ddCOSMO", eps=float(solvent.eps), radii="UFF x 1.1",
                      lebedev_order=int(solvent.lebedev_order),
                      points_per_sphere=int(LEBEDEV_ORDER[solvent.lebedev_order]),
                      lmax=int(solvent.lmax), eta=float(solvent.eta))
    surface = getattr(solvent, "surface", None)
    if isinstance(surface, dict) and surface.get("grid_coords") is not None:
        record["surface_points"] = len(surface["grid_coords"])
    return record


def default_parameters(model: str, eps: float, name: str | None = None) -> dict:
    """`parameters` of the model before it meets a molecule (PySCF's defaults)."""
    from pyscf import gto

    mol = gto.Mole()
    mol.verbose = 0
    return parameters(make_model(mol, model, eps, name))


def describe(record: dict) -> str:
    """`parameters` in words, without the model and eps: 'radii 1.2 x modified Bondi (H 1.1
    Angstrom), Lebedev order 29 (302 points per sphere), SWIG surface, 556 surface points
    (pyscf.solvent.pcm.PCM)'."""
    text = (f"radii {record['radii']}, Lebedev order {record['lebedev_order']} "
            f"({record['points_per_sphere']} points per sphere)")
    if record.get("surface_discretization"):
        text += f", {record['surface_discretization']} surface"
    if record.get("lmax") is not None:
        text += f", lmax {record['lmax']}, eta {record['eta']:g}"
    if record.get("surface_points") is not None:
        text += f", {record['surface_points']} surface points"
    return text + f" ({record['pyscf_class']})"
