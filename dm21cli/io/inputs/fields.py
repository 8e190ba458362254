"""Field values of a job file: scalar coercion, validators and the section base model.

YAML reads ``1e-6`` as text and ``4.0`` as a float; these helpers accept every
usual spelling of a number, an integer, a boolean or a name and raise
ValueError with a one-line message otherwise (pydantic turns it into
``file:line: field: message``, see `dm21cli.io.inputs.load`).
"""

from __future__ import annotations

import math
import re
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from dm21cli.core.errors import InputError
from dm21cli.core.resources import MAX_MEMORY_MB
from dm21cli.functional import VARIANTS

#: canonical spellings of the DM21 family (input is case-insensitive).
DM21_FUNCTIONALS = VARIANTS

#: lower-case spelling -> canonical spelling of the DM21 family ("dm21mc" -> "DM21mc").
DM21_BY_LOWER = {f.lower(): f for f in DM21_FUNCTIONALS}


def describe_value(value: Any) -> str:
    """A YAML value as an error message names it: ``null``, ``true``, ``'text'``, ``a list``, ``a mapping``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return show_value(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def show_value(value: Any) -> str:
    """A scalar for an error message: strings quoted (repr), at most 60 characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def to_float(value: Any) -> float:
    """Numbers and numeric strings (YAML reads ``1e-6`` as a string) -> finite float."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a number, got {describe_value(value)}")
    if isinstance(value, (int, float)):
        try:
            x = float(value)
        except OverflowError:
            raise ValueError(f"number too large: {show_value(value)}") from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            x = float(text)
        except ValueError:
            try:  # Fortran style 1.0d-6
                x = float(text.replace("d", "e").replace("D", "E"))
            except ValueError:
                raise ValueError(f"expected a number, got {show_value(value)}") from None
    else:
        raise ValueError(f"expected a number, got {describe_value(value)}")
    if not math.isfinite(x):
        raise ValueError(f"expected a finite number, got {show_value(value)}")
    return x


def to_int(value: Any) -> int:
    """Integers, integral floats and decimal strings (``"4"``, ``4.0``) -> int; booleans are refused."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected an integer, got {describe_value(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text, 10)
        except ValueError:
            pass
    try:
        x = to_float(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {describe_value(value)}") from None
    if x != int(x):
        raise ValueError(f"expected an integer, got {show_value(value)}")
    return int(x)


def to_bool(value: Any) -> bool:
    """A YAML boolean or the strings true/yes/on, false/no/off (any case) -> bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
    raise ValueError(f"expected true or false, got {describe_value(value)}")


def to_name(value: Any, what: str = "a name") -> str:
    """A non-empty name, stripped (numbers become text: basis ``631g``); `what` says what was expected."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected {what}, got {describe_value(value)}")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {describe_value(value)}")
    text = value.strip()
    if not text:
        raise ValueError(f"expected {what}, got an empty string")
    return text


def or_none(fn):
    """The coercion `fn` (value -> value), letting None through unchanged."""
    def check(value):
        return None if value is None else fn(value)
    return check


def int_range(lo: int | None = None, hi: int | None = None, optional: bool = False):
    """A pydantic BeforeValidator: `to_int`, then lo <= n (<= hi) (inclusive); None passes if `optional`."""
    def check(value):
        if value is None and optional:
            return None
        n = to_int(value)
        if lo is not None and hi is not None and not lo <= n <= hi:
            raise ValueError(f"must be an integer from {lo} to {hi}, got {n}")
        if lo is not None and n < lo:
            raise ValueError(f"must be an integer >= {lo}, got {n}")
        return n
    return BeforeValidator(check)


