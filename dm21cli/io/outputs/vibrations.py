"""Files and tables of a vibrational analysis: Molden, one .xyz movie per mode, summary lines.

The data come as plain arrays and dicts (`dm21cli.vib.harmonic.HarmonicResult.to_dict`,
`dm21cli.vib.thermo.thermochemistry`), as result.json holds them, so this module needs
nothing of `dm21cli.vib`.  Files are written atomically (`dm21cli.io.outputs.atomic`);
NumPy is imported inside the functions (``import dm21cli.io.outputs`` stays light).

The Molden file (format: https://www.theochem.ru.nl/molden/molden_format.html) has
``[Molden Format]``, ``[Atoms] AU`` (``symbol number Z x y z``, bohr), ``[FREQ]``
(cm^-1, one per line; an imaginary frequency as a negative number, as Psi4's
``print_molden_vibs`` writes it), ``[FR-COORD]`` (``symbol x y z``, bohr),
``[FR-NORM-COORD]`` (``vibration k`` and then one ``dx dy dz`` line per atom: the
Cartesian displacement of the mode normalised to length 1 over all atoms, as Psi4
writes it) and ``[INT]`` (IR intensities, km/mol, one per line) when they are known.
Jmol reads it (``tests/test_vib.py`` loads it in JmolData 14 and gets every frequency
and displacement back, displacements read as bohr); Molden and Avogadro were not at hand
to try (no Debian package of Molden; Avogadro 2 is a GUI).
"""

from __future__ import annotations

from pathlib import Path

from dm21cli.core.elements import ATOMIC_NUMBER
from dm21cli.core.units import BOHR_ANGSTROM
from dm21cli.io.outputs.atomic import write_text_atomic

#: frames of an .xyz movie (one period of the vibration) and the largest atomic
#: displacement in it (Angstrom)
MOVIE_FRAMES = 20
MOVIE_AMPLITUDE_ANGSTROM = 0.3


def _check(symbols, coords_bohr, wavenumbers_cm1, normal_modes, intensities_km_mol=None):
    """Arrays (N, 3), (n,), (n, N, 3), (n,) or None; ValueError on inconsistent shapes."""
    import numpy as np

    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3)
    waves = np.asarray(wavenumbers_cm1, dtype=float).reshape(-1)
    modes = np.asarray(normal_modes, dtype=float).reshape(len(waves), -1, 3)
    if len(symbols) != len(coords) or modes.shape[1] != len(coords):
        raise ValueError(f"{len(symbols)} symbols, {len(coords)} coordinates and modes of "
                         f"{modes.shape[1]} atoms do not match")
    ints = None
    if intensities_km_mol is not None:
        ints = np.asarray(intensities_km_mol, dtype=float).reshape(-1)
        if ints.shape != waves.shape:
            raise ValueError(f"{len(ints)} intensities for {len(waves)} modes")
    return coords, waves, modes, ints


def _tidy(values, decimals: int):
    """`values` (an array) rounded to the decimals printed, without negative zeros."""
    import numpy as np

    return np.round(values, decimals) + 0.0


def molden_text(symbols, coords_bohr, wavenumbers_cm1, normal_modes,
                intensities_km_mol=None) -> str:
    """The Molden file of a vibrational analysis (see the module docstring).

    symbols (N,), coords_bohr (N, 3), wavenumbers_cm1 (n,) negative for imaginary modes,
    normal_modes (n, N, 3) normalised Cartesian displacements, intensities_km_mol (n,) or None.
    """
    coords, waves, modes, ints = _check(symbols, coords_bohr, wavenumbers_cm1, normal_modes,
                                        intensities_km_mol)
    coords, modes = _tidy(coords, 10), _tidy(modes, 8)
    lines = ["[Molden Format]", "[Title]", "dm21 harmonic vibrational analysis", "[Atoms] AU"]
    for i, (symbol, xyz) in enumerate(zip(symbols, coords), start=1):
        lines.append(f"{symbol:<2} {i:4d} {ATOMIC_NUMBER[symbol]:3d} "
                     f"{xyz[0]:16.10f} {xyz[1]:16.10f} {xyz[2]:16.10f}")
    lines.append("[FREQ]")
    lines += [f"{w:14.4f}" for w in waves]
    lines.append("[FR-COORD]")
    lines += [f"{s:<2} {x[0]:16.10f} {x[1]:16.10f} {x[2]:16.10f}" for s, x in zip(symbols, coords)]
    lines.append("[FR-NORM-COORD]")
    for k, mode in enumerate(modes, start=1):
        lines.append(f"vibration {k}")
        lines += [f"{d[0]:14.8f} {d[1]:14.8f} {d[2]:14.8f}" for d in mode]
    if ints is not None:
        lines.append("[INT]")
        lines += [f"{i:14.4f}" for i in ints]
    return "\n".join(lines) + "\n"


