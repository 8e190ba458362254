"""From a `JobSpec` to PySCF objects: molecule, grid, SCF (DM21 or any functional, in the
job's implicit solvent if it has one), warm start."""

from __future__ import annotations

import time

import numpy as np

from dm21cli.core import interrupts
from dm21cli.core.errors import InputError
from dm21cli.io.inputs.basis import pyscf_ecp

#: SCF convergence of the warm-start functional (Hartree); its density is
#: only a starting point, so a moderate threshold is enough: DM21's own first
#: step changes the density matrix by about 1e-2 (water/def2-TZVP), the
#: warm start's last one by 5e-4 at this threshold.
WARM_START_CONV_TOL = 1e-6
#: The warm start runs on this grid level (or the job's, if coarser).  Its density only
#: starts DM21's SCF: measured with the default grid (level 3), DM21's converged energy
#: is the same to 1e-10 Ha with the same number of DM21 evaluations (water/def2-TZVP,
#: benzene/def2-SVP), and the warm start takes half the time (benzene: 4.6 s, not 8.5 s).
WARM_START_GRID_LEVEL = 1


def start_notes(spec, functionals=None) -> list[str]:
    """What a job's log says before its first computation: the multiplicity chosen for a lone
    atom, and a warning when DM21 (the job's functional, or one of `functionals`) runs without
    the compiled kernels (`dm21cli.functional.kernels.warning`: why, what it costs, how to
    rebuild them)."""
    from dm21cli.io.inputs.models import DM21_FUNCTIONALS

    notes = [spec.multiplicity_note()]
    if any(f in DM21_FUNCTIONALS for f in (functionals or [spec.functional])):
        from dm21cli.functional import kernels

        notes.append(kernels.warning())
    return [note for note in notes if note]


def build_molecule(spec, stream=None, max_memory_mb: float = 4000.0):
    """A built pyscf Mole for the spec (coordinates in bohr).

    Every element whose basis has an effective core potential gets it
    (`dm21cli.io.inputs.basis.ecp_map`, the same rule validation used).
    """
    from pyscf import gto

    mol = gto.Mole()
    mol.atom = spec.molecule.pyscf_atom()
    mol.unit = "Bohr"
    mol.basis = spec.pyscf_basis()
    ecp = pyscf_ecp(spec)
    if ecp:
        mol.ecp = ecp
    mol.charge = spec.molecule.charge
    mol.spin = spec.molecule.multiplicity - 1
    mol.max_memory = max_memory_mb
    if stream is not None:
        mol.stdout = stream
        mol.verbose = 4
    else:
        mol.verbose = 0
    try:
        mol.build(dump_input=False, parse_arg=False)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"PySCF could not build the molecule: {exc}",
                         file=str(spec.source_path) if spec.source_path else None) from exc
    return mol


def build_grids(mol, spec, level: int | None = None):
    """DFT integration grid at the spec's level, or at `level` (legacy radial grids if asked)."""
    from pyscf.dft import gen_grid

    grids = gen_grid.Grids(mol)
    grids.level = spec.scf.grid_level if level is None else level
    if spec.scf.legacy_grids:
        from dm21cli.scf.ks import use_legacy_grids

        use_legacy_grids(grids)
    return grids


def prepare_grids(mf, spec, dm0=None) -> None:
    """Build the SCF's grid (unless built) before its first cycle, as PySCF would at its
    first Fock build: with ``scf.small_rho_cutoff`` set, PySCF's pruning at the starting
    density `dm0` (or the SCF's own initial guess) drops the points whose share
    rho * weight is below small_rho_cutoff / (number of points), which hold at most
    small_rho_cutoff electrons in all.  For every functional, DM21's included (DM21
    also leaves out points below `dm21cli.functional.xc.RHO_SCREEN` on its own).
    """
    if mf.grids.coords is not None:
        return
    cutoff = spec.scf.small_rho_cutoff
    if cutoff is None or cutoff <= 1e-20:  # PySCF's own test: no pruning
        mf.grids.build(with_non0tab=True)
        return
    mf.small_rho_cutoff = cutoff
    dm = dm0 if dm0 is not None else mf.get_init_guess(mf.mol, mf.init_guess)
    mf.initialize_grids(mf.mol, dm)


def integral_dtype(spec):
    """Storage precision of the cached exchange integrals for this job: float32
    halves their memory (measured 1.8e-8 Ha on benzene/def2-SVP); precision
    float64 keeps every step in float64."""
    return np.float64 if spec.scf.precision == "float64" else np.float32


