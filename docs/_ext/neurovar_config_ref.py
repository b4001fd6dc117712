"""Sphinx directive ``neurovar-config-reference``: a table of every key of a pydantic config.

Usage (MyST)::

    ```{neurovar-config-reference} neurovar.experiment.config.ExperimentConfig
    :prefix:
    ```

Every field of the model, nested models expanded (``data.n_fit``; a list of models as
``sources[].name``), with its type, default and description, generated at build time from the
model itself, so the page cannot drift from the code.
"""

from __future__ import annotations

import enum
import importlib
import json
import types
import typing
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from sphinx.util.docutils import SphinxDirective


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if args:
            return f"[{', '.join(_type_name(a) for a in args)}]"
        return "list"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "table"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(json.dumps(m.value) for m in tp)
    return getattr(tp, "__name__", str(tp))


def _default(field) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            value = field.default_factory()
        else:
            return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(table)"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str)


def _model_in(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the pydantic model inside an annotation, whether it is a list of them)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, False
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list) and args and isinstance(args[0], type) \
            and issubclass(args[0], BaseModel):
        return args[0], True
    return None, False


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` for every field, nested models expanded."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        sub, many = _model_in(field.annotation)
        description = (field.description or "").replace("\n", " ")
        if sub is not None:
            doc = (sub.__doc__ or "").strip().splitlines()
            head = description or (doc[0] if doc else "")
            out.append((key, "list of tables" if many else "table",
                        "[]" if many else "(table)", head))
            out += rows(sub, f"{key}[]." if many else f"{key}.")
        else:
            out.append((key, _type_name(field.annotation), _default(field), description))
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("`", "'") or " "


class ConfigReference(SphinxDirective):
    required_arguments = 1
    option_spec = {"prefix": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        module, _, name = path.rpartition(".")
        model = getattr(importlib.import_module(module), name)
        prefix = self.options.get("prefix") or ""
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 20 15 40", "",
                 "   * - key", "     - type", "     - default", "     - description"]
        for key, tp, default, description in rows(model, prefix):
            lines += [f"   * - ``{key}``", f"     - {_cell(tp)}", f"     - ``{default}``",
                      f"     - {_cell(description)}"]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, container)
        return container.children


def setup(app):
    app.add_directive("neurovar-config-reference", ConfigReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
