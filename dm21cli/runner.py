"""Run one job: geometry, basis, functional, SCF, properties, output files.

`run_job(spec)` is the library entry point that ``dm21 run`` wraps; scripts
can call it too.  It returns the result dictionary that is also written to
``result.json`` (shaped after QCSchema's AtomicResult).  A non-converged SCF
is returned with ``success: False`` and ``converged: False``; the caller
decides the exit status.  Errors before the output directory is created leave
no directory behind; errors after it leave a ``result.json`` saying what
failed.
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dm21cli import __version__
from dm21cli import interrupts
from dm21cli import outputs as out
from dm21cli import resources
from dm21cli.errors import ComputeError, DM21Error, InputError, from_os_error, reraise_os_error

#: SCF convergence of the warm-start functional (Hartree); its density is
#: only a starting point, so a moderate threshold is enough: DM21's own first
#: step changes the density matrix by about 1e-2 (water/def2-TZVP), the
#: warm start's last one by 5e-4 at this threshold.
WARM_START_CONV_TOL = 1e-6
#: File names inside the job directory.
FILES = {
    "result": "result.json",
    "summary": "summary.txt",
    "molden": "orbitals.molden",
    "chkfile": "scf.chk",
    "input": "input.resolved.yaml",
    "log": "dm21.log",
}
#: The SCF state is written to scf.chk at most this often while it changes
#: (every state is kept in memory; the last one is always written when an
#: attempt, the warm start or the run ends, also when it is interrupted).
CHECKPOINT_INTERVAL_S = 10.0

Reporter = Callable[[str], None]


class _Log:
    """Writes timestamped lines to the job log and forwards them to a reporter.

    Every line is also a safe point for a lost SIGINT/SIGTERM
    (`interrupts.check`).  A failed write (disk full) raises the error that
    says so once; the log file is then given up and later lines only go to
    the reporter, so that the failure can still be reported and recorded.
    """

    def __init__(self, stream, reporter: Reporter | None, path: Path | None = None):
        self.stream = stream
        self.reporter = reporter
        self.path = path

    def __call__(self, message: str) -> None:
        interrupts.check()
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        if self.stream is not None:
            try:
                self.stream.write(f"[dm21 {stamp}] {message}\n")
                self.stream.flush()
            except OSError as exc:
                self.stream = None
                reraise_os_error(exc, self.path)
        if self.reporter is not None:
            self.reporter(message)


class _ScfCheckpoint:
    """The run's last SCF state: kept in memory, written to scf.chk atomically.

    PySCF's own chkfile writing is switched off (``mf.chkfile = None``): it
    updates an HDF5 file in place, so an interruption or a full disk could
    leave half a file, and HDF5 itself crashed on a full disk.  Here the file
    is built in memory (`dm21cli.outputs.chkfile_bytes`) and renamed into
    place, so ``scf.chk`` is always a complete restart file (or absent).
    """

    def __init__(self, path: Path, mol):
        self.path = path
        self.mol = mol
        self.state: tuple | None = None
        self.written = False  # the file holds the current state
        self._last_write = -float("inf")

    def update(self, e_tot, mo_energy, mo_coeff, mo_occ, final: bool = False) -> None:
        """Keep this state; write it if `final` or CHECKPOINT_INTERVAL_S have passed."""
        self.state = (float(e_tot), mo_energy, mo_coeff, mo_occ)
        self.written = False
        if final or time.monotonic() - self._last_write >= CHECKPOINT_INTERVAL_S:
            self.write()

    def write(self) -> bool:
        """Write the current state unless the file already holds it; returns whether a file exists."""
        if self.state is not None and not self.written:
            e_tot, mo_energy, mo_coeff, mo_occ = self.state
            out.write_bytes_atomic(self.path, out.chkfile_bytes(self.mol, e_tot, mo_energy,
                                                                 mo_coeff, mo_occ))
            self.written = True
            self._last_write = time.monotonic()
        return self.written


#: DM21 phases that get a log line when an evaluation starts them (the long ones).
_LOGGED_PHASES = {"integral memory": "mapping the memory of the exchange-integral cache",
                  "exchange integrals": "computing the exchange integrals (grid points in {blocks})"}


def _dm21_progress(log: _Log):
    """A `DM21XC.progress` hook: a log line when an evaluation starts one of
    _LOGGED_PHASES, and every phase to the reporter's live status line if the
    reporter has one (``reporter.status(text)``, see `dm21cli.commands.common`)."""
    status = getattr(log.reporter, "status", None)
    logged: set = set()

    def progress(step: str, phase: str, block: int, nblocks: int) -> None:
        if phase in _LOGGED_PHASES and (step, phase) not in logged:
            logged.add((step, phase))
            blocks = f"{nblocks} block{'s' if nblocks > 1 else ''}"
            log(f"  DM21 {step}: " + _LOGGED_PHASES[phase].format(blocks=blocks))
        if status is not None:
            status(f"DM21 {step}: {phase}, block {block + 1} of {nblocks}")

    return progress


# ----------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------
def build_molecule(spec, stream=None, max_memory_mb: float = 4000.0):
    """A built pyscf Mole for the spec (coordinates in bohr).

    Every element whose basis has an effective core potential gets it
    (`dm21cli.inputs.ecp_map`, the same rule validation used).
    """
    from pyscf import gto

    mol = gto.Mole()
    mol.atom = spec.molecule.pyscf_atom()
    mol.unit = "Bohr"
    mol.basis = spec.pyscf_basis()
    ecp = spec.pyscf_ecp()
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


def build_grids(mol, spec):
    """DFT integration grid at the spec's level (legacy radial grids if asked)."""
    from pyscf.dft import gen_grid

    grids = gen_grid.Grids(mol)
    grids.level = spec.scf.grid_level
    if spec.scf.legacy_grids:
        from dm21cli.ks import use_legacy_grids

        use_legacy_grids(grids)
    return grids


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
        from dm21cli.ks import DM21RKS, DM21UKS
        from dm21cli.xc import DM21XC

        scf_network = network.astype(np.float32) if spec.scf.precision == "mixed" else None
        xc = DM21XC(network, max_memory_mb=max_memory_mb, scf_network=scf_network,
                    integral_dtype=integral_dtype(spec))
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
    _share_settings(mf, spec, grids, max_memory_mb)
    mf.conv_tol = spec.effective_conv_tol()
    mf.conv_tol_grad = spec.effective_conv_tol_grad()
    mf.max_cycle = spec.scf.max_cycle
    return mf