def build_scf(mol, spec, grids, network=None, max_memory_mb: float = 4000.0):
    """The configured SCF object (DM21 or any PySCF functional)."""
    from pyscf import dft

    restricted = spec.resolved_restricted()
    if network is not None:
        from dm21cli.functional.xc import DM21XC
        from dm21cli.scf.ks import DM21RKS, DM21UKS

        scf_network = network.astype(np.float32) if spec.scf.precision == "mixed" else None
        # DM21's caches leave room for the solvent's dense matrices (allocated after them)
        xc = DM21XC(network, max_memory_mb=max_memory_mb - solvent_mb(spec, mol),
                    scf_network=scf_network, integral_dtype=integral_dtype(spec))
        # a gradient follows the SCF: it reuses the last evaluation's exchange features
        xc.keep_features = spec.computes_gradient
        mf = DM21RKS(mol, xc) if restricted else DM21UKS(mol, xc)
        # PySCF's extra Fock build after convergence costs a whole DM21
        # evaluation; the convergence test already used this density.
        mf.conv_check = False
    elif restricted and mol.spin == 0:
        mf = dft.RKS(mol, xc=spec.functional)
    elif restricted:
        mf = dft.ROKS(mol, xc=spec.functional)
    else:
        mf = dft.UKS(mol, xc=spec.functional)
    mf = in_solvent(mf, spec)
    _share_settings(mf, spec, grids, max_memory_mb)
    mf.conv_tol = spec.effective_conv_tol()
    mf.conv_tol_grad = spec.effective_conv_tol_grad()
    mf.max_cycle = spec.scf.max_cycle
    return mf


def in_solvent(mf, spec):
    """`mf` in the job's implicit solvent (``solvent:``, `dm21cli.scf.solvent.attach`), or
    `mf` itself in the gas phase.  Before `_share_settings`: the methods it sets on the
    instance must belong to the object that runs."""
    if spec.solvent is None:
        return mf
    from dm21cli.scf import solvent

    return solvent.attach(mf, spec.solvent.model, spec.solvent.dielectric(), spec.solvent.name)


def solvent_mb(spec, mol) -> float:
    """What the job's implicit solvent takes at its peak (MB; 0 in the gas phase): PySCF's
    dense surface matrices, more of them for a nuclear gradient (`dm21cli.scf.solvent.
    peak_mb`).  DM21's caches leave room for it (`build_scf`); `dm21cli.jobs.memory` counts it."""
    if spec.solvent is None:
        return 0.0
    from dm21cli.scf.solvent import peak_mb

    gradient = spec.computes_gradient or spec.job.task == "freq"
    return peak_mb(mol, spec.solvent.model, spec.solvent.name, gradient=gradient)


def _share_settings(mf, spec, grids, max_memory_mb) -> None:
    """What the warm start and the main SCF share: grid, memory, density cutoff, guess,
    fixed occupations (``scf.occupations``)."""
    from dm21cli.scf import reproducible

    reproducible.install(mf)  # the same numbers in every run (see there)
    if spec.scf.occupations is not None:
        from dm21cli.scf import occupations

        occupations.apply(mf, occupations.FixedOccupations.from_spec(spec.scf.occupations))
    mf.grids = grids
    mf.max_memory = max_memory_mb
    if spec.scf.small_rho_cutoff is not None:
        mf.small_rho_cutoff = spec.scf.small_rho_cutoff
    if spec.scf.guess != "auto" and not spec.scf.guess_is_chkfile():
        mf.init_guess = spec.scf.guess


