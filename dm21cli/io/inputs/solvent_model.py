"""The ``solvent:`` section of a job file: implicit solvation by PySCF's continuum models.

The model is one of PySCF's (`pyscf.solvent`): the PCM family (IEF-PCM, C-PCM, SS(V)PE,
COSMO; `pyscf.solvent.pcm`), ddCOSMO (`pyscf.solvent.ddcosmo`) or SMD
(`pyscf.solvent.smd`).  The solvent is named (its dielectric constant from PySCF's table
of the Minnesota Solvent Descriptor Database, `pyscf.solvent.smd.solvent_db`, 179
solvents: `solvent_table`), or given by its dielectric constant ``eps`` alone; a name and
``eps`` together take ``eps`` instead of the table's value.  SMD needs a named solvent:
its cavity-dispersion-structure term takes the solvent's other descriptors (refractive
index, acidity, basicity, surface tension, aromaticity, halogenicity) from the same table.
Everything else (radii, Lebedev order, surface discretisation) is PySCF's default
(`dm21cli.scf.solvent` reads and logs them).

The command line's ``--solvent NAME`` (or a number: ``eps``; ``none``: gas phase) replaces
the file's name and ``eps`` (`dm21cli.io.inputs.load`).
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from dm21cli.io.inputs.fields import SectionModel, show_value, to_float, to_name

#: dm21's names of PySCF's models, in the order the messages list them
MODELS = ("IEF-PCM", "C-PCM", "SS(V)PE", "COSMO", "ddCOSMO", "SMD")
DEFAULT_MODEL = "IEF-PCM"
#: the models of `pyscf.solvent.pcm.PCM` (its ``method``), the rest have their own classes
PCM_METHODS = ("IEF-PCM", "C-PCM", "SS(V)PE", "COSMO")
#: other spellings of the models (compared without case, spaces, '-', '(' and ')')
MODEL_SPELLINGS = {"iefpcm": "IEF-PCM", "cpcm": "C-PCM", "ssvpe": "SS(V)PE", "cosmo": "COSMO",
                    "ddcosmo": "ddCOSMO", "smd": "SMD"}
#: common abbreviations of solvents in the table (the table has none)
ABBREVIATIONS = {"h2o": "water", "meoh": "methanol", "etoh": "ethanol", "mecn": "acetonitrile",
                 "acn": "acetonitrile", "dmso": "dimethylsulfoxide", "dmf": "N,N-dimethylformamide",
                 "thf": "tetrahydrofuran", "dcm": "dichloromethane", "chcl3": "chloroform",
                 "ccl4": "carbon tetrachloride"}
#: the words that mean "no solvent" on the command line (``--solvent none``)
NO_SOLVENT = ("none", "null", "gas", "vacuum", "off")


@functools.lru_cache(maxsize=1)
def solvent_table() -> dict[str, tuple[str, float]]:
    """{lower-case name: (PySCF's name, dielectric constant)} of PySCF's solvent table
    (`pyscf.solvent.smd.solvent_db`, from the Minnesota Solvent Descriptor Database);
    imported when a job names a solvent."""
    from pyscf.solvent import smd

    return {name.lower(): (name, float(descriptors[5]))
            for name, descriptors in smd.solvent_db.items() if name}


def canonical_model(value: Any) -> str:
    """dm21's name of a solvent model (`MODELS`) from any spelling; ValueError naming the
    closest ones otherwise."""
    text = to_name(value, f"a solvent model ({', '.join(MODELS)})")
    key = re.sub(r"[\s()_-]", "", text.lower())
    if key in MODEL_SPELLINGS:
        return MODEL_SPELLINGS[key]
    close = difflib.get_close_matches(text.upper(), [m.upper() for m in MODELS], n=2, cutoff=0.5)
    hint = (f"; did you mean {' or '.join(repr(MODELS[[m.upper() for m in MODELS].index(c)]) for c in close)}?"
            if close else "")
    raise ValueError(f"unknown solvent model {show_value(text)}{hint} (dm21 offers PySCF's "
                     f"{', '.join(MODELS)})")


def canonical_solvent(value: Any) -> str:
    """PySCF's name of a solvent in its table (any case; `ABBREVIATIONS` too); ValueError
    naming the closest known names otherwise."""
    text = to_name(value, "a solvent name (e.g. water) or give eps")
    table = solvent_table()
    key = text.lower()
    key = ABBREVIATIONS.get(key, key).lower()
    if key in table:
        return table[key][0]
    close = difflib.get_close_matches(text.lower(), list(table) + list(ABBREVIATIONS), n=3,
                                      cutoff=0.6)
    names = [table[ABBREVIATIONS.get(c, c).lower()][0] for c in close]
    names = list(dict.fromkeys(names))
    hint = f"; closest known: {', '.join(names)}" if names else ""
    raise ValueError(f"unknown solvent {show_value(text)}{hint} (PySCF's table "
                     f"pyscf.solvent.smd.solvent_db has {len(table)} solvents; or give its "
                     f"dielectric constant as eps)")


def _check_name(value: Any) -> str | None:
    return None if value is None else canonical_solvent(value)


def _check_eps(value: Any) -> float | None:
    if value is None:
        return None
    eps = to_float(value)
    if not eps > 1.0:
        raise ValueError(f"the dielectric constant must be greater than 1 (1 is vacuum), "
                         f"got {eps:g}")
    return eps


class SolventSettings(SectionModel):
    """Section ``solvent``: an implicit solvent (PySCF's continuum models)."""

    model: Annotated[str, BeforeValidator(canonical_model)] = Field(
        DEFAULT_MODEL, description=f"PySCF's continuum model: {' | '.join(MODELS)}.")
    name: Annotated[str | None, BeforeValidator(_check_name)] = Field(
        None, description="The solvent, by its name in PySCF's table (pyscf.solvent.smd."
                          "solvent_db: water, methanol, acetonitrile, ...): its dielectric "
                          "constant, and for SMD its other descriptors.")
    eps: Annotated[float | None, BeforeValidator(_check_eps)] = Field(
        None, description="Dielectric constant (> 1), instead of the named solvent's; alone, "
                          "it is the solvent.")

    @model_validator(mode="after")
    def _solvent_given(self) -> SolventSettings:
        if self.name is None and self.eps is None:
            raise ValueError("give the solvent's name (e.g. name: water) or its dielectric "
                             "constant (eps: 78.3553)")
        if self.model == "SMD" and self.name is None:
            raise ValueError("SMD needs a named solvent: its cavity-dispersion-solvent-structure "
                             "term takes the solvent's descriptors (refractive index, acidity, "
                             "basicity, surface tension, ...) from PySCF's table; give name")
        return self

    def dielectric(self) -> float:
        """The dielectric constant: ``eps``, else the named solvent's in PySCF's table."""
        if self.eps is not None:
            return self.eps
        return solvent_table()[self.name.lower()][1]

    def label(self) -> str:
        """``IEF-PCM, water (eps 78.355)``, ``C-PCM, eps 4``."""
        what = f"{self.name} (eps {self.dielectric():g})" if self.name else f"eps {self.eps:g}"
        return f"{self.model}, {what}"

    def resolved(self) -> dict:
        """The section with the dielectric constant filled in (for input.resolved.yaml and
        QCSchema keywords): loading it again gives the same solvent."""
        return {"model": self.model, "name": self.name, "eps": self.dielectric()}


def solvent_override(value: Any) -> dict | None:
    """What ``--solvent VALUE`` puts into the job's ``solvent`` section: {'name': VALUE}, or
    {'eps': number} for a number; None for `NO_SOLVENT` (gas phase).  The value is checked
    by the section."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"eps": value}
    text = str(value).strip()
    if text.lower() in NO_SOLVENT:
        return None
    try:
        return {"eps": float(text)}
    except ValueError:
        return {"name": text}
