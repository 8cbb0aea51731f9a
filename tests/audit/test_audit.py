"""`synth audit` on real (toy) runs: statistics over every record, re-tuning, overlap,
comparison, the JSON schema, and bad input as one-line errors."""

import json
import shutil

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.audit.report import AuditError, build_report
from synth.cli import app
from synth.core.rundir import RunDir, atomic_write_json, read_json
from tests.audit.conftest import run_toy

runner = CliRunner()


def audit_json(run, *args):
    res = runner.invoke(app, ["audit", str(run), "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_scores_cover_every_record_and_dropped_scores_are_kept(toy_run):
    report = audit_json(toy_run)
    assert report["version"] == 2 and report["status"] == "complete"
    stage = report["stages"][1]
    # today's entries are unchanged
    assert set(stage) >= {
        "stage",
        "type",
        "in",
        "out",
        "dropped",
        "counters",
        "shards",
        "shards_done",
        "seconds",
        "balanced",
    }
    words = report["profiles"]["01-toy_min_words"]["scores"]["toy_words"]
    assert words["count"] == stage["in"] == 600  # kept and dropped
    assert words["min"] == 1 and report["profiles"]["01-toy_min_words"]["thresholds"]["toy_words"] == {
        "option": "min_words",
        "value": 10,
    }
    assert sum(words["histogram"]["counts"]) == 600
    run = RunDir(toy_run)
    folder = run.root / "rejected" / "01-toy_min_words"
    # per shard while a run goes; merged into one file (with a shard column) once a fused run completes
    scores = (
        pq.read_table(folder / "scores")
        if (folder / "scores").is_dir()
        else pq.read_table(folder / "scores.parquet").drop_columns(["shard"])
    )
    scores = scores.filter(pc.is_valid(scores.column("reason")))  # a fused filter stores its kept rows too
    assert scores.num_rows == stage["dropped"]["too_few_words"]
    assert set(scores.column_names) >= {"id", "reason", "row", "toy_words"}
    assert max(scores.column("toy_words").to_pylist()) < 10
    # the v1 reject sample is still there and still read by the table view
    table = runner.invoke(app, ["audit", str(toy_run)])
    assert table.exit_code == 0 and "dropped too_few_words" in table.output and "min_words=10" in table.output


def test_language_domain_and_kind_per_stage(toy_run):
    report = audit_json(toy_run)
    langs = report["profiles"]["00-toy_text"]["categorical"]["language"]
    assert {k: v["records"] for k, v in langs.items()} == {"en": 150, "fr": 150, "de": 150, "sw": 150}
    kept = report["profiles"]["02-toy_max_digits"]["categorical"]["language"]
    assert sum(v["records"] for v in kept.values()) == report["stages"][2]["out"]
    assert report["output"]["unit"] == "words"
    assert abs(sum(v["share"] for v in report["output"]["by"]["domain"].values()) - 1) < 1e-3
    out = runner.invoke(app, ["audit", str(toy_run)]).output
    assert "kept records and size per language, per stage" in out and "by kind" in out


def test_what_if_is_exact_against_a_rerun(toy_run, tmp_path):
    report = audit_json(toy_run, "--what-if", "toy_min_words.min_words=20")
    w = report["what_if"][0]
    assert w["stage"] == "01-toy_min_words" and w["exact"] and w["changes"] == {"min_words": 20}
    rerun = audit_json(run_toy(tmp_path, min_words=20))
    assert w["kept_after"] == rerun["stages"][1]["out"]
    assert w["newly_dropped"] == report["stages"][1]["out"] - rerun["stages"][1]["out"] and w["newly_kept"] == 0
    assert all(10 <= ex["scores"]["toy_words"] < 20 for ex in w["examples"]["newly_dropped"])
    assert "estimate" in w["note"]
    # loosening: records the stage dropped come back, found through their stored scores
    back = audit_json(toy_run, "--what-if", "01-toy_min_words.min_words=0")["what_if"][0]
    assert back["newly_kept"] == report["stages"][1]["dropped"]["too_few_words"] and back["kept_after"] == 600
    assert back["examples"]["newly_kept"][0]["text"]  # text comes from the stage's input shard


def test_sweep_is_monotone_and_shows_records_near_the_cutoff(toy_run):
    both = audit_json(toy_run, "--sweep", "toy_min_words.min_words", "--sweep", "toy_max_digits.max_digit_frac")[
        "sweep"
    ]
    assert [x["option"] for x in both] == ["min_words", "max_digit_frac"]
    s = both[0]
    kept = [p["kept"] for p in s["curve"]]
    assert kept == sorted(kept, reverse=True) and kept[0] == 600
    now = next(p for p in s["curve"] if p["value"] == 10)
    assert now["kept"] == 509 or now["kept"] == audit_json(toy_run)["stages"][1]["out"]
    assert all(ex["scores"]["toy_words"] >= 10 for ex in s["examples"]["just_inside"])
    assert all(ex["scores"]["toy_words"] < 10 for ex in s["examples"]["just_outside"])
    assert min(ex["scores"]["toy_words"] for ex in s["examples"]["just_inside"]) == 10


def test_overlap_counts_shared_and_alone_drops(toy_run):
    o = audit_json(toy_run, "--overlap", "--overlap-sample", "300")["overlap"]
    assert o["filters"] == ["01-toy_min_words", "02-toy_max_digits"] and o["sample"] == 300
    m = o["matrix"]
    assert m[0][1] == m[1][0] and m[0][0] == o["drops"][0]
    assert o["alone"][0] == o["drops"][0] - m[0][1] and o["alone"][1] == o["drops"][1] - m[0][1]
    again = audit_json(toy_run, "--overlap", "--overlap-sample", "300")["overlap"]
    assert again == o  # seeded


def test_compare_two_runs(toy_run, tmp_path):
    other = run_toy(tmp_path, min_words=20, variant=1)
    c = audit_json(toy_run, "--compare", str(other))["compare"]
    assert not c["partial"]
    stage = next(s for s in c["stages"] if s["stage"] == "01-toy_min_words")
    assert stage["options_changed"] == {"min_words": [10, 20]}
    assert stage["dropped"]["too_few_words"][1] > stage["dropped"]["too_few_words"][0]
    assert (
        stage["flips"]["kept_in_a_dropped_in_b"]
        == stage["dropped"]["too_few_words"][1] - stage["dropped"]["too_few_words"][0]
    )
    assert stage["flips"]["examples"][0]["reason_in_b"] == "too_few_words"
    assert set(c["shares"]["domain"]) == {"math", "code", "history"}
    text = runner.invoke(app, ["audit", str(toy_run), "--compare", str(other)]).output
    assert "kept in a but dropped in b" in text
    # different pipelines: a clearly marked partial report on the shared stages
    extra = run_toy(tmp_path, name="extra", extra_stage=True)
    c2 = audit_json(toy_run, "--compare", str(extra))["compare"]
    assert c2["partial"] and "only in b: 03-digits_again" in c2["note"]


def test_domain_mix_from_a_synthetic_ledger(tmp_path):
    run = RunDir(tmp_path / "mix")
    label = "00-self_instruct"
    atomic_write_json(run.manifest, {"pipeline": "mix", "stages": [{"label": label, "type": "self_instruct"}]})
    atomic_write_json(run.stage_meta(label), {"type": "self_instruct", "options": {}, "shards": 1})
    llm = {
        "llm.org/model-1.5b.requests": 10,
        "llm.org/model-1.5b.failures": 1,
        "llm.org/model-1.5b.cache_hits": 4,
        "llm.org/model-1.5b.completion_tokens": 300,
        "llm.org/model-1.5b.latency_s": 2.0,
    }
    counters = {
        **llm,
        "domain_mix.before.math": 80,
        "domain_mix.before.code": 20,
        "domain_mix.after.math": 50,
        "domain_mix.after.code": 50,
        "domain_mix.target.math": 500,
        "domain_mix.target.code": 500,
    }
    atomic_write_json(
        run.stats(label, "part-00000"),
        {
            "stage": label,
            "shard": "part-00000",
            "in": 0,
            "out": 100,
            "dropped": {},
            "counters": counters,
            "creates_records": True,
            "seconds": 1.0,
        },
    )
    import pyarrow as pa

    pq.write_table(pa.table({"id": [str(i) for i in range(3)]}), run.part(label, "part-00000"))
    report = audit_json(run.root)
    assert report["domain_mix"] == [
        {
            "stage": label,
            "domains": [
                {"domain": "code", "before": 20, "after": 50, "target_share": 0.5},
                {"domain": "math", "before": 80, "after": 50, "target_share": 0.5},
            ],
        }
    ]
    assert report["llm"] == [
        {
            "model": "org/model-1.5b",
            "stages": [label],
            "requests": 10,
            "samples": 0,
            "failures": 1,
            "cache_hits": 4,
            "prompt_tokens": 0,
            "completion_tokens": 300,
            "latency_s": 2.0,
            "tokens_per_s": 150.0,
        }
    ]
    out = runner.invoke(app, ["audit", str(run.root)]).output
    assert "domain mix (00-self_instruct)" in out and "50.0%" in out and "org/model-1.5b" in out
    page = tmp_path / "mix.html"
    assert runner.invoke(app, ["audit", str(run.root), "--html", str(page)]).exit_code == 0
    html = page.read_text()
    assert "Domain mix (00-self_instruct)" in html and "LLM use per model" in html


def test_in_progress_and_failed_shards(tmp_path):
    import yaml

    pipe = tmp_path / "crash.yaml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "crash",
                "stages": [
                    {"type": "tests.core.toy_stages:CountSource", "per_shard": 5, "shards": 3},
                    {"type": "tests.core.toy_stages:Slow", "crash_on": 7},
                ],
            }
        )
    )
    run = tmp_path / "run"
    res = runner.invoke(app, ["run", str(pipe), "--output", str(run), "--workers", "1"])
    assert res.exit_code == 1
    report = audit_json(run)
    assert report["status"] == "failed shards"
    assert [(f["stage"], f["shard"]) for f in report["failed_shards"]] == [("01-toy_slow", "part-00001")]
    assert "planted crash" in report["failed_shards"][0]["error"]
    assert report["stages"][1]["shards_done"] == 2
    text = runner.invoke(app, ["audit", str(run)]).output
    assert "1 shards failed" in text and "part-00001" in text
    lock = RunDir(run).lock()  # a run writing the directory right now
    try:
        assert build_report(run)["status"] == "in progress"
    finally:
        lock.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--what-if", "nope.min_words=3"], "unknown stage 'nope'"),
        (["--what-if", "toy_min_words.min_wordz=3"], "has no option 'min_wordz'"),
        (["--what-if", "toy_min_words.min_words=lots"], "min_words"),
        (["--what-if", "toy_min_words.min_words"], "expected STAGE.OPTION=VALUE"),
        (["--what-if", "toy_text.per_shard=3"], "is not a filter"),
        (["--sweep", "toy_min_words.annotate_only"], "only a numeric threshold can be swept"),
    ],
)
def test_bad_requests_are_one_line_errors(toy_run, args, message):
    res = runner.invoke(app, ["audit", str(toy_run), *args])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 2, res.output  # one line (soft-wrapped at most once)


