"""`synth audit`: build the report, add what was asked, print or write it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console


def gather_examples(run_dir: Path, report: dict, limit: int, describe) -> dict[str, dict[str, list[dict]]]:
    from synth.core.ledger import reject_samples

    out: dict[str, dict[str, list[dict]]] = {}
    for s in report["stages"]:
        samples = reject_samples(run_dir, s["stage"], limit)
        if samples:
            out[s["stage"]] = {
                reason: [{"id": row["id"], "text": describe(row["record"]), "scores": row["scores"]} for row in rows]
                for reason, rows in samples.items()
            }
    return out


def run_audit(
    run_dir: Path,
    *,
    as_json: bool,
    examples: int,
    what_if: list[str],
    sweep: list[str],
    overlap: bool,
    overlap_sample: int,
    compare: Path | None,
    html: Path | None,
    describe,
) -> dict:
    from synth.audit import terminal
    from synth.audit.report import build_report

    # Re-deciding a big run takes a while: a spinner on stderr (nothing when not a terminal).
    status = Console(stderr=True).status
    with status("reading the ledger and statistics..."):
        report = build_report(run_dir)
    if what_if:
        from synth.audit.whatif import what_if as compute_what_if

        with status("what-if: re-deciding every stored record..."):
            report["what_if"] = compute_what_if(run_dir, report, what_if)
    if sweep:
        from synth.audit.whatif import sweep as compute_sweep

        report["sweep"] = []
        for target in sweep:
            with status(f"sweeping {target}..."):
                report["sweep"].append(compute_sweep(run_dir, report, target))
    if overlap:
        from synth.audit.overlap import overlap as compute_overlap

        with status(f"overlap: scoring {overlap_sample:,} sampled records with every CPU filter..."):
            report["overlap"] = compute_overlap(run_dir, overlap_sample)
    if compare is not None:
        from synth.audit.compare import check_comparable
        from synth.audit.compare import compare as compute_compare

        check_comparable(run_dir, compare)
        with status(f"comparing with {compare}..."):
            report["compare"] = compute_compare(report, build_report(compare))
    samples = gather_examples(run_dir, report, examples, describe) if (examples and (html or not as_json)) else {}
    if html is not None:
        from synth.audit.html import write_html

        write_html(html, report, samples)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return report
    # Piped output (a log, CI) gets a readable width instead of 80 columns.
    out = Console() if sys.stdout.isatty() else Console(width=160)

    def print_examples(console: Console) -> None:
        for s in report["stages"]:
            for reason, rows in samples.get(s["stage"], {}).items():
                count = s["dropped"].get(reason, s["counters"].get(reason, 0))
                verb = "discarded" if reason.startswith("discarded.") else "dropped"
                console.print(
                    f"[bold]{s['stage']}[/] {verb} [yellow]{reason.removeprefix('discarded.')}[/] ({count:,}), e.g.:"
                )
                for row in rows:
                    scores = f" scores={terminal.short_scores(row['scores'])}" if row["scores"] else ""
                    console.print(f"  - {row['id'][:12]} {row['text']!r}{scores}", highlight=False)

    terminal.print_report(out, report, print_examples)
    from synth.cli import _print_replicas

    _print_replicas(out, report["stages"])
    for s in report["stages"]:
        if s.get("type") == "kg_walk":  # per pattern: requested, produced, failures, unavailable
            from kg.cli import print_pattern_report

            print_pattern_report(s["counters"], out)
    if "what_if" in report:
        terminal.print_what_if(out, report["what_if"], describe)
    for s in report.get("sweep", []):
        terminal.print_sweep(out, s)
    if "overlap" in report:
        terminal.print_overlap(out, report["overlap"])
    if "compare" in report:
        terminal.print_compare(out, report["compare"])
    if html is not None:
        out.print(f"HTML report: {html}", highlight=False)
    return report