def write_molden_vibrations(path: Path, symbols, coords_bohr, wavenumbers_cm1, normal_modes,
                            intensities_km_mol=None) -> Path:
    """Write `molden_text` to `path` atomically; return the path."""
    return write_text_atomic(Path(path), molden_text(symbols, coords_bohr, wavenumbers_cm1,
                                                     normal_modes, intensities_km_mol))


def wavenumber_text(wavenumber_cm1: float) -> str:
    """``1625.32`` or ``312.40i`` (an imaginary frequency, stored as a negative number)."""
    return f"{abs(wavenumber_cm1):.2f}i" if wavenumber_cm1 < 0 else f"{wavenumber_cm1:.2f}"


def mode_xyz_text(symbols, coords_bohr, mode, wavenumber_cm1: float, number: int,
                  frames: int = MOVIE_FRAMES,
                  amplitude_angstrom: float = MOVIE_AMPLITUDE_ANGSTROM) -> str:
    """An .xyz movie of one mode: `frames` frames over one period, x0 + A sin(2 pi f/frames)
    d, with d the mode (N, 3) scaled so that its largest atomic displacement is
    `amplitude_angstrom`; Angstrom.  Each comment line names the mode, its wavenumber and
    the frame: ``mode 7  wavenumber 1625.32 cm^-1  frame 3/20``."""
    import numpy as np

    coords = np.asarray(coords_bohr, dtype=float).reshape(-1, 3) * BOHR_ANGSTROM
    mode = np.asarray(mode, dtype=float).reshape(-1, 3)
    if mode.shape != coords.shape or len(symbols) != len(coords):
        raise ValueError(f"a mode of {len(mode)} atoms for {len(coords)} atoms")
    largest = np.linalg.norm(mode, axis=1).max()
    step = mode * (amplitude_angstrom / largest if largest > 0 else 0.0)
    lines = []
    for f in range(frames):
        frame = _tidy(coords + np.sin(2 * np.pi * f / frames) * step, 8)
        lines.append(str(len(coords)))
        lines.append(f"mode {number}  wavenumber {wavenumber_text(wavenumber_cm1)} cm^-1  "
                     f"frame {f + 1}/{frames}")
        lines += [f"{s:<2} {x[0]:14.8f} {x[1]:14.8f} {x[2]:14.8f}" for s, x in zip(symbols, frame)]
    return "\n".join(lines) + "\n"


def write_mode_movies(folder: Path, symbols, coords_bohr, wavenumbers_cm1, normal_modes,
                      prefix: str = "mode") -> list[Path]:
    """One .xyz movie per mode in `folder`: ``mode_01.xyz``, ``mode_02.xyz``, ... (numbered
    from 1 in the order of the modes, imaginary first); return the paths."""
    coords, waves, modes, _ = _check(symbols, coords_bohr, wavenumbers_cm1, normal_modes)
    width = max(2, len(str(len(waves))))
    paths = []
    for k, (w, mode) in enumerate(zip(waves, modes), start=1):
        path = Path(folder) / f"{prefix}_{k:0{width}d}.xyz"
        paths.append(write_text_atomic(path, mode_xyz_text(symbols, coords, mode, w, k)))
    return paths


def modes_table_lines(vib: dict) -> list[str]:
    """The table of modes for summary.txt, from `HarmonicResult.to_dict()` (result.json):
    mode, wavenumber (cm^-1; imaginary as ``312.40i``), imaginary flag, reduced mass (amu),
    force constant (mdyn/A), IR intensity (km/mol; ``-`` when unknown)."""
    waves = vib.get("wavenumbers_cm1") or []
    imag = vib.get("imaginary") or [w < 0 for w in waves]
    mu = vib.get("reduced_masses_amu") or [None] * len(waves)
    k = vib.get("force_constants_mdyn_angstrom") or [None] * len(waves)
    ints = vib.get("ir_intensities_km_mol") or [None] * len(waves)
    heads = ("mode", "wavenumber", "imaginary", "reduced mass", "force const.", "IR intensity")
    units = ("", "(cm^-1)", "", "(amu)", "(mdyn/A)", "(km/mol)")
    widths = (4, 12, 9, 12, 12, 12)
    lines = ["  " + "  ".join(f"{text:>{w}}" for text, w in zip(row, widths))
             for row in (heads, units)]
    for i, w in enumerate(waves):
        lines.append(f"  {i + 1:4d}  {wavenumber_text(w):>12}  {'yes' if imag[i] else '':>9}  "
                     f"{_cell(mu[i], '.4f')}  {_cell(k[i], '.4f')}  {_cell(ints[i], '.2f')}")
    residual = vib.get("trans_rot_wavenumbers_cm1")
    if residual:
        lines.append(f"  translations and rotations projected out ({len(residual)}): largest "
                     f"residual |wavenumber| {max(abs(x) for x in residual):.2f} cm^-1")
    return lines


