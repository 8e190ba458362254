"""The ``freq:`` section of a job file: harmonic frequencies and thermochemistry (``dm21 freq``).

The Hessian comes from central differences of analytic gradients: every atom moved by
``step`` bohr along x, y and z, both ways (6N gradients, `dm21cli.jobs.freq`).  The
rest of the section is the analysis (`dm21cli.vib`): the masses (most abundant isotopes,
or per atom), the temperatures and pressure of the thermochemistry, the rotational
symmetry number (default: from the point group), the quasi-RRHO treatment of low modes,
and the threshold below which an imaginary mode counts as numerical noise.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from dm21cli.io.inputs.fields import as_list, describe_value, float_range, SectionModel, to_float

#: the default step (bohr) of the central differences: chosen from measurements of DM21/def2-SVP
#: water (docs/tutorials/optimisation.md, "Frequencies"); the range a step may take
DEFAULT_STEP_BOHR = 0.005
STEP_RANGE_BOHR = (1e-4, 0.1)
#: the most temperatures one job computes its thermochemistry at
MAX_TEMPERATURES = 100
#: 1 atm in Pa (the pressure's default, given in atm at the edge)
ATM_PA = 101325.0


def _check_temperature(value: Any) -> float:
    t = to_float(value)
    if not 0.0 < t <= 1e5:
        raise ValueError(f"temperatures are in K, above 0 and at most 100000, got {t:g}")
    return t


def _check_temperatures(value: Any) -> list:
    values = as_list(value)
    if isinstance(values, list) and len(values) > MAX_TEMPERATURES:
        raise ValueError(f"{len(values)} temperatures; at most {MAX_TEMPERATURES}")
    return values


def _check_masses(value: Any) -> Any:
    """None, a list (one entry per atom) or a mapping {atom number: entry}; the entries are
    checked against the molecule by `dm21cli.vib.masses.atomic_masses` (validate)."""
    if value is None or isinstance(value, (list, dict)):
        return value
    raise ValueError(f"expected a list (one mass in u or isotope label per atom) or a mapping "
                     f"from atom numbers (from 1), got {describe_value(value)}")


def _check_qrrho(value: Any) -> Any:
    """false/null (plain RRHO), true (Grimme's entropy and Head-Gordon's enthalpy, cutoff
    100 cm^-1), or a mapping as `dm21cli.vib.thermo.check_qrrho` takes."""
    from dm21cli.vib.thermo import QRRHO_CUTOFF_CM1, check_qrrho

    if value is None or value is False:
        return None
    if value is True:
        value = {"entropy": "grimme", "enthalpy": "head-gordon", "cutoff_cm1": QRRHO_CUTOFF_CM1}
    if not isinstance(value, dict):
        raise ValueError(f"expected true, false or a mapping (entropy, enthalpy, cutoff_cm1), "
                         f"got {describe_value(value)}")
    from dm21cli.core.errors import InputError

    try:
        return check_qrrho(value)
    except InputError as exc:
        raise ValueError(exc.message) from None


def _check_symmetry_number(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 60:
        raise ValueError(f"expected an integer from 1 to 60 (or null: from the point group), "
                         f"got {describe_value(value)}")
    return value


class FreqSettings(SectionModel):
    """Section ``freq``: the Hessian's step and the harmonic analysis (``dm21 freq``)."""

    step: Annotated[float, float_range(gt=STEP_RANGE_BOHR[0] * 0.999,
                                        le=STEP_RANGE_BOHR[1])] = Field(
        DEFAULT_STEP_BOHR, description=f"Displacement of each atom along x, y and z for the "
                                       f"central differences [bohr] ({STEP_RANGE_BOHR[0]:g} to "
                                       f"{STEP_RANGE_BOHR[1]:g}).")
    temperatures: Annotated[list[Annotated[float, BeforeValidator(_check_temperature)]],
                            BeforeValidator(_check_temperatures)] = Field(
        default_factory=lambda: [298.15],
        description="Temperatures of the thermochemistry [K]; result.json's qcvars are at the first.")
    pressure: Annotated[float, float_range(gt=0, le=1e6)] = Field(
        1.0, description="Pressure of the thermochemistry [atm].")
    symmetry_number: Annotated[int | None, BeforeValidator(_check_symmetry_number)] = Field(
        None, description="Rotational symmetry number; null = from the point group.")
    qrrho: Annotated[dict | None, BeforeValidator(_check_qrrho)] = Field(
        None, description="Quasi-RRHO treatment of low modes: true (Grimme's entropy, "
                          "Head-Gordon's enthalpy, cutoff 100 cm^-1), false, or {entropy, "
                          "enthalpy, cutoff_cm1}.")
    masses: Annotated[list | dict | None, BeforeValidator(_check_masses)] = Field(
        None, description="Atomic masses [u] or isotope labels (D, 13C, ...): a list, one per "
                          "atom, or a mapping from atom numbers (from 1); null = the most "
                          "abundant isotopes.")
    imaginary_threshold: Annotated[float | None, float_range(ge=0, le=1000,
                                                              optional=True)] = Field(
        None, description="Imaginary modes up to this size [cm^-1] are taken for numerical "
                          "noise; null = dm21cli.vib's default (50).")

    def pressure_pa(self) -> float:
        return self.pressure * ATM_PA

    def resolved(self) -> dict:
        """The section with the defaults filled in (for input.resolved.yaml)."""
        from dm21cli.vib.harmonic import IMAGINARY_THRESHOLD_CM1

        return {"step": self.step, "temperatures": list(self.temperatures),
                "pressure": self.pressure, "symmetry_number": self.symmetry_number,
                "qrrho": self.qrrho, "masses": self.masses,
                "imaginary_threshold": (IMAGINARY_THRESHOLD_CM1 if self.imaginary_threshold is None
                                        else self.imaginary_threshold)}