def float_range(gt: float | None = None, ge: float | None = None, le: float | None = None,
                 optional: bool = False):
    """A pydantic BeforeValidator: `to_float`, then x > gt, x >= ge, x <= le (each if given).

    The bounds are in the field's own unit; None passes if `optional`.
    """
    def check(value):
        if value is None and optional:
            return None
        x = to_float(value)
        if gt is not None and not x > gt:
            raise ValueError(f"must be greater than {gt:g}, got {x:g}")
        if ge is not None and le is not None and not ge <= x <= le:
            raise ValueError(f"must be from {ge:g} to {le:g}, got {x:g}")
        if ge is not None and not x >= ge:
            raise ValueError(f"must be >= {ge:g}, got {x:g}")
        if le is not None and not x <= le:
            raise ValueError(f"must be at most {le:g}, got {x:g}")
        return x
    return BeforeValidator(check)


def one_of(options: tuple[str, ...], aliases: dict[str, str] | None = None):
    """A pydantic BeforeValidator: a case-insensitive keyword among `options` (lower case), after `aliases`."""
    aliases = aliases or {}

    def check(value):
        if isinstance(value, str):
            low = value.strip().lower()
            low = aliases.get(low, low)
            if low in options:
                return low
        raise ValueError(f"expected one of {', '.join(options)}; got {describe_value(value)}")
    return BeforeValidator(check)


#: a bool field that also takes yes/no, on/off and "true"/"false" strings (`to_bool`)
YamlBool = Annotated[bool, BeforeValidator(to_bool)]


def parse_memory(value: Any) -> int:
    """Memory in MB (PySCF's unit, 10**6 bytes) from an int or a string like "4GB", "2 GiB".

    A bare number is MB.  Decimal units (KB, MB, GB, TB) and binary units
    (KiB, MiB, GiB, TiB) are accepted, case-insensitively; "G" means GB.
    """
    scale = {"": 1.0, "b": 1e-6, "k": 1e-3, "kb": 1e-3, "m": 1.0, "mb": 1.0,
             "g": 1e3, "gb": 1e3, "t": 1e6, "tb": 1e6,
             "kib": 1024 / 1e6, "mib": 1024**2 / 1e6, "gib": 1024**3 / 1e6,
             "tib": 1024**4 / 1e6}
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a size like 4000 (MB) or '4GB', got {describe_value(value)}")
    if isinstance(value, (int, float)):
        number, unit = to_float(value), ""
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in scale:
            raise ValueError(
                f"expected a size like 4000 (MB), '500MB', '4GB' or '2 GiB', got {show_value(value)}")
        number, unit = float(m.group(1)), m.group(2).lower()
    else:
        raise ValueError(f"expected a size like 4000 (MB) or '4GB', got {describe_value(value)}")
    mb = number * scale[unit]
    if not math.isfinite(mb) or mb > MAX_MEMORY_MB:
        raise ValueError(f"memory too large: {show_value(value)} (at most {MAX_MEMORY_MB:,} MB)")
    if mb < 1:
        raise ValueError(f"memory must be at least 1 MB, got {show_value(value)}")
    return int(mb)


class SectionModel(BaseModel):
    """The base of every input section: unknown keys are errors, ``key: null`` means the default."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """``key: null`` (or an empty section) takes the default unless null has its own meaning."""
        if isinstance(data, dict):
            drop = [k for k, v in data.items() if v is None and k in cls.model_fields
                    and not cls.model_fields[k].is_required()
                    and type(None) not in typing.get_args(cls.model_fields[k].annotation)]
            if drop:
                data = {k: v for k, v in data.items() if k not in drop}
        return data


def as_list(value: Any) -> Any:
    """None -> [], a scalar -> [scalar], a list unchanged (anything else is an error)."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {describe_value(value)}")
    return value


def check_functional(value: Any) -> str:
    """A functional name: the DM21 family in its canonical case, any other name as given (stripped)."""
    name = to_name(value, "a functional name (DM21, DM21m, DM21mc, DM21mu, or a PySCF name like b3lyp)")
    return DM21_BY_LOWER.get(name.lower(), name)


def dotted_path(path: tuple) -> str:
    """A key path as the user reads it: ``("scan", "points", 2)`` -> ``scan.points[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class LocatedError(ValueError):
    """An InputError raised inside a pydantic validator, kept with its own file and line."""

    def __init__(self, error: InputError):
        super().__init__(error.render())
        self.error = error