def _share_settings(mf, spec, grids, max_memory_mb) -> None:
    """What the warm start and the main SCF share: grid, memory, density cutoff, guess."""
    mf.grids = grids
    mf.max_memory = max_memory_mb
    if spec.scf.small_rho_cutoff is not None:
        mf.small_rho_cutoff = spec.scf.small_rho_cutoff
    if spec.scf.guess != "auto" and not spec.scf.guess_is_chkfile():
        mf.init_guess = spec.scf.guess


def _warm_start(mol, spec, grids, max_memory_mb, log, main=None, checkpoint=None):
    """Converge spec.scf.warm_start (e.g. B3LYP); returns (dm, info dict).

    main: the SCF that follows; it is handed the in-core two-electron
    integrals the warm start computed, so they are computed once.
    checkpoint: a `_ScfCheckpoint` that receives every cycle's state, and the
    converged one for writing, so an interruption before the first DM21
    evaluation leaves a restart file.
    """
    from pyscf import dft

    t0 = time.perf_counter()
    restricted = spec.resolved_restricted()
    if restricted and mol.spin == 0:
        mf0 = dft.RKS(mol, xc=spec.scf.warm_start)
    else:
        mf0 = dft.UKS(mol, xc=spec.scf.warm_start)
    _share_settings(mf0, spec, grids, max_memory_mb)
    mf0.conv_tol = WARM_START_CONV_TOL
    mf0.conv_check = False  # a starting density needs no confirming extra cycle
    mf0.max_cycle = max(spec.scf.max_cycle, 50)
    mf0.chkfile = None  # the run keeps its own restart file (_ScfCheckpoint)

    def each_cycle(envs):
        interrupts.check()
        if checkpoint is not None and envs.get("mo_coeff") is not None:
            checkpoint.update(envs["e_tot"], envs["mo_energy"], envs["mo_coeff"], envs["mo_occ"])

    mf0.callback = each_cycle
    log(f"warm start: {spec.scf.warm_start} SCF")
    mf0.kernel()
    if checkpoint is not None:
        checkpoint.update(mf0.e_tot, mf0.mo_energy, mf0.mo_coeff, mf0.mo_occ, final=True)
    if main is not None and getattr(mf0, "_eri", None) is not None:
        main._eri = mf0._eri
    dm = mf0.make_rdm1()
    if restricted and mol.spin != 0:  # ROKS-like start for a restricted open shell
        dm = dm[0] + dm[1]
    info = {"functional": spec.scf.warm_start, "converged": bool(mf0.converged),
            "energy_hartree": float(mf0.e_tot), "cycles": int(getattr(mf0, "cycles", 0) or 0),
            "wall_s": time.perf_counter() - t0}
    log(f"warm start {'converged' if mf0.converged else 'NOT converged'}: "
        f"E = {mf0.e_tot:.10f} Ha in {info['cycles']} cycles ({info['wall_s']:.1f} s)")
    return dm, info


