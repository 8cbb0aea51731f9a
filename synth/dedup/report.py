"""`synth dedup report RUN`: what the dedup stages of a run removed, and why.

The ledger says how many rows each stage dropped; this adds what a data team
asks next: how big the duplicate clusters are, which records were kept most
often (boilerplate, mirrored pages), and how similar the removed copies were
(a pile-up just above the threshold suggests the threshold is too loose).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

_HIST_EDGES = [0.0, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0001]


def dedup_report(run_dir: str | Path, top: int = 5) -> dict:
    """One entry per dedup stage found in the run directory (stages/NN-*/_state/report.json)."""
    run = Path(run_dir)
    stages = []
    for state in sorted(run.glob("stages/*/_state")):
        report_path = state / "report.json"
        if not report_path.exists():
            continue
        entry = {"stage": state.parent.name, **json.loads(report_path.read_text())}
        kept: Counter[str] = Counter()
        sims = []
        for part in sorted((state / "drops").glob("*.parquet")):
            t = pq.read_table(part, columns=["kept_id", "similarity"])
            kept.update(t.column("kept_id").to_pylist())
            sims.append(t.column("similarity").to_numpy())
        sizes = Counter(n + 1 for n in kept.values())
        entry["cluster_sizes"] = {str(k): v for k, v in sorted(sizes.items())}
        entry["most_copied"] = [{"kept_id": k, "copies": n} for k, n in kept.most_common(top)]
        if "candidate_pairs" in entry:  # near-dup stages report similarities
            values = np.concatenate(sims) if sims else np.zeros(0)
            counts, _ = np.histogram(values, bins=_HIST_EDGES)
            labels = ["<0.8", "0.80-0.85", "0.85-0.90", "0.90-0.95", "0.95-0.99", ">=0.99"]
            entry["similarity_to_kept"] = dict(zip(labels, counts.tolist()))
        stages.append(entry)
    return {"version": 1, "stages": stages}


def format_report(report: dict) -> str:
    lines = []
    for s in report["stages"]:
        lines.append(f"{s['stage']}: {s.get('dropped', 0):,} of {s.get('documents', 0):,} documents dropped")
        if s.get("cluster_sizes"):
            lines.append("  cluster sizes: " + ", ".join(f"{k}: {v:,}" for k, v in s["cluster_sizes"].items()))
        if s.get("similarity_to_kept"):
            lines.append(
                "  similarity to kept: " + ", ".join(f"{k}: {v:,}" for k, v in s["similarity_to_kept"].items())
            )
        for m in s.get("most_copied", []):
            lines.append(f"  kept {m['kept_id']}: {m['copies']:,} removed as its copies")
    return "\n".join(lines) if lines else "no dedup stages in this run"


def register(app) -> None:
    """Add `dedup report RUN [--json]` to a typer app (the lead wires this in synth/cli.py)."""
    import typer

    dedup_app = typer.Typer(help="Inspect exact and near-duplicate removal.")

    @dedup_app.command("report")
    def report_command(run: Path, as_json: bool = typer.Option(False, "--json"), top: int = 5) -> None:
        """What each dedup stage removed: cluster sizes, most-copied records, similarity."""
        if not run.is_dir():
            raise typer.BadParameter(f"{run} is not a run directory")
        result = dedup_report(run, top)
        typer.echo(json.dumps(result, indent=2) if as_json else format_report(result))

    app.add_typer(dedup_app, name="dedup")
