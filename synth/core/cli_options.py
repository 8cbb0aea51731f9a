"""Command-line options whose defaults are declared once, where the code keeps them."""

from __future__ import annotations

import inspect
from typing import Any

import typer


def declared_default(source: Any, name: str) -> Any:
    """The default of `name` in `source`: a pydantic model's field or a function's keyword."""
    fields = getattr(source, "model_fields", None)
    if fields is not None:
        return fields[name].get_default(call_default_factory=True)
    parameter = inspect.signature(source).parameters[name]
    if parameter.default is inspect.Parameter.empty:
        raise ValueError(f"{source.__name__}: '{name}' has no default")
    return parameter.default


def option_from(source: Any, name: str, *flags: str, **kwargs: Any) -> Any:
    """A typer option with the default (and, unless `help` is given, the description)
    that `source` declares for `name`, so the flag cannot drift from the code's default."""
    if "help" not in kwargs:
        fields = getattr(source, "model_fields", None)
        if fields is not None and fields[name].description:
            kwargs["help"] = fields[name].description
    return typer.Option(declared_default(source, name), *flags, **kwargs)