def dispersion_energy(mol, functional: str) -> float:
    """D3(BJ) dispersion energy in Hartree (simple-dftd3 parameters for `functional`)."""
    from pyscf.dispersion import dftd3

    try:
        model = dftd3.DFTD3Dispersion(mol, xc=functional.lower(), version="d3bj")
        return float(model.get_dispersion()["energy"])
    except RuntimeError as exc:
        raise InputError(f"no D3(BJ) parameters for functional '{functional}' ({exc})",
                         field="dispersion") from exc


def _frontier(mo_energy, mo_occ) -> tuple[float | None, float | None]:
    """(HOMO, LUMO) energies in Hartree over all spin channels."""
    e = np.asarray(mo_energy).ravel()
    occ = np.asarray(mo_occ).ravel()
    homo = float(e[occ > 0].max()) if np.any(occ > 0) else None
    lumo = float(e[occ == 0].min()) if np.any(occ == 0) else None
    return homo, lumo


def _orbital_by_spin(mo_energy, mo_occ, restricted: bool):
    """Yield (spin label or None, index (0-based), energy, occupation arrays)."""
    if restricted:
        return [(None, np.asarray(mo_energy), np.asarray(mo_occ))]
    return [("alpha", np.asarray(mo_energy[0]), np.asarray(mo_occ[0])),
            ("beta", np.asarray(mo_energy[1]), np.asarray(mo_occ[1]))]


def properties(mf, spec, e_disp: float | None) -> dict:
    """Energy terms and one-electron properties of a finished SCF."""
    summary = dict(getattr(mf, "scf_summary", {}) or {})
    restricted = np.asarray(mf.mo_occ).ndim == 1
    homo, lumo = _frontier(mf.mo_energy, mf.mo_occ)
    _, charges = mf.mulliken_pop(verbose=0)
    dipole_debye = np.asarray(mf.dip_moment(unit="Debye", verbose=0), dtype=float)
    s2 = mult = None
    if not restricted:
        s2, mult = mf.spin_square()
    e_scf = float(mf.e_tot)
    props = {
        "return_energy": e_scf + (e_disp or 0.0),
        "scf_total_energy": e_scf,
        "nuclear_repulsion_energy": float(summary.get("nuc", mf.energy_nuc())),
        "scf_one_electron_energy": _real(summary.get("e1")),
        "scf_coulomb_energy": _real(summary.get("coul")),
        "scf_xc_energy": _real(summary.get("exc")),
        "dispersion_energy": e_disp,
        "mo_energies_hartree": np.asarray(mf.mo_energy).tolist(),
        "mo_occupations": np.asarray(mf.mo_occ).tolist(),
        "homo_energy_hartree": homo,
        "lumo_energy_hartree": lumo,
        "homo_lumo_gap_hartree": (lumo - homo) if homo is not None and lumo is not None else None,
        "mulliken_charges": np.asarray(charges, dtype=float).tolist(),
        "dipole_moment_debye": dipole_debye.tolist(),
        "dipole_moment_total_debye": float(np.linalg.norm(dipole_debye)),
        "s_squared": None if s2 is None else float(s2),
        "spin_multiplicity_computed": None if mult is None else float(mult),
        "restricted": bool(restricted),
        "nao": int(mf.mol.nao_nr()),
        "nelectron": int(mf.mol.nelectron),
        "grid_points": int(len(mf.grids.weights)) if getattr(mf.grids, "weights", None) is not None else None,
    }
    return props