def warm_start(mol, spec, grids, max_memory_mb, log, main=None, checkpoint=None, dm0=None):
    """Converge spec.scf.warm_start (e.g. B3LYP) on grid level WARM_START_GRID_LEVEL (the
    job's, if coarser); returns (dm, info dict).

    The density matrix carries its orbitals (PySCF's tags ``mo_coeff`` and
    ``mo_occ``) unless the start is restricted open-shell.  dm0: the warm
    start's own initial density (default: PySCF's guess).

    main: the SCF that follows; it is handed the in-core two-electron
    integrals the warm start computed, so they are computed once.  Where those
    integrals do not fit in memory (`dm21cli.scf.fitting`), the warm start is
    density-fitted (its density is a start: DM21's SCF converges to its own) and
    main is handed the fitted integrals for its frozen-XC inner SCF.
    checkpoint: a `dm21cli.io.outputs.checkpoint.ScfCheckpoint` that receives every cycle's state, and the
    converged one for writing, so an interruption before the first DM21
    evaluation leaves a restart file.
    """
    from pyscf import dft

    from dm21cli.scf import fitting

    t0 = time.perf_counter()
    restricted = spec.resolved_restricted()
    if restricted and mol.spin == 0:
        mf0 = dft.RKS(mol, xc=spec.scf.warm_start)
    else:
        mf0 = dft.UKS(mol, xc=spec.scf.warm_start)
    mf0.max_memory = max_memory_mb
    fitted = not fitting.integrals_in_core(main if main is not None else mf0, mf0)
    if fitted:
        mf0 = mf0.density_fit()
        fitting.build(mf0.with_df, max_memory_mb)
        if main is not None:
            fitting.hand_over(mf0.with_df, main)
    mf0 = in_solvent(mf0, spec)  # the starting density polarised as DM21's will be
    _share_settings(mf0, spec, grids, max_memory_mb)
    level = min(WARM_START_GRID_LEVEL, spec.scf.grid_level)
    if level < spec.scf.grid_level:  # a starting density needs no fine grid
        mf0.grids = build_grids(mol, spec, level)
    mf0.conv_tol = WARM_START_CONV_TOL
    mf0.conv_check = False  # a starting density needs no confirming extra cycle
    mf0.max_cycle = max(spec.scf.max_cycle, 50)
    mf0.chkfile = None  # the run keeps its own restart file (ScfCheckpoint)

    def each_cycle(envs):
        interrupts.check()
        if checkpoint is not None and envs.get("mo_coeff") is not None:
            checkpoint.update(envs["e_tot"], envs["mo_energy"], envs["mo_coeff"], envs["mo_occ"])

    mf0.callback = each_cycle
    log(f"warm start: {spec.scf.warm_start} SCF (grid level {level}"
        + (", density-fitted)" if fitted else ")"))
    mf0.kernel(dm0=dm0)
    if checkpoint is not None:
        checkpoint.update(mf0.e_tot, mf0.mo_energy, mf0.mo_coeff, mf0.mo_occ, final=True)
    if main is not None and getattr(mf0, "_eri", None) is not None:
        main._eri = mf0._eri
    dm = mf0.make_rdm1()
    if restricted and mol.spin != 0:  # ROKS-like start for a restricted open shell
        dm = dm[0] + dm[1]
    info = {"functional": spec.scf.warm_start, "grid_level": level, "density_fitted": fitted,
            "converged": bool(mf0.converged),
            "energy_hartree": float(mf0.e_tot), "cycles": int(getattr(mf0, "cycles", 0) or 0),
            "wall_s": time.perf_counter() - t0}
    log(f"warm start {'converged' if mf0.converged else 'NOT converged'}: "
        f"E = {mf0.e_tot:.10f} Ha in {info['cycles']} cycles ({info['wall_s']:.1f} s)")
    return dm, info


def _d3bj(mol, functional: str, grad: bool) -> dict:
    from pyscf.dispersion import dftd3

    try:
        model = dftd3.DFTD3Dispersion(mol, xc=functional.lower(), version="d3bj")
        return model.get_dispersion(grad=grad)
    except RuntimeError as exc:
        raise InputError(f"no D3(BJ) parameters for functional '{functional}' ({exc})",
                         field="dispersion") from exc


def dispersion_energy(mol, functional: str) -> float:
    """D3(BJ) dispersion energy in Hartree (simple-dftd3 parameters for `functional`)."""
    return float(_d3bj(mol, functional, grad=False)["energy"])


def dispersion_gradient(mol, functional: str) -> np.ndarray:
    """dE_D3(BJ)/dR (natm, 3) in Hartree/bohr, for `dispersion_energy`'s parameters."""
    return np.asarray(_d3bj(mol, functional, grad=True)["gradient"], dtype=float).reshape(-1, 3)


def load_network(spec, checkpoints=None):
    """The DM21 network for a DM21 job (None for other functionals)."""
    if not spec.is_dm21:
        return None
    from dm21cli.functional.network import DM21Network

    # "mixed" loads float64; build_scf derives the float32 copy for the SCF cycles
    precision = "float64" if spec.scf.precision == "mixed" else spec.scf.precision
    return DM21Network.load(spec.functional, checkpoints, precision=precision)
