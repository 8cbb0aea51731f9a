"""The audit in a terminal (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _n(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}"


def _table(title: str, columns: list[str], right: set[str] | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    right = right if right is not None else set(columns[1:])
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    return table


def short_scores(scores: dict | None, limit: int = 4) -> str:
    """A few scores, rounded, for one line of a terminal."""
    if not scores:
        return ""
    items = [f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in list(scores.items())[:limit]]
    return "{" + ", ".join(items) + (", ..." if len(scores) > limit else "") + "}"


def print_report(out: Console, report: dict, describe_examples) -> None:
    status = report["status"]
    title = f"{report['pipeline']}: {report['run']}" + ("" if status == "complete" else f" ({status})")
    t = _table(
        title,
        ["stage", "in", "out", "kept %", "dropped", "top reasons", "shards", "seconds", "records/s"],
        {"in", "out", "kept %", "dropped", "shards", "seconds", "records/s"},
    )
    by_stage = {s["stage"]: s for s in report["stages"]}
    for f in report["funnel"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in list(by_stage[f["stage"]]["dropped"].items())[:3])
        t.add_row(
            f["stage"],
            _n(f["in"]),
            _n(f["out"]),
            _n(f["kept_pct"]),
            _n(f["dropped"]),
            reasons,
            f"{f['shards_done']}/{f['shards']}",
            f"{f['seconds']:.1f}",
            _n(f["records_per_s"]),
        )
    out.print(t)
    for note in report["notes"]:
        out.print(f"[yellow]partial:[/] {note}", highlight=False)
    if report["failed_shards"]:
        out.print(f"[bold red]{len(report['failed_shards'])} shards failed[/] (rerun the same command to retry):")
        for f in report["failed_shards"][:10]:
            out.print(f"  {f['stage']} {f['shard']} ({f['phase']}): {f['error']}", highlight=False)
    if report["llm"]:
        t = _table(
            "LLM use per model",
            ["model", "stages", "requests", "failures", "cache hits", "prompt tok", "completion tok", "tokens/s"],
            {"requests", "failures", "cache hits", "prompt tok", "completion tok", "tokens/s"},
        )
        for m in report["llm"]:
            t.add_row(
                m["model"],
                ", ".join(m["stages"]),
                _n(m["requests"]),
                _n(m["failures"]),
                _n(m["cache_hits"]),
                _n(m["prompt_tokens"]),
                _n(m["completion_tokens"]),
                _n(m["tokens_per_s"]),
            )
        out.print(t)
    output = report["output"]
    for col, values in output["by"].items():
        unit = output["unit"]
        t = _table(f"output ({output['stage']}) by {col}", [col, "records", unit, "share"])
        for v, d in list(values.items())[:15]:
            t.add_row(str(v), _n(d["records"]), _n(d[unit]), f"{100 * d['share']:.1f}%")
        out.print(t)
    langs = [(label, p) for label, p in report["profiles"].items() if "language" in p["categorical"]]
    if langs:
        t = _table("kept records and size per language, per stage", ["stage", "language", "records", "size"])
        for label, p in langs:
            for lang, d in list(p["categorical"]["language"].items())[:8]:
                t.add_row(label, lang, _n(d["records"]), f"{_n(d[p['unit']])} {p['unit']}")
        out.print(t)
    for mix in report["domain_mix"]:
        t = _table(f"domain mix ({mix['stage']})", ["domain", "before", "after", "after share", "target share"])
        after_total = sum(d["after"] for d in mix["domains"]) or 1
        for d in mix["domains"]:
            target = "-" if d["target_share"] is None else f"{100 * d['target_share']:.1f}%"
            t.add_row(d["domain"], _n(d["before"]), _n(d["after"]), f"{100 * d['after'] / after_total:.1f}%", target)
        out.print(t)
    scored = [(label, p) for label, p in report["profiles"].items() if p["scores"]]
    if scored:
        t = _table(
            "filter scores over every record seen (kept and dropped)",
            ["stage", "score", "n", "min", "p5", "p50", "p95", "max", "cutoff"],
        )
        for label, p in scored:
            for col, s in p["scores"].items():
                if not s["count"]:
                    continue
                q = s["quantiles"]
                cut = p["thresholds"].get(col)
                t.add_row(
                    label,
                    col,
                    _n(s["count"]),
                    _n(s["min"]),
                    _n(q["p5"]),
                    _n(q["p50"]),
                    _n(q["p95"]),
                    _n(s["max"]),
                    f"{cut['option']}={cut['value']}" if cut else "",
                )
        out.print(t)
    describe_examples(out)


def print_what_if(out: Console, results: list[dict], describe) -> None:
    for r in results:
        changes = ", ".join(f"{k}={v!r}" for k, v in r["changes"].items())
        delta = r["kept_after"] - r["kept_before"]
        out.print(
            f"[bold]what if[/] {r['stage']} {changes}: keeps {r['kept_after']:,} of {r['records']:,} "
            f"(now {r['kept_before']:,}, {delta:+,}); {r['newly_dropped']:,} newly dropped, {r['newly_kept']:,} newly kept",
            highlight=False,
        )
        if r["final_output_estimate"] is not None:
            out.print(f"  final output: ~{r['final_output_estimate']:,} records (estimate)", highlight=False)
        out.print(f"  [dim]{r['note']}[/]", highlight=False)
        for kind, rows in r["examples"].items():
            for ex in rows:
                why = ex.get("reason") or ex.get("was")
                out.print(
                    f"  {kind.replace('_', ' ')}: {str(ex['id'])[:12]} ({why}) {short_scores(ex['scores'])} {ex['text'][:100]!r}",
                    highlight=False,
                )


def print_sweep(out: Console, s: dict) -> None:
    sampled = f" (a seeded sample of {s['records']:,} of {s['of_records']:,} records)" if s["sampled"] else ""
    t = _table(f"sweep {s['stage']}.{s['option']} (now {s['current']}){sampled}", [s["option"], "kept", "kept %", ""])
    for point in s["curve"]:
        bar = "#" * int((point["kept_pct"] or 0) / 2.5)
        mark = " <- now" if point["value"] == s["current"] else ""
        t.add_row(_n(point["value"]), _n(point["kept"]), _n(point["kept_pct"]), bar + mark)
    out.print(t)
    for kind, rows in s["examples"].items():
        for ex in rows:
            col = s["column"]
            out.print(
                f"  {kind.replace('_', ' ')}: {str(ex['id'])[:12]} {col}={ex['scores'].get(col)} {ex['text'][:100]!r}",
                highlight=False,
            )


def print_overlap(out: Console, o: dict) -> None:
    names = o["filters"]
    t = _table(
        f"overlap: records both filters would drop (seeded sample of {o['sample']:,} from {o['sampled_from']})",
        ["filter", *names, "drops", "alone"],
    )
    for name, row, drops, alone in zip(names, o["matrix"], o["drops"], o["alone"]):
        t.add_row(name, *(_n(v) for v in row), _n(drops), _n(alone))
    out.print(t)
    for name, drops, alone in zip(names, o["drops"], o["alone"]):
        if drops and alone == 0:
            out.print(
                f"  {name}: every record it drops is also dropped by another filter (redundant on this sample)",
                highlight=False,
            )
    for s in o["skipped"]:
        out.print(f"  [dim]skipped {s['stage']}: {s['why']}[/]", highlight=False)


def print_compare(out: Console, c: dict) -> None:
    head = f"compare a={c['a']} b={c['b']}"
    if c["partial"]:
        head += f" [bold yellow](partial: {c['note']})[/]"
    out.print(head, highlight=False)
    t = _table(
        "per stage (a -> b)", ["stage", "in", "out", "reason", "dropped", "changed options"], {"in", "out", "dropped"}
    )
    for s in c["stages"]:
        opts = ", ".join(f"{k}: {v[0]!r}->{v[1]!r}" for k, v in s["options_changed"].items())
        t.add_row(s["stage"], f"{s['in'][0]:,} -> {s['in'][1]:,}", f"{s['out'][0]:,} -> {s['out'][1]:,}", "", "", opts)
        for reason, (x, y) in s["dropped"].items():
            if x != y:
                t.add_row("", "", "", reason, f"{x:,} -> {y:,} ({y - x:+,})", "")
    out.print(t)
    for col, values in c["shares"].items():
        t = _table(f"output share by {col} (a -> b)", [col, "a", "b", "change"])
        for v, (x, y) in list(values.items())[:15]:
            t.add_row(str(v), f"{100 * x:.1f}%", f"{100 * y:.1f}%", f"{100 * (y - x):+.1f} pt")
        out.print(t)
    for s in c["stages"]:
        flips = s.get("flips")
        if not flips:
            continue
        out.print(
            f"{s['stage']}: {flips['kept_in_a_dropped_in_b']:,} kept in a but dropped in b, {flips['kept_in_b_dropped_in_a']:,} the other way",
            highlight=False,
        )
        for ex in flips["examples"]:
            reason = ex.get("reason_in_b") or ex.get("reason_in_a")
            out.print(
                f"  {str(ex['id'])[:16]} kept in {ex['kept_in']}, dropped in the other: {reason}", highlight=False
            )
