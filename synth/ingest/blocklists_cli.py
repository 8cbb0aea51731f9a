"""`synth blocklists update|show`: the URL blocklists `url_filter` uses."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from synth.ingest import blocklists

blocklists_app = typer.Typer(
    help="URL blocklists by category (UT1, as FineWeb uses) for the url_filter stage.", no_args_is_help=True
)


@blocklists_app.command("update")
def update(
    categories: list[str] | None = typer.Option(
        None, "--category", "-c", help=f"Category to keep (repeatable); default: {', '.join(blocklists.CATEGORIES)}."
    ),
    url: str = typer.Option(blocklists.UT1_URL, help="Where to download the UT1 tarball from."),
    archive: Path | None = typer.Option(
        None, help="Install from this tarball instead of downloading (offline machines)."
    ),
    dest: Path | None = typer.Option(None, help="Folder to install into; default: <cache>/blocklists/ut1."),
) -> None:
    """Download the UT1 blacklists and cache the chosen categories with their licence and date."""
    from synth.cli import fail

    try:
        meta = blocklists.update(list(categories or blocklists.CATEGORIES), dest=dest, url=url, archive=archive)
    except blocklists.BlocklistError as e:
        fail(str(e))
        return
    where = dest or blocklists.default_dir()
    for cat, n in meta["categories"].items():
        typer.echo(f"{cat:10s} {n:>10,d} entries")
    if meta["missing"]:
        typer.echo(f"not in the archive: {', '.join(meta['missing'])}")
    typer.echo(f"installed in {where} ({meta['licence']}; {meta['downloaded']})")


@blocklists_app.command("show")
def show(
    folder: Path | None = typer.Option(None, help="An installed blocklist folder; default: the cached one."),
) -> None:
    """Which lists url_filter will use: source, licence, date, entries per category."""
    typer.echo(json.dumps(blocklists.describe(folder), indent=2, ensure_ascii=False))