def _cell(value, spec: str) -> str:
    return f"{'-' if value is None else format(value, spec):>12}"


#: rows of the thermochemistry table: (label, unit, key or (key, part))
_THERMO_ROWS = (
    ("ZPVE", "kcal/mol", "zpve_kcal_mol"),
    ("thermal energy correction", "kcal/mol", "thermal_energy_correction_kcal_mol"),
    ("enthalpy correction", "kcal/mol", "enthalpy_correction_kcal_mol"),
    ("entropy S", "cal/(mol K)", "entropy_cal_mol_K"),
    ("  translational", "cal/(mol K)", ("entropy_parts_cal_mol_K", "translational")),
    ("  rotational", "cal/(mol K)", ("entropy_parts_cal_mol_K", "rotational")),
    ("  vibrational", "cal/(mol K)", ("entropy_parts_cal_mol_K", "vibrational")),
    ("  electronic", "cal/(mol K)", ("entropy_parts_cal_mol_K", "electronic")),
    ("T S", "kcal/mol", "ts_kcal_mol"),
    ("Gibbs free energy correction", "kcal/mol", "gibbs_correction_kcal_mol"),
    ("electronic energy E0", "Eh", "electronic_energy_hartree"),
    ("E0 + ZPVE", "Eh", "zero_k_enthalpy_hartree"),
    ("thermal energy U", "Eh", "thermal_energy_hartree"),
    ("enthalpy H", "Eh", "enthalpy_hartree"),
    ("Gibbs free energy G", "Eh", "gibbs_free_energy_hartree"),
)


def thermo_table_lines(entries: list[dict]) -> list[str]:
    """The thermochemistry table for summary.txt, from `thermochemistry()` (one column per
    temperature), with the conditions above it: pressure, point group and symmetry number,
    rotational constants, the quasi-RRHO treatment and the modes left out."""
    if not entries:
        return []
    first = entries[0]
    pressure = first.get("pressure_Pa")
    lines = [(f"  ideal gas, rigid rotor, harmonic oscillator; P = {pressure:.6g} Pa "
              f"({pressure / 101325.0:.6g} atm), multiplicity {first.get('multiplicity')}")]
    lines.append(f"  point group {first.get('point_group')}, rotational symmetry number "
                 f"{first.get('symmetry_number')} ({first.get('symmetry_number_source')}); "
                 f"rotational constants (cm^-1): "
                 + " ".join(f"{b:.5g}" for b in first.get("rotational_constants_cm1") or []))
    qrrho = first.get("qrrho")
    if qrrho:
        parts = [f"entropy {qrrho['entropy']}" if qrrho.get("entropy") else "",
                 f"enthalpy {qrrho['enthalpy']}" if qrrho.get("enthalpy") else ""]
        lines.append(f"  quasi-RRHO: {', '.join(p for p in parts if p) or 'none'} "
                     f"(cutoff {qrrho['cutoff_cm1']:g} cm^-1)")
    if first.get("n_imaginary_excluded"):
        n = first["n_imaginary_excluded"]
        lines.append(f"  {n} imaginary mode{'s' if n > 1 else ''} left out of the vibrational "
                     f"terms")
    label_width = max(len(label) + len(unit) + 3 for label, unit, _ in _THERMO_ROWS)
    heads = "".join(f"{'T = ' + format(e['temperature_K'], 'g') + ' K':>18}" for e in entries)
    lines.append("  " + " " * label_width + heads)
    for label, unit, key in _THERMO_ROWS:
        spec = ".8f" if unit == "Eh" else ".4f"
        cells = "".join(f"{format(_value(e, key), spec):>18}" for e in entries)
        lines.append(f"  {(label + ' (' + unit + ')'):<{label_width}}{cells}")
    return lines


def _value(entry: dict, key):
    if isinstance(key, tuple):
        return entry[key[0]][key[1]]
    return entry[key]

