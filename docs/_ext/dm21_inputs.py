"""The input reference, generated from the models dm21 validates with.

``sections()`` walks `dm21cli.io.inputs.models.JobSpec` and the section models below it
(``job``, ``molecule``, ``scf``, ``scf.occupations``, ..., ``opt.constraints``);
``rows(path)`` gives each key of one section as (key, type, default, unit, description),
read from the pydantic fields: their types, defaults and descriptions, the unit being the
``[...]`` of the description.  The Sphinx directive

    ```{dm21-inputs} scf
    ```

renders one section as a table, and the build fails (a warning, an error under ``-W``)
when a section is never rendered, or a directive names a section that does not exist:
a key added to a model appears in the manual without anyone writing it down.

The functions above `setup` need pydantic and dm21cli only (``tests/test_docs.py``
calls them without Sphinx).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

#: the unit in a field's description: "Energy convergence threshold [Ha]; ..."
UNIT = re.compile(r"\s*\[([^\]]+)\]")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model of a field (alone, or with None), else None."""
    for arg in (typing.get_args(annotation) or (annotation,)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def sections() -> list[tuple[str, type[BaseModel]]]:
    """(dotted path, model) of the job file's top level ("") and of every section below it,
    in the order of the fields."""
    from dm21cli.io.inputs.models import JobSpec

    out: list[tuple[str, type[BaseModel]]] = []

    def walk(path: str, model: type[BaseModel]) -> None:
        out.append((path, model))
        for key, field in model.model_fields.items():
            sub = _model_of(field.annotation)
            if sub is not None:
                walk(f"{path}.{key}" if path else key, sub)

    walk("", JobSpec)
    return out


def type_text(annotation: Any) -> str:
    """A field's type as the manual writes it: ``integer``, ``mixed | float64``, ``list of
    integer``, ``number | null``, ``section``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " | ".join(parts + (["null"] if type(None) in args else []))
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    names = {str: "string", int: "integer", float: "number", bool: "boolean",
             type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def default_text(field: Any) -> str:
    """A field's default as YAML writes it; ``required`` for a key without one."""
    if field.default_factory is not None:
        return _value_text(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return _value_text(field.default)


def rows(path: str) -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, unit, description) of every key of the section at `path`."""
    model = dict(sections()).get(path)
    if model is None:
        raise KeyError(f"no section {path!r} in a job file (sections: "
                       f"{', '.join(p or '(top level)' for p, _ in sections())})")
    out = []
    for key, field in model.model_fields.items():
        description = field.description or ""
        unit = UNIT.search(description)
        out.append((key, type_text(field.annotation), default_text(field),
                    unit.group(1) if unit else "", description))
    return out


# ---------------------------------------------------------------- Sphinx
def _inline(text: str) -> list:
    """`text` with its `code` spans as literals."""
    from docutils import nodes

    parts = re.split(r"`([^`]+)`", text)
    return [nodes.literal(p, p) if i % 2 else nodes.Text(p) for i, p in enumerate(parts) if p]


def _table(header: list[str], body: list[tuple[str, ...]], widths: list[int]):
    from docutils import nodes

    table = nodes.table(classes=["dm21-inputs"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=w) for w in widths]

    def row(cells, literal_first):
        tr = nodes.row()
        for i, cell in enumerate(cells):
            entry = nodes.entry()
            para = nodes.paragraph()
            if i == 0 and literal_first:
                para += nodes.literal(cell, cell)
            else:
                para += _inline(cell)
            entry += para
            tr += entry
        return tr

    thead = nodes.thead()
    thead += row(header, False)
    tbody = nodes.tbody()
    tbody += [row(cells, True) for cells in body]
    group += [thead, tbody]
    return table


def setup(app):
    from docutils.parsers.rst import Directive
    from sphinx.util import logging

    logger = logging.getLogger(__name__)

    class InputsDirective(Directive):
        """``{dm21-inputs} PATH``: the table of one section's keys (``.`` the top level)."""

        required_arguments = 1
        has_content = False

        def run(self):
            path = "" if self.arguments[0] == "." else self.arguments[0]
            env = self.state.document.settings.env
            try:
                body = rows(path)
            except KeyError as exc:
                logger.warning(str(exc), location=(env.docname, self.lineno))
                return []
            rendered = env.temp_data.setdefault("dm21_inputs", set())
            rendered.add(path)
            if not hasattr(env, "dm21_inputs_rendered"):
                env.dm21_inputs_rendered = {}
            env.dm21_inputs_rendered.setdefault(path, set()).add(env.docname)
            return [_table(["key", "type", "default", "unit", "description"], body,
                           [14, 16, 10, 8, 52])]

    def merge(app, env, docnames, other):
        mine = getattr(env, "dm21_inputs_rendered", {})
        for path, docs in getattr(other, "dm21_inputs_rendered", {}).items():
            mine.setdefault(path, set()).update(docs)
        env.dm21_inputs_rendered = mine

    def purge(app, env, docname):
        for docs in getattr(env, "dm21_inputs_rendered", {}).values():
            docs.discard(docname)

    def check(app, env):
        rendered = {p for p, docs in getattr(env, "dm21_inputs_rendered", {}).items() if docs}
        for path, _model in sections():
            if path not in rendered:
                logger.warning(f"the input reference has no table of the section "
                               f"{path or '(top level)'!r}: add ```{{dm21-inputs}} "
                               f"{path or '.'}``` to docs/reference/inputs.md")

    app.add_directive("dm21-inputs", InputsDirective)
    app.connect("env-merge-info", merge)
    app.connect("env-purge-doc", purge)
    app.connect("env-check-consistency", check)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True,
            "env_version": 1}
