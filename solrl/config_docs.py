"""The configuration explained from its own models: the resolved config as YAML with each
field's description beside it (`solrl config show`), and docs/configuration.md (a table per
section), both built from the pydantic fields so they cannot drift from the code."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Union

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from solrl.config import RunConfig
from solrl.run_folder import RESUMABLE


def _inline(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _comment(text: str | None) -> str:
    return f"  # {text}" if text else ""


def annotated_yaml(model: BaseModel, indent: int = 0) -> list[str]:
    """YAML lines of `model`'s resolved values, each field's description as a trailing comment."""
    pad, lines = " " * indent, []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines += [f"{pad}{name}:{_comment(field.description)}", *annotated_yaml(value, indent + 2)]
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines.append(f"{pad}{name}:{_comment(field.description)}")
            for item in value:
                body = annotated_yaml(item, indent + 4)
                lines += [f"{pad}  - {body[0].lstrip()}", *body[1:]]
        else:
            lines.append(f"{pad}{name}: {_inline(value if not isinstance(value, tuple) else list(value))}{_comment(field.description)}")
    return lines


def show(config: RunConfig) -> str:
    return "\n".join(annotated_yaml(config)) + "\n"


def schema() -> str:
    return json.dumps(RunConfig.model_json_schema(), indent=2) + "\n"


# -- docs/configuration.md ---------------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config models a field holds (itself, a list's items, a union's members)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    return []


def _type_name(annotation: Any) -> str:
    """A type as a reader wants it: 'one of `a`, `b`', 'int or None', 'list of X', a model's name."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args) if len(args) > 1 else f"`{args[0]}`"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "(" + ", ".join(_type_name(a) for a in args) + ")"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel) or (isinstance(value, list) and value and isinstance(value[0], BaseModel)):
        return "see below"
    return f"`{_inline(list(value) if isinstance(value, tuple) else value)}`"


def markdown() -> str:
    """docs/configuration.md: one table per config section, in the order a run file has them."""
    out = [
        "# Configuration",
        "",
        "Generated from solrl's config models (`python -m solrl.config_docs > docs/configuration.md`; a test checks",
        "it is current). `solrl config show [CONFIG] [--set key=value ...]` prints a resolved config with these",
        "descriptions, `solrl config show --schema` its JSON schema. The shipped shapes run is `solrl/configs/shapes.yaml`;",
        "real models have `configs/sd35.yaml`, `configs/flux1.yaml`, `configs/sana.yaml`.",
        "",
        "`solrl train --resume RUN` refuses a config that differs from the checkpoint's, except in "
        + ", ".join(f"`{k}*`" if k.endswith(".") else f"`{k}`" for k in RESUMABLE)
        + ": a resumed run may change where and how wide it runs and how long, not what it computes.",
    ]
    paths: dict[type[BaseModel], list[str]] = {}  # each model and where it appears, in file order
    todo: list[tuple[str, type[BaseModel]]] = [("", RunConfig)]
    while todo:
        path, model = todo.pop(0)
        paths.setdefault(model, []).append(path)
        if len(paths[model]) > 1:
            continue
        for name, field in model.model_fields.items():
            todo += [(f"{path}.{name}" if path else name, sub) for sub in _models(field.annotation)]
    for model, where in paths.items():
        title = ", ".join(f"`{p}`" for p in where) if where != [""] else "top level"
        doc = (model.__doc__ or "").strip().splitlines()[0]
        out += ["", f"## {title} ({model.__name__})", "", doc, "", "| field | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