def test_bad_run_directories_are_one_line_errors(toy_run, tmp_path):
    res = runner.invoke(app, ["audit", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no such directory" in res.output
    res = runner.invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and "not a synth run directory" in res.output
    old = tmp_path / "old"
    shutil.copytree(toy_run, old)
    stats = RunDir(old).stats("01-toy_min_words", "part-00000")
    entry = read_json(stats)
    del entry["in"]
    atomic_write_json(stats, entry)
    res = runner.invoke(app, ["audit", str(old)])
    assert res.exit_code == 1 and "older or unknown ledger version" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["audit", str(toy_run), "--compare", str(toy_run)])
    assert res.exit_code == 1 and "that is the run being audited" in res.output
    with pytest.raises(AuditError):
        build_report(tmp_path)


def test_filter_profiles_derived_from_their_input_equal_a_fresh_pass(toy_run):
    """Filters' length and category statistics are the input's minus what they dropped;
    that shortcut must give what a pass over the kept records gives."""
    from synth.audit import stats
    from synth.audit.collect import profile_path
    from synth.audit.compact import read_profiles

    run = RunDir(toy_run)
    for label in ("01-toy_min_words", "02-toy_max_digits"):
        merged = read_profiles(run, label)  # a completed fused run merged them
        for part in sorted(run.stage_dir(label).glob("part-*.parquet")):
            name = part.name[: -len(".parquet")]
            stored = (
                read_json(profile_path(run, label, name)) if profile_path(run, label, name).exists() else merged[name]
            )
            assert stored.get("derived")
            fresh = stats.profile_table(pq.read_table(part), [])
            assert stored["categorical"] == fresh["categorical"] and stored["size_total"] == fresh["size_total"]
            for col, parts in fresh["lengths"].items():
                for m, s in parts.items():
                    assert (
                        stored["lengths"][col][m]["buckets"] == s["buckets"]
                        and stored["lengths"][col][m]["count"] == s["count"]
                    )
                    assert abs(stored["lengths"][col][m]["sum"] - s["sum"]) < 1e-6


def test_a_run_without_statistics_is_a_marked_partial_report(toy_run, tmp_path):
    old = tmp_path / "nostats"
    shutil.copytree(toy_run, old)
    for path in [
        *old.glob("stages/*/part-*.profile.json"),
        *old.glob("stages/*/profiles.json.gz"),
        old / "rejected" / "01-toy_min_words" / "scores.parquet",
    ]:
        path.unlink(missing_ok=True)
    shutil.rmtree(old / "rejected" / "01-toy_min_words" / "scores", ignore_errors=True)
    report = audit_json(old)
    assert report["profiles"] == {} and len(report["notes"]) == 3 and "statistics for 0 of 3" in report["notes"][1]
    assert [s["out"] for s in report["stages"]] == [
        s["out"] for s in audit_json(toy_run)["stages"]
    ]  # the ledger is intact
    assert "partial:" in runner.invoke(app, ["audit", str(old)]).output
    res = runner.invoke(app, ["audit", str(old), "--what-if", "toy_min_words.min_words=3"])
    assert res.exit_code == 1 and (
        "has no rejected scores" in res.output or "nor the scores of every row" in res.output
    )


def test_what_if_on_a_stage_that_is_not_a_filter_matches_a_rerun(tmp_path):
    import yaml

    def run_with(min_grade, name):
        pipe = tmp_path / f"{name}.yaml"
        stages = [
            {"type": "tests.audit.toy:SyntheticText", "per_shard": 100, "shards": 2},
            {"type": "tests.audit.toy:GradeLikeCritique", "min_grade": min_grade},
        ]
        pipe.write_text(yaml.safe_dump({"name": "grades", "stages": stages}))
        res = runner.invoke(
            app, ["run", str(pipe), "--output", str(tmp_path / name), "--workers", "1", "--keep-intermediate"]
        )
        assert res.exit_code == 0, res.output
        return tmp_path / name

    run = run_with(3, "a")
    for new in (2, 4):
        w = audit_json(run, "--what-if", f"toy_grade.min_grade={new}")["what_if"][0]
        assert not w["exact"] and "not a filter" in w["note"]
        assert w["kept_after"] == audit_json(run_with(new, f"g{new}"))["stages"][1]["out"]
    seen = audit_json(run)["profiles"]["01-toy_grade"]["scores"]["toy_grade"]
    assert seen["count"] == 200 and seen["min"] == 1  # kept and dropped grades
    res = runner.invoke(app, ["audit", str(run), "--what-if", "toy_grade.min_grade=9"])
    assert res.exit_code == 1 and "min_grade" in res.output and "Traceback" not in res.output