def _final_dm21_energy(mf, log) -> dict | None:
    """Precision "mixed": the float64 E_xc of the converged density replaces the float32 one.

    Changes mf.e_tot and mf.scf_summary['exc']; returns both values, their
    difference and the wall time, or None when the SCF ran in one precision.
    """
    if not mf.dm21.mixed:
        return None
    from dm21cli.ks import _split_spin

    t0 = time.perf_counter()
    restricted, dm_spin, _ = _split_spin(mf.make_rdm1())
    info = mf.dm21.final_correction(mf.mol, mf.grids, dm_spin, restricted)
    mf.e_tot = float(mf.e_tot) + info["correction_hartree"]
    if getattr(mf, "scf_summary", None) is not None:
        mf.scf_summary["exc"] = info["exc_final_hartree"]
    info["wall_s"] = time.perf_counter() - t0
    log(f"final E_xc in float64 on the converged density: {info['exc_final_hartree']:.10f} Ha "
        f"({info['correction_hartree']:+.2e} Ha against float32, {info['wall_s']:.1f} s)")
    return info


def _real(value) -> float | None:
    return None if value is None else float(np.real(value))


def provenance(res: dict, spec, network) -> dict:
    import pyscf

    from dm21cli import kernels

    prov = {
        "creator": "dm21cli", "version": __version__, "routine": "dm21cli.runner.run_job",
        "pyscf": pyscf.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "hostname": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": res["threads"], "threads_source": res["threads_source"],
        "memory_mb": res["memory_mb"], "memory_source": res["memory_source"],
        "compiled_kernels": kernels.available(),
        "command": " ".join(sys.argv),
        "checkpoint": None,
    }
    try:
        import scipy

        prov["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    if network is not None:
        from dm21cli import weights

        prov["checkpoint"] = {
            "variant": network.name, "path": str(getattr(network, "source", "")),
            "precision": spec.scf.precision,
            "sha256": dict(weights.CHECKSUMS[network.name]),
        }
    return prov


# ----------------------------------------------------------------------
# cube and molden files
# ----------------------------------------------------------------------
def _cube_jobs(spec, mf) -> list[tuple[str, str, dict, str]]:
    """(file name, kind, arrays, comment) for every requested cube."""
    restricted = np.asarray(mf.mo_occ).ndim == 1
    method = spec.functional
    dm = np.asarray(mf.make_rdm1())
    jobs = []
    channels = _orbital_by_spin(mf.mo_energy, mf.mo_occ, restricted)
    coeffs = [mf.mo_coeff] if restricted else [mf.mo_coeff[0], mf.mo_coeff[1]]

    def orbital(spin_index: int, idx: int, label: str, fname: str):
        spin, energy, occ = channels[spin_index]
        spin_txt = f", {spin}" if spin else ""
        comment = (f"{method} orbital {idx + 1} ({label}{spin_txt}), energy {energy[idx]:.6f} Ha, "
                   f"occupation {occ[idx]:g}")
        jobs.append((fname, "orbital", {"coeff": coeffs[spin_index][:, idx]}, comment))

    for request in spec.outputs.cube_requests():
        if request == "density":
            total = dm if restricted else dm[0] + dm[1]
            jobs.append(("density.cube", "density", {"dm": total}, f"{method} total electron density, e/bohr^3"))
        elif request == "spin_density":
            spin_dm = np.zeros_like(dm) if restricted else dm[0] - dm[1]
            jobs.append(("spin_density.cube", "spin_density", {"dm": spin_dm},
                         f"{method} spin density (alpha - beta), e/bohr^3"))
        elif request in ("homo", "lumo"):
            for s, (spin, energy, occ) in enumerate(channels):
                if request == "homo":
                    idx_set = np.flatnonzero(occ > 0)
                    if len(idx_set) == 0:
                        continue
                    idx = int(idx_set[np.argmax(energy[idx_set])])
                else:
                    idx_set = np.flatnonzero(occ == 0)
                    if len(idx_set) == 0:
                        continue
                    idx = int(idx_set[np.argmin(energy[idx_set])])
                suffix = f"_{spin}" if spin else ""
                orbital(s, idx, request.upper(), f"{request}{suffix}.cube")
        elif request.startswith("orbital:"):
            token = request.split(":", 1)[1]
            spin_index = 0
            if token[-1] in "ab":
                spin_index = 0 if token[-1] == "a" else 1
                token = token[:-1]
            idx = int(token) - 1
            if restricted:
                orbital(0, idx, out.orbital_label(idx, mf.mo_occ), f"orbital_{idx + 1}.cube")
                continue
            spin = channels[spin_index][0]
            orbital(spin_index, idx, out.orbital_label(idx, mf.mo_occ[spin_index], spin),
                    f"orbital_{idx + 1}_{spin}.cube")
    return jobs


def write_cube_files(jobdir, spec, mf, log) -> dict:
    """The requested cube files; returns {request: file name}."""
    from dm21cli.units import ANGSTROM_BOHR

    cubes: dict = {}
    spacing_bohr = spec.outputs.cube_spacing * ANGSTROM_BOHR
    margin_bohr = spec.outputs.cube_margin * ANGSTROM_BOHR
    for fname, kind, arrays, comment in _cube_jobs(spec, mf):
        log(f"writing {fname}")
        out.write_cube(jobdir.file(fname), mf.mol, kind, spacing_bohr=spacing_bohr,
                       margin_bohr=margin_bohr, comment=comment, **arrays)
        cubes[fname.removesuffix(".cube")] = fname
    return cubes


# ----------------------------------------------------------------------
# the job
# ----------------------------------------------------------------------
def load_network(spec, checkpoints=None):
    """The DM21 network for a DM21 job (None for other functionals)."""
    if not spec.is_dm21:
        return None
    from dm21cli.network import DM21Network

    # "mixed" loads float64; build_scf derives the float32 copy for the SCF cycles
    precision = "float64" if spec.scf.precision == "mixed" else spec.scf.precision
    return DM21Network.load(spec.functional, checkpoints, precision=precision)


def run_job(spec, *, checkpoints=None, overwrite: bool = False,
            reporter: Reporter | None = None) -> dict:
    """Run the job described by `spec` (a validated `dm21cli.inputs.JobSpec`).

    checkpoints: DM21 checkpoint root (else the documented search);
    overwrite: replace an existing output directory;
    reporter: called with one progress line at a time; if it has a
    ``status(text)`` method, that is called with each phase of a DM21
    evaluation as it starts (for a live status line, not for logs).
    Returns the result dict (also written to result.json).

    Order of writes (README, "The output directory"): ``input.resolved.yaml``
    and ``dm21.log`` first; ``scf.chk`` whenever the SCF state is saved;
    then ``orbitals.molden``; then ``result.json``, the commit point of the
    run, with ``summary.txt`` (rendered from it) renamed into place right
    after it; then the cube files, after which result.json is written again
    listing them.  The commit runs to its end even if SIGINT/SIGTERM arrives
    (`interrupts.deferred`); a signal after it leaves result.json as it is
    and still ends the run with KeyboardInterrupt (exit 130).  A run that
    fails or is interrupted before the commit writes result.json and
    summary.txt saying so, and scf.chk holds its last SCF state.
    """
    t_start = time.perf_counter()
    res = resources.resolve(spec.resources.threads, spec.memory_mb())
    resources.apply_threads(res["threads"])
    network = load_network(spec, checkpoints)  # weights errors before any directory exists
    if network is not None:
        network.workers = res["threads"]

    with tempfile.TemporaryDirectory(prefix="dm21-guess-") as scratch:
        guess_chk = None
        if spec.scf.guess_is_chkfile():
            # copy first: the chkfile may live in the directory an overwrite moves aside
            guess_chk = Path(scratch) / "guess.chk"
            shutil.copyfile(spec.guess_chkfile(), guess_chk)
        jobdir = out.JobDirectory(spec.output_path(), overwrite=overwrite).prepare()
        run = _Run(spec, jobdir, res, network, reporter, t_start)
        try:
            run.start()
            with _pyscf_warnings_only_in_log():
                return _compute(spec, run, guess_chk)
        except BaseException as exc:
            error = run.fail(exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            run.close()


class _Run:
    """One run's output directory, log, restart file and commit state."""

    def __init__(self, spec, jobdir, res: dict, network, reporter: Reporter | None,
                 t_start: float):
        self.spec, self.jobdir, self.res, self.network = spec, jobdir, res, network
        self.reporter = reporter
        self.t_start = t_start
        self.log = _Log(None, reporter)
        self.checkpoint: _ScfCheckpoint | None = None
        #: result.json holds this run's finished result (success or not-converged)
        self.committed = False
        self.status: str | None = None

    def start(self) -> None:
        path = self.jobdir.file(FILES["log"])
        try:
            self.log = _Log(open(path, "w", buffering=1, encoding="utf-8"), self.reporter, path)
        except OSError as exc:
            reraise_os_error(exc, path)
        out.write_text_atomic(self.jobdir.file(FILES["input"]), self.spec.to_resolved_yaml())

    def commit(self, result: dict) -> None:
        """Write result.json (the commit point) and summary.txt; nothing interrupts it."""
        with interrupts.deferred():
            out.write_text_files_atomic([
                (self.jobdir.file(FILES["result"]), _json_text(result)),
                (self.jobdir.file(FILES["summary"]), out.render_summary(result)),
            ])
            self.committed = True
            self.status = result["status"]

    def fail(self, exc: BaseException) -> BaseException:
        """Record a run that ends with `exc`; returns the exception to raise.

        Before the commit: the last SCF state goes to scf.chk, and result.json
        and summary.txt say what happened.  After it, result.json is kept as
        it is.  KeyboardInterrupt comes back with a message saying what is on
        disk; an OSError for a full disk or an unwritable file becomes the
        dm21cli error that says so; any other unexpected error a ComputeError.
        """
        with interrupts.deferred():
            interrupted = isinstance(exc, KeyboardInterrupt)
            if interrupted:
                interrupts.acknowledge()
            error: BaseException = exc
            if isinstance(exc, OSError):
                error = from_os_error(exc)
            if not isinstance(error, (DM21Error, KeyboardInterrupt, MemoryError)):
                error = ComputeError(f"calculation failed: {exc.__class__.__name__}: {exc} "
                                     f"(log: {self.jobdir.file(FILES['log'])})")
            result_path = self.jobdir.file(FILES["result"])
            if self.committed:
                what = f"{result_path} holds the finished result ({self.status})"
                self._safe_log(f"run {'interrupted' if interrupted else 'failed'} after the "
                               f"results were written: {exc.__class__.__name__}: {exc}; {what}")
                if interrupted:
                    return KeyboardInterrupt(f"{interrupts.message()} after the results were "
                                             f"written; {what}")
                if isinstance(error, DM21Error):
                    error.args = (f"{error}; {what}",)
                return error
            self.status = "interrupted" if interrupted else "failed"
            self._safe_log(f"run {self.status}: {exc.__class__.__name__}: {exc}")
            chk = self._save_checkpoint()
            self._write_failure(error, exc)
            if interrupted:
                restart = (f"the last SCF state is in {chk} (restart with scf.guess)" if chk
                           else "no SCF cycle had finished")
                return KeyboardInterrupt(f"{interrupts.message()}; {restart}")
            return error

    def close(self) -> None:
        """Remove .running, deal with the directory an overwrite moved aside, close the log."""
        with interrupts.deferred():
            try:
                kept = self.jobdir.finalize(self.status or "failed", keep_old=not self.committed)
                if kept is not None:
                    self._safe_log(f"the previous results were kept in {kept}")
            finally:
                if self.log.stream is not None:
                    with contextlib.suppress(OSError):
                        self.log.stream.close()

    def _safe_log(self, message: str) -> None:
        with contextlib.suppress(Exception):
            self.log(message)

    def _save_checkpoint(self) -> Path | None:
        """Write the last SCF state to scf.chk if not done yet; its path, or None."""
        if self.checkpoint is None:
            return None
        try:
            return self.checkpoint.path if self.checkpoint.write() else None
        except Exception as exc:  # noqa: BLE001 - a full disk must not hide the original error
            self._safe_log(f"could not write {self.checkpoint.path}: {exc}")
            return self.checkpoint.path if self.checkpoint.path.exists() else None

    def _write_failure(self, error: BaseException, exc: BaseException) -> None:
        try:
            result = _base_result(self.spec, self.res, self.network)
            result["status"] = self.status
            result["error"] = {"error_type": exc.__class__.__name__,
                               "error_message": str(error) or str(exc) or self.status}
            result["timings_s"] = {"total": time.perf_counter() - self.t_start}
            result["files"] = {k: v for k, v in FILES.items()
                               if k in ("result", "summary") or self.jobdir.file(v).exists()}
            out.write_text_files_atomic([
                (self.jobdir.file(FILES["result"]), _json_text(result)),
                (self.jobdir.file(FILES["summary"]), out.render_summary(result)),
            ])
        except Exception as write_error:  # noqa: BLE001 - never mask the original error
            self._safe_log(f"could not record the failure in {FILES['result']}: {write_error}")


def _json_text(result: dict) -> str:
    """result.json's text (NaN and infinities become null)."""
    import json

    return json.dumps(out.finite(result), indent=2, allow_nan=False, default=out._json_default,
                      ensure_ascii=False) + "\n"


class _DropPySCFWarnings:
    """A stderr that drops PySCF's copies of its warnings (they are in dm21.log).

    PySCF's logger writes each warning to the log file and, when the log is a
    file, once more to stderr.  For DM21 some are routine (HOMO >= LUMO at a
    non-aufbau solution, a chkfile guess from another geometry in a scan), and
    they would break the one-line-per-event stderr of the command line.
    """

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        if text.startswith("WARN: "):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _pyscf_warnings_only_in_log():
    saved = sys.stderr
    sys.stderr = _DropPySCFWarnings(saved)
    try:
        yield
    finally:
        sys.stderr = saved


def _ecp_record(spec) -> dict:
    """``model.ecp``: {element: {basis, core_electrons}} or None; and for DM21 the note that
    DM21 was trained on all-electron calculations."""
    from dm21cli.inputs import ECP_DM21_NOTE, ecp_map

    ecp = ecp_map(spec)
    record: dict = {"ecp": {symbol: {"basis": entry.basis, "core_electrons": entry.core_electrons}
                            for symbol, entry in ecp.items()} or None}
    if ecp and spec.is_dm21:
        record["ecp_note"] = ECP_DM21_NOTE
    return record


def _base_result(spec, res, network) -> dict:
    mol = spec.molecule
    return {
        "schema_name": "dm21cli_result", "schema_version": 1,
        "success": False, "converged": False, "driver": "energy",
        "model": {"method": spec.functional, "basis": spec.basis_label(),
                  "dispersion": spec.dispersion, **_ecp_record(spec)},
        "molecule": {"symbols": list(mol.symbols),
                     "geometry_bohr": np.asarray(mol.coords_bohr()).tolist(),
                     "molecular_charge": mol.charge, "molecular_multiplicity": mol.multiplicity},
        "return_energy": None, "properties": {}, "timings_s": {}, "files": {},
        "provenance": provenance(res, spec, network), "input": spec.to_resolved_dict(),
        "error": None,
    }


def _compute(spec, run: _Run, guess_chk=None) -> dict:
    from dm21cli.scf import run_with_escalation

    jobdir, network, res, log = run.jobdir, run.network, run.res, run.log
    timings: dict = {}
    log(f"dm21cli {__version__}: {spec.functional}/{spec.basis_label()} on "
        f"{spec.molecule.formula()} (charge {spec.molecule.charge}, "
        f"multiplicity {spec.molecule.multiplicity}); {res['threads']} threads "
        f"({res['threads_source']}), {res['memory_mb']} MB ({res['memory_source']})")
    mol = build_molecule(spec, stream=log.stream, max_memory_mb=res["memory_mb"])
    grids = build_grids(mol, spec)
    mf = build_scf(mol, spec, grids, network, max_memory_mb=res["memory_mb"])
    mf.chkfile = None  # the run keeps its own restart file
    checkpoint = run.checkpoint = _ScfCheckpoint(jobdir.file(FILES["chkfile"]), mol)
    if network is not None:
        mf.dm21.progress = _dm21_progress(log)
    log(f"{'restricted' if spec.resolved_restricted() else 'unrestricted'} "
        f"{'DM21 network (' + spec.scf.precision + ')' if network else 'PySCF/libxc'}, "
        f"{mol.nao_nr()} basis functions, grid level {spec.scf.grid_level}"
        f"{' (legacy radial grids)' if spec.scf.legacy_grids else ''}")

    dm0 = None
    warm = None
    if guess_chk is not None:
        log(f"initial guess from chkfile {spec.guess_chkfile()}")
        dm0 = mf.from_chk(str(guess_chk))
    elif network is not None and spec.scf.warm_start:
        dm0, warm = _warm_start(mol, spec, grids, res["memory_mb"], log, main=mf,
                                checkpoint=checkpoint)
        timings["warm_start"] = warm["wall_s"]
    if grids.coords is None:
        grids.build(with_non0tab=True)
    log(f"{len(grids.weights)} grid points")

    t0 = time.perf_counter()
    converged, attempts = run_with_escalation(mf, dm0, max_attempts=spec.scf.max_attempts,
                                              log=log, on_state=checkpoint.update)
    final_energy = _final_dm21_energy(mf, log) if network is not None else None
    timings["scf"] = time.perf_counter() - t0

    e_disp = None
    if spec.dispersion == "d3bj":
        e_disp = dispersion_energy(mol, spec.functional)
        log(f"D3(BJ) dispersion energy {e_disp:.10f} Ha")

    t0 = time.perf_counter()
    props = properties(mf, spec, e_disp)
    props["scf_iterations"] = int(sum(a.cycles for a in attempts))
    props["scf_attempts"] = [a.to_dict() for a in attempts]
    props["warm_start"] = warm
    if network is not None:
        props["dm21_evaluations"] = int(mf.dm21.n_evaluations)
        props["dm21_timings_s"] = dict(mf.dm21.timings_s)
        props["dm21_exchange_integrals"] = mf.dm21.integrals_summary()
        props["dm21_network_points"] = int(network.points_evaluated
                                           + mf.dm21.scf_network.points_evaluated * mf.dm21.mixed)
        props["dm21_final_energy"] = final_energy

    result = _base_result(spec, run.res, network)
    result.update({"success": bool(converged), "converged": bool(converged),
                   "status": "success" if converged else "not-converged",
                   "return_energy": props["return_energy"], "properties": props})
    if not converged:
        result["error"] = {"error_type": "ConvergenceError",
                           "error_message": f"SCF not converged after {len(attempts)} attempts "
                                            f"({props['scf_iterations']} cycles)"}
    # files that claim nothing by themselves come first, each complete under its name
    checkpoint.update(mf.e_tot, mf.mo_energy, mf.mo_coeff, mf.mo_occ, final=True)
    files = {"result": FILES["result"], "summary": FILES["summary"], "input": FILES["input"],
             "log": FILES["log"], "chkfile": FILES["chkfile"]}
    if spec.outputs.molden:
        out.write_molden(jobdir.file(FILES["molden"]), mf.mol, mf.mo_energy, mf.mo_coeff,
                         mf.mo_occ)
        files["molden"] = FILES["molden"]
    result["files"] = files
    timings["outputs"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - run.t_start
    result["timings_s"] = timings
    run.commit(result)  # the commit point: from here on the result is on disk

    cube_jobs = spec.outputs.cube_requests()
    if cube_jobs:
        t0 = time.perf_counter()
        files["cubes"] = write_cube_files(jobdir, spec, mf, log)
        timings["cubes"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - run.t_start
        run.commit(result)  # the same result, now listing the cube files
    state = "converged" if converged else "NOT CONVERGED"
    log(f"{state}: E = {props['return_energy']:.10f} Ha; results in {jobdir.path}")
    return out.finite(result)
