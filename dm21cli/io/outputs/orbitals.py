"""Files of orbitals and densities: Gaussian cube, Molden and PySCF chkfile.

Atomic units throughout (the cube format wants bohr).  PySCF, numpy and h5py
are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from dm21cli.io.outputs.atomic import atomic_path, atomic_write

#: what `write_cube` can write.
CUBE_KINDS = ("density", "spin_density", "orbital")


#: default first line of a cube file, per kind (the caller may give a better one).
_CUBE_DEFAULT_COMMENT = {
    "density": "total electron density, e/bohr^3",
    "spin_density": "spin density (alpha - beta), e/bohr^3",
    "orbital": "orbital amplitude, bohr^-3/2",
}


#: grid points evaluated per block in `write_cube` (as pyscf.tools.cubegen).
_CUBE_BLOCK_POINTS = 8000


def cube_grid_shape(atom_coords_bohr, spacing_bohr: float, margin_bohr: float):
    """Points along x, y, z of a cube file's grid (floats; inf if absurdly many).

    The box is the atoms' bounding box plus `margin_bohr` on each side; the
    points include both box ends and are at most `spacing_bohr` apart.  One
    rule for `write_cube` and for the size check of the input validation.
    """
    import numpy as np

    coords = np.asarray(atom_coords_bohr, dtype=float).reshape(-1, 3)
    extent = coords.max(axis=0) - coords.min(axis=0) + 2 * float(margin_bohr)
    with np.errstate(over="ignore", invalid="ignore"):
        return np.maximum(2.0, np.ceil(extent / float(spacing_bohr) - 1e-9) + 1)


def write_cube(path: Path, mol, kind: str, *, dm=None, coeff=None,
               spacing_bohr: float, margin_bohr: float, comment: str = "") -> Path:
    """Write a Gaussian cube file of a density or an orbital; return the path.

    kind: ``"density"`` (`dm` = total density matrix), ``"spin_density"``
    (`dm` = dm_alpha - dm_beta) or ``"orbital"`` (`coeff` = one MO coefficient
    vector, AO basis).  The box is the atoms' bounding box plus `margin_bohr`
    on each side; points are at most `spacing_bohr` apart (the grid includes
    both box ends, so the actual spacing is box length / (points - 1), slightly
    below the requested one).  PySCF's `Cube` works in bohr.  Values are in e/bohr^3 (densities) or
    bohr^-3/2 (orbitals), coordinates in bohr, as the cube format wants.
    `comment` becomes the first line of the file.
    """
    import numpy as np
    from pyscf import lib
    from pyscf.dft import numint
    from pyscf.tools.cubegen import Cube

    if kind not in CUBE_KINDS:
        raise ValueError(f"cube kind must be one of {', '.join(CUBE_KINDS)}, not {kind!r}")
    if not spacing_bohr > 0 or not margin_bohr >= 0:
        raise ValueError("cube spacing must be > 0 and margin >= 0 (bohr)")
    if kind == "orbital":
        if coeff is None:
            raise ValueError("an orbital cube needs coeff (one MO coefficient vector)")
        coeff = np.asarray(coeff, dtype=float)
        if coeff.shape != (mol.nao_nr(),):
            raise ValueError(f"orbital coefficients must have shape ({mol.nao_nr()},), "
                             f"not {coeff.shape}")
    else:
        if dm is None:
            raise ValueError(f"a {kind} cube needs dm (a density matrix)")
        dm = np.asarray(dm, dtype=float)
        if dm.shape != (mol.nao_nr(), mol.nao_nr()):
            raise ValueError(f"density matrix must have shape ({mol.nao_nr()}, {mol.nao_nr()}), "
                             f"not {dm.shape} (pass alpha+beta or alpha-beta)")

    # PySCF's Cube(resolution=h) uses ceil(L/h) points including both box ends,
    # i.e. a spacing L/(ceil(L/h)-1) that can exceed h.  Choose the point counts
    # ourselves so that the spacing never exceeds the requested one.
    npts = [int(n) for n in cube_grid_shape(mol.atom_coords(), spacing_bohr, margin_bohr)]
    cube = Cube(mol, *npts, resolution=None, margin=float(margin_bohr))
    coords = cube.get_coords()
    ngrids = cube.get_ngrids()
    field = np.empty(ngrids)
    for p0, p1 in lib.prange(0, ngrids, _CUBE_BLOCK_POINTS):
        ao = mol.eval_gto("GTOval", coords[p0:p1])
        if kind == "orbital":
            field[p0:p1] = ao @ coeff
        else:
            field[p0:p1] = numint.eval_rho(mol, ao, dm, hermi=1)
    field = field.reshape(cube.nx, cube.ny, cube.nz)

    text = " ".join((comment or _CUBE_DEFAULT_COMMENT[kind]).split())  # one line
    path = Path(path)
    with atomic_path(path) as tmp:
        cube.write(field, str(tmp), comment=text)
    return path


def orbital_label(index: int, mo_occ, spin: str | None = None) -> str:
    """'HOMO', 'HOMO-1', 'LUMO+2', ... for 0-based orbital `index` of one spin set."""
    occupied = [i for i, o in enumerate(mo_occ) if o > 1e-8]
    homo = occupied[-1] if occupied else -1
    if index <= homo:
        label = "HOMO" if index == homo else f"HOMO-{homo - index}"
    else:
        label = "LUMO" if index == homo + 1 else f"LUMO+{index - homo - 1}"
    return f"{label}, {spin}" if spin else label


def write_molden(path: Path, mol, mo_energy, mo_coeff, mo_occ, spin: str | None = None) -> Path:
    """Write orbitals in Molden format (readable by ``pyscf.tools.molden.load``).

    Restricted: `mo_coeff` is (nao, nmo).  Unrestricted: arrays with a leading
    spin axis of 2 (as PySCF's UKS); both sets are written in one ``[MO]``
    section labelled ``Spin= Alpha`` / ``Spin= Beta``, exactly as
    ``molden.dump_scf`` does, and ``molden.load`` returns them as pairs.
    spin: None (infer from the array shape) or ``"Alpha"`` for a single
    restricted-shaped set.  A lone ``"Beta"`` set is refused: ``molden.load``
    cannot read a file whose only orbitals are labelled Beta.
    """
    import numpy as np
    from pyscf.tools import molden

    mo_coeff = np.asarray(mo_coeff, dtype=float)
    mo_energy = np.asarray(mo_energy, dtype=float)
    mo_occ = np.asarray(mo_occ, dtype=float)
    if mo_coeff.ndim == 3:
        if mo_coeff.shape[0] != 2 or mo_energy.shape[0] != 2 or mo_occ.shape[0] != 2:
            raise ValueError("unrestricted orbitals need a leading spin axis of length 2")
        if spin not in (None, "both"):
            raise ValueError("spin must be None for unrestricted (2, nao, nmo) orbitals")
        sets = [("Alpha", 0), ("Beta", 1)]
    elif mo_coeff.ndim == 2:
        if spin not in (None, "Alpha"):
            raise ValueError(f"spin must be None or 'Alpha' for one set of orbitals, not {spin!r} "
                             "(pyscf.tools.molden.load cannot read a lone Beta set)")
        sets = [("Alpha", None)]
    else:
        raise ValueError(f"mo_coeff must be 2- or 3-dimensional, not shape {mo_coeff.shape}")

    path = Path(path)
    with atomic_write(path, "w") as f:
        molden.header(mol, f)
        # orbital_coeff writes the "[MO]" line for Alpha only: one [MO] section
        # with Spin= labels, which molden.load splits back into (alpha, beta).
        for label, s in sets:
            c = mo_coeff if s is None else mo_coeff[s]
            e = mo_energy if s is None else mo_energy[s]
            o = mo_occ if s is None else mo_occ[s]
            molden.orbital_coeff(mol, f, c, spin=label, ene=e, occ=o)
    return path


def chkfile_bytes(mol, e_tot: float, mo_energy, mo_coeff, mo_occ) -> bytes:
    """A PySCF chkfile (HDF5) of an SCF state, built in memory.

    The layout is `pyscf.scf.chkfile.dump_scf`'s ('mol', 'scf/e_tot',
    'scf/mo_energy', 'scf/mo_occ', 'scf/mo_coeff'), so ``scf.chkfile.load_scf``
    and ``mf.from_chk`` read it.  Building it in memory keeps HDF5 away from
    the output disk: written with `write_bytes_atomic`, a full disk is an
    ordinary error instead of a half-written file (or a crash inside HDF5).
    """
    import io

    import h5py
    import numpy as np

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f["mol"] = mol.dumps()
        scf = f.create_group("scf")
        scf["e_tot"] = float(e_tot)
        scf["mo_energy"] = np.asarray(mo_energy)
        scf["mo_occ"] = np.asarray(mo_occ)
        scf["mo_coeff"] = np.asarray(mo_coeff)
    return buf.getvalue()
