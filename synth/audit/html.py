"""`--html FILE`: the audit as one self-contained page (opens offline).

Charts are Plotly figures; plotly.js is inlined once in the page, so there are no
external scripts, fonts or images. Tables are plain HTML.
"""

from __future__ import annotations

import html
import json
from itertools import pairwise
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.warn{color:#b45309;font-weight:600}.bad{color:#b91c1c;font-weight:600}
.note{color:#555;font-size:13px}code{background:#f4f4f4;padding:1px 4px}.chart{margin:4px 0}
"""


def _e(v) -> str:
    return html.escape(str(v))


def _table(headers: list[str], rows: list[list], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{_fmt(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return _e(f"{v:,.4g}")
    if isinstance(v, int):
        return _e(f"{v:,}")
    return _e(v)


class Page:
    def __init__(self):
        import plotly.io as pio

        self.pio = pio
        self.parts: list[str] = []
        self.charts = 0

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def chart(self, fig, height: int = 380) -> None:
        fig.update_layout(height=height, margin=dict(l=50, r=20, t=50, b=50), template="plotly_white")
        self.charts += 1
        div = self.pio.to_html(
            fig,
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self.charts}",
            config={"displaylogo": False, "responsive": True},
        )
        self.parts.append(f'<div class="chart">{div}</div>')

    def render(self, title: str) -> str:
        from plotly.offline import get_plotlyjs

        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            + "\n".join(self.parts)
            + "</body></html>"
        )


def render_html(report: dict, examples: dict[str, dict[str, list[dict]]] | None = None) -> str:
    import plotly.graph_objects as go

    page = Page()
    status = report["status"]
    page.add(f"<h1>synth audit: {_e(report['pipeline'])}</h1>")
    cls = "" if status == "complete" else ' class="warn"'
    page.add(
        f"<p>run <code>{_e(report['run'])}</code>; status <span{cls}>{_e(status)}</span>; report schema version {report['version']}</p>"
    )
    for note in report["notes"]:
        page.add(f'<p class="warn">partial: {_e(note)}</p>')
    if report["failed_shards"]:
        page.add(f'<p class="bad">{len(report["failed_shards"])} shards failed</p>')
        page.add(
            _table(
                ["stage", "shard", "phase", "error"],
                [[f["stage"], f["shard"], f["phase"], f["error"]] for f in report["failed_shards"]],
            )
        )

    # -- funnel
    page.add("<h2>Funnel</h2>")
    funnel = report["funnel"]
    fig = go.Figure(
        go.Funnel(y=[f["stage"] for f in funnel], x=[f["out"] for f in funnel], textinfo="value+percent previous")
    )
    fig.update_layout(title="records out of each stage")
    page.chart(fig, 120 + 40 * len(funnel))
    by_stage = {s["stage"]: s for s in report["stages"]}
    page.add(
        _table(
            ["stage", "type", "in", "out", "kept %", "dropped", "drop reasons", "shards", "seconds", "records/s"],
            [
                [
                    f["stage"],
                    f["type"],
                    f["in"],
                    f["out"],
                    f["kept_pct"],
                    f["dropped"],
                    ", ".join(f"{k} {v:,}" for k, v in by_stage[f["stage"]]["dropped"].items()),
                    f"{f['shards_done']}/{f['shards']}",
                    f["seconds"],
                    f["records_per_s"],
                ]
                for f in funnel
            ],
            {2, 3, 4, 5, 8, 9},
        )
    )
    if report["llm"]:
        page.add("<h2>LLM use per model</h2>")
        page.add(
            _table(
                [
                    "model",
                    "stages",
                    "requests",
                    "failures",
                    "cache hits",
                    "prompt tokens",
                    "completion tokens",
                    "tokens/s",
                ],
                [
                    [
                        m["model"],
                        ", ".join(m["stages"]),
                        m["requests"],
                        m["failures"],
                        m["cache_hits"],
                        m["prompt_tokens"],
                        m["completion_tokens"],
                        m["tokens_per_s"],
                    ]
                    for m in report["llm"]
                ],
                {2, 3, 4, 5, 6, 7},
            )
        )

    # -- output shares
    output = report["output"]
    if output["by"]:
        page.add(f"<h2>Output by category ({_e(output['stage'])}, size in {_e(output['unit'])})</h2>")
        for col, values in output["by"].items():
            items = list(values.items())[:30]
            fig = go.Figure(
                go.Bar(
                    x=[str(k) for k, _ in items],
                    y=[v[output["unit"]] for _, v in items],
                    text=[f"{100 * v['share']:.1f}%" for _, v in items],
                )
            )
            fig.update_layout(title=f"{output['unit']} per {col}", xaxis_title=col, yaxis_title=output["unit"])
            page.chart(fig, 320)
    langs = [(label, p) for label, p in report["profiles"].items() if "language" in p["categorical"]]
    if langs:
        page.add("<h3>Kept records and size per language, per stage</h3>")
        page.add(
            _table(
                ["stage", "language", "records", "size", "unit"],
                [
                    [label, lang, d["records"], d[p["unit"]], p["unit"]]
                    for label, p in langs
                    for lang, d in p["categorical"]["language"].items()
                ],
                {2, 3},
            )
        )
    for mix in report["domain_mix"]:
        page.add(f"<h2>Domain mix ({_e(mix['stage'])})</h2>")
        doms = mix["domains"]
        total_b = sum(d["before"] for d in doms) or 1
        total_a = sum(d["after"] for d in doms) or 1
        fig = go.Figure(
            [
                go.Bar(name="before", x=[d["domain"] for d in doms], y=[d["before"] / total_b for d in doms]),
                go.Bar(name="after", x=[d["domain"] for d in doms], y=[d["after"] / total_a for d in doms]),
                go.Bar(name="target", x=[d["domain"] for d in doms], y=[d["target_share"] or 0 for d in doms]),
            ]
        )
        fig.update_layout(barmode="group", title="share per domain", yaxis_tickformat=".0%")
        page.chart(fig, 340)
        page.add(
            _table(
                ["domain", "before", "after", "target share"],
                [[d["domain"], d["before"], d["after"], d["target_share"]] for d in doms],
                {1, 2, 3},
            )
        )

    # -- score histograms
    scored = [(label, p) for label, p in report["profiles"].items() if p["scores"] or p["lengths"]]
    if scored:
        page.add(
            '<h2>Score and length distributions</h2><p class="note">Filter scores cover every record the filter saw, kept and dropped; the dashed line is the current cutoff.</p>'
        )
    for label, p in scored:
        for col, s in p["scores"].items():
            if not s["count"]:
                continue
            fig = _hist(go, s, f"{label}: {col} (n={s['count']:,})")
            cut = p["thresholds"].get(col)
            if cut:
                fig.add_vline(
                    x=cut["value"],
                    line_dash="dash",
                    line_color="#dc2626",
                    annotation_text=f"{cut['option']}={cut['value']}",
                )
            page.chart(fig, 300)
    last = list(report["profiles"])[-1] if report["profiles"] else None
    if last:
        for col, lengths in report["profiles"][last]["lengths"].items():
            if lengths["words"]["count"]:
                page.chart(_hist(go, lengths["words"], f"{last}: words per {col}"), 280)

    # -- what-if, sweep, overlap, compare
    for r in report.get("what_if", []):
        page.add(f"<h2>What if {_e(r['stage'])} {_e(', '.join(f'{k}={v!r}' for k, v in r['changes'].items()))}</h2>")
        page.add(
            f'<p>keeps {r["kept_after"]:,} of {r["records"]:,} (now {r["kept_before"]:,}); {r["newly_dropped"]:,} newly dropped, {r["newly_kept"]:,} newly kept.</p><p class="note">{_e(r["note"])}</p>'
        )
        rows = [
            [k, ex["id"], ex.get("reason") or ex.get("was"), json.dumps(ex["scores"], default=str), ex["text"]]
            for k, exs in r["examples"].items()
            for ex in exs
        ]
        if rows:
            page.add(_table(["flip", "id", "reason", "scores", "text"], rows))
    for s in report.get("sweep", []):
        page.add(f"<h2>Sweep {_e(s['stage'])}.{_e(s['option'])}</h2>")
        if s["sampled"]:
            page.add(f'<p class="note">on a seeded sample of {s["records"]:,} of {s["of_records"]:,} records</p>')
        fig = go.Figure(
            go.Scatter(x=[c["value"] for c in s["curve"]], y=[c["kept_pct"] for c in s["curve"]], mode="lines+markers")
        )
        fig.add_vline(x=s["current"], line_dash="dash", line_color="#dc2626", annotation_text=f"now {s['current']}")
        fig.update_layout(title=f"kept % as {s['option']} varies", xaxis_title=s["option"], yaxis_title="kept %")
        page.chart(fig, 340)
        rows = [
            [k, ex["id"], ex["scores"].get(s["column"]), ex["text"]] for k, exs in s["examples"].items() for ex in exs
        ]
        if rows:
            page.add(_table(["side", "id", s["column"] or "score", "text"], rows))
    if "overlap" in report:
        o = report["overlap"]
        page.add(
            f'<h2>Filter overlap</h2><p class="note">a seeded sample of {o["sample"]:,} records of {_e(o["sampled_from"])}, scored by every CPU filter</p>'
        )
        fig = go.Figure(
            go.Heatmap(
                z=o["matrix"],
                x=o["filters"],
                y=o["filters"],
                colorscale="Blues",
                text=o["matrix"],
                texttemplate="%{text}",
            )
        )
        fig.update_layout(title="records both filters would drop")
        page.chart(fig, 200 + 40 * len(o["filters"]))
        page.add(
            _table(
                ["filter", "would drop", "alone"],
                [[n, d, a] for n, d, a in zip(o["filters"], o["drops"], o["alone"])],
                {1, 2},
            )
        )
        if o["skipped"]:
            page.add(_table(["skipped", "why"], [[s["stage"], s["why"]] for s in o["skipped"]]))
    if "compare" in report:
        c = report["compare"]
        page.add(f"<h2>Compared with <code>{_e(c['b'])}</code></h2>")
        if c["partial"]:
            page.add(f'<p class="warn">partial: {_e(c["note"])}</p>')
        rows = []
        for s in c["stages"]:
            rows.append([s["stage"], "(out)", s["out"][0], s["out"][1], s["out"][1] - s["out"][0]])
            rows.extend([s["stage"], r, x, y, y - x] for r, (x, y) in s["dropped"].items() if x != y)
        page.add(_table(["stage", "reason", "a", "b", "b - a"], rows, {2, 3, 4}))
        changed = [
            [s["stage"], k, json.dumps(v[0]), json.dumps(v[1])]
            for s in c["stages"]
            for k, v in s["options_changed"].items()
        ]
        if changed:
            page.add(_table(["stage", "option", "a", "b"], changed))
        for col, values in c["shares"].items():
            items = list(values.items())[:30]
            fig = go.Figure(
                [
                    go.Bar(name="a", x=[k for k, _ in items], y=[v[0] for _, v in items]),
                    go.Bar(name="b", x=[k for k, _ in items], y=[v[1] for _, v in items]),
                ]
            )
            fig.update_layout(barmode="group", title=f"output share by {col}", yaxis_tickformat=".0%")
            page.chart(fig, 320)
        flips = [
            [s["stage"], ex["id"], ex["kept_in"], ex.get("reason_in_b") or ex.get("reason_in_a")]
            for s in c["stages"]
            for ex in (s.get("flips") or {}).get("examples", [])
        ]
        if flips:
            page.add(_table(["stage", "id", "kept in", "dropped in the other because"], flips))

    # -- rejected examples
    if examples:
        page.add("<h2>Rejected examples</h2>")
        for label, by_reason in examples.items():
            for reason, rows in by_reason.items():
                page.add(f"<h3>{_e(label)}: {_e(reason)}</h3>")
                page.add(
                    _table(
                        ["id", "text", "scores"],
                        [
                            [r["id"], r["text"], json.dumps(r["scores"], default=str) if r["scores"] else ""]
                            for r in rows
                        ],
                    )
                )
    return page.render(f"synth audit: {report['pipeline']}")


def _hist(go, s: dict, title: str):
    h = s["histogram"]
    edges, counts = h["edges"], h["counts"]
    centers = [(a + b) / 2 for a, b in pairwise(edges)] if len(edges) > 1 else edges
    widths = [b - a for a, b in pairwise(edges)] if len(edges) > 1 else None
    fig = go.Figure(
        go.Bar(x=centers, y=counts, width=widths if widths and any(widths) else None, marker_color="#2563eb")
    )
    fig.update_layout(title=title, bargap=0.02, yaxis_title="records")
    return fig


def write_html(path: Path, report: dict, examples: dict | None = None) -> None:
    from synth.core.rundir import atomic_write_bytes

    atomic_write_bytes(Path(path), render_html(report, examples).encode("utf-8"))
