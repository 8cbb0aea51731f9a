"""The errors a user can cause, and the one way a command reports them.

Each becomes one line on stderr (`fail`), never a traceback that loses work.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A pipeline file is wrong; the message says where and what is allowed."""


class InputError(ValueError):
    """The inputs cannot be read at all (missing path, nothing matched)."""


def fail(message: str, code: int = 1) -> None:
    """One clear line on stderr instead of a traceback, then exit with `code`."""
    import typer
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
