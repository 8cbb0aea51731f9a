"""Fused stages: consecutive shard-by-shard stages run in one task and only the
group's last stage writes its shards, with the same output, ledger and audit as a
run that writes every stage (--keep-intermediate)."""

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.audit.report import build_report
from synth.cli import app
from synth.core.config import ConfigError, build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, fusion_groups, run_pipeline
from synth.core.ledger import audit, reject_samples
from synth.core.rundir import RunDir

T = "tests.core.toy_stages"


def _raw(modulus=2, materialize_slow=False):
    slow = {"type": f"{T}:Slow"}
    if materialize_slow:
        slow["materialize"] = True
    return {
        "name": "toy-fuse",
        "seed": 2,
        "stages": [
            {"type": f"{T}:CountSource", "per_shard": 20, "shards": 4},
            slow,
            {"type": f"{T}:DropOdd", "modulus": modulus},
            {"type": f"{T}:DedupText"},
            {"type": f"{T}:DropOdd", "name": "odd_again", "modulus": 3},
        ],
    }


def _run(run_dir, raw, keep=False, workers=1):
    pipe = build_pipeline(raw)
    src = PipelineSource(raw=raw, path=None, seed=pipe.seed)
    return run_pipeline(pipe, src, run_dir, executor=LocalExecutor(workers), keep_intermediate=keep)


def _rows(result):
    return [r for p in result.output for r in pq.read_table(p).to_pylist()]


def _ledger(run_dir):
    out = {}
    for stats in sorted((run_dir / "stages").glob("*/part-*.stats.json")):
        s = json.loads(stats.read_text())
        s.pop("seconds")
        out[(stats.parent.name, stats.name)] = s
    return out


def test_groups_end_before_a_global_stage_at_materialize_and_at_the_end():
    assert fusion_groups(build_pipeline(_raw())) == [[0, 1, 2], [3, 4]]
    assert fusion_groups(build_pipeline(_raw(materialize_slow=True))) == [[0, 1], [2], [3, 4]]
    assert fusion_groups(build_pipeline(_raw()), keep_intermediate=True) == [[i] for i in range(5)]


def test_fused_run_equals_keep_intermediate_in_rows_ledger_and_audit(tmp_path):
    fused = _run(tmp_path / "fused", _raw(), workers=2)
    kept = _run(tmp_path / "kept", _raw(), keep=True)
    assert _rows(fused) and _rows(fused) == _rows(kept)
    assert _ledger(tmp_path / "fused") == _ledger(tmp_path / "kept")
    # only the groups' last stages wrote shards, and the finished run dropped the one
    # written only for dedup to read (marked released: done)
    written = {p.parent.name for p in (tmp_path / "fused" / "stages").glob("*/part-*.parquet")}
    assert written == {"04-odd_again"}
    assert len(list((tmp_path / "fused" / "stages" / "02-toy_drop_odd").glob("part-*.released.json"))) == 4
    a, b = audit(tmp_path / "fused"), audit(tmp_path / "kept")
    strip = lambda rep: [{k: v for k, v in s.items() if k != "seconds"} for s in rep["stages"]]  # noqa: E731
    assert a["complete"] and strip(a) == strip(b)
    assert [s["dropped"] for s in a["stages"]][2] == {"odd": 40}
    # rejected samples and per-stage profiles exist for fused stages too, merged per stage once the run completed
    assert (tmp_path / "fused" / "rejected" / "02-toy_drop_odd" / "samples.parquet").exists()
    assert (tmp_path / "fused" / "stages" / "01-toy_slow" / "profiles.json.gz").exists()
    assert not list((tmp_path / "fused").rglob("part-*.profile.json")) and list(
        (tmp_path / "kept").rglob("part-*.profile.json")
    )
    report_a, report_b = build_report(tmp_path / "fused"), build_report(tmp_path / "kept")
    assert report_a["profiles"] == report_b["profiles"]
    assert {k: len(v) for k, v in reject_samples(tmp_path / "fused", "02-toy_drop_odd").items()} == {"odd": 5}


def _audit_json(runner, run, *extra):
    res = runner.invoke(app, ["audit", str(run), "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_audit_what_if_and_overlap_on_a_fused_run_equal_a_keep_intermediate_run(tmp_path):
    import yaml

    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump(_raw()))
    runner = CliRunner()
    for name, flags in (("fused", []), ("kept", ["--keep-intermediate"])):
        res = runner.invoke(app, ["run", str(pipe), "--output", str(tmp_path / name), "--workers", "1", *flags])
        assert res.exit_code == 0, res.output
    assert not list((tmp_path / "fused" / "stages" / "02-toy_drop_odd").glob("part-*.parquet"))  # the default fuses
    assert list((tmp_path / "kept" / "stages" / "02-toy_drop_odd").glob("part-*.parquet"))
    report = _audit_json(runner, tmp_path / "fused")
    assert [s["stage"] for s in report["stages"]] == [
        "00-toy_count",
        "01-toy_slow",
        "02-toy_drop_odd",
        "03-toy_dedup_text",
        "04-odd_again",
    ]
    assert report["stages"][2]["out"] == 40
    # re-decided from stored scores (02 is fused; 04's input is dedup's, fused too)
    asks = [
        "--what-if",
        "02-toy_drop_odd.annotate_only=true",
        "--what-if",
        "04-odd_again.annotate_only=true",
        "--overlap",
    ]
    fused, kept = _audit_json(runner, tmp_path / "fused", *asks), _audit_json(runner, tmp_path / "kept", *asks)
    for a, b in zip(fused["what_if"], kept["what_if"]):
        assert a["exact"] and a == {**b, "note": a["note"]}
    assert (fused["what_if"][0]["records"], fused["what_if"][0]["kept_before"], fused["what_if"][0]["kept_after"]) == (
        80,
        40,
        80,
    )
    assert fused["what_if"][1]["newly_kept"] == kept["what_if"][1]["newly_kept"] > 0
    assert all(
        e["id"] and e["text"] for e in fused["what_if"][0]["examples"]["newly_kept"]
    )  # text from the recomputed input
    for key in ("sample", "filters", "drops", "matrix", "alone", "dropped_by_any"):
        assert fused["overlap"][key] == kept["overlap"][key]
    assert fused["overlap"]["drops"] and fused["overlap"]["sample"] == 80


def test_a_rerun_after_an_option_change_of_a_global_stage_recomputes_its_released_input(tmp_path):
    run = tmp_path / "run"
    _run(run, _raw())
    assert not list((run / "stages" / "02-toy_drop_odd").glob("part-*.parquet"))
    raw = _raw()
    raw["stages"][4]["modulus"] = 5
    changed = _run(run, raw)
    assert set(changed.invalidated) == {"04-odd_again"}
    raw = _raw()
    raw["stages"][3]["name"] = "dedup_renamed"  # dedup reruns: its input, released, is recomputed
    changed = _run(run, raw)
    assert "02-toy_drop_odd" not in changed.invalidated
    assert _rows(changed) == _rows(_run(tmp_path / "fresh", raw))
    assert _ledger(run) == _ledger(tmp_path / "fresh")


def test_option_change_recomputes_from_the_groups_first_stage(tmp_path):
    run = tmp_path / "run"
    _run(run, _raw())
    source_stats = run / "stages" / "00-toy_count" / "part-00000.stats.json"
    before = source_stats.stat().st_mtime_ns
    dedup_state = (run / "stages" / "03-toy_dedup_text" / "_state.done").exists()
    assert dedup_state
    changed = _run(run, _raw(modulus=5))
    # drop_odd belongs to the group source -> slow -> drop_odd: the source reran too
    assert source_stats.stat().st_mtime_ns != before
    assert set(changed.invalidated) == {"02-toy_drop_odd", "03-toy_dedup_text", "04-odd_again"}
    fresh = _run(tmp_path / "fresh", _raw(modulus=5))
    assert _rows(changed) == _rows(fresh)
    assert _ledger(run) == _ledger(tmp_path / "fresh")


def test_rerun_of_a_finished_fused_run_does_nothing(tmp_path):
    run = tmp_path / "run"
    _run(run, _raw())
    stamp = {p: p.stat().st_mtime_ns for p in (run / "stages").rglob("part-*")}
    again = _run(run, _raw())
    assert not again.invalidated
    assert {p: p.stat().st_mtime_ns for p in (run / "stages").rglob("part-*")} == stamp


def test_materialize_writes_that_stage_and_a_fused_rerun_continues_from_it(tmp_path):
    run = tmp_path / "run"
    result = _run(run, _raw(materialize_slow=True))
    assert len(list((run / "stages" / "01-toy_slow").glob("part-*.parquet"))) == 4
    assert _rows(result) == _rows(_run(tmp_path / "plain", _raw()))


def test_materialize_must_be_a_boolean():
    raw = _raw()
    raw["stages"][1]["materialize"] = "yes"
    with pytest.raises(ConfigError, match="materialize"):
        build_pipeline(raw)


def test_consecutive_global_stages_fuse_and_match_keep_intermediate(tmp_path):
    raw = _raw()
    raw["stages"].insert(4, {"type": f"{T}:DedupText", "name": "dedup_again"})
    assert fusion_groups(build_pipeline(raw)) == [[0, 1, 2], [3, 4, 5]]
    fused = _run(tmp_path / "fused", raw, workers=2)
    kept = _run(tmp_path / "kept", raw, keep=True)
    assert _rows(fused) and _rows(fused) == _rows(kept)
    assert _ledger(tmp_path / "fused") == _ledger(tmp_path / "kept")
    assert audit(tmp_path / "fused")["stages"][4]["counters"] == audit(tmp_path / "kept")["stages"][4]["counters"]
    # the first dedup's output is never written; summaries go once the state is reduced
    assert not list((tmp_path / "fused" / "stages" / "03-toy_dedup_text").glob("part-*.parquet"))
    assert not list((tmp_path / "fused" / "stages").glob("*/_summaries/*.parquet"))
    again = _run(tmp_path / "fused", raw)  # a finished run stays finished without its summaries
    assert not again.invalidated and _rows(again) == _rows(fused)


def test_progress_shows_every_fused_stage(tmp_path):
    lines: dict[str, list] = {}

    class Line:
        def __init__(self, label):
            self.label = label
            lines[label] = []

        def advance(self, stats, phase):
            lines[self.label].append((phase, stats.get("stage"), stats.get("out")))

        def add_stage(self, entry, total, done):
            return Line(entry.label)

        def close(self):
            pass

    pipe = build_pipeline(_raw())
    run_pipeline(
        pipe,
        PipelineSource(raw=_raw(), path=None, seed=pipe.seed),
        tmp_path / "run",
        executor=LocalExecutor(1),
        keep_intermediate=False,
        progress=lambda entry, *a: Line(entry.label),
    )
    assert list(lines) == ["00-toy_count", "01-toy_slow", "02-toy_drop_odd", "03-toy_dedup_text", "04-odd_again"]
    assert lines["01-toy_slow"] == [("process", "01-toy_slow", 20)] * 4
    assert [out for _, _, out in lines["02-toy_drop_odd"]] == [10] * 4


def test_compare_flips_on_fused_runs_equal_those_on_keep_intermediate_runs(tmp_path):
    from synth.audit.compare import compare

    for mode in ("fused", "kept"):
        for modulus in (2, 3):
            _run(tmp_path / f"{mode}-{modulus}", _raw(modulus=modulus), keep=mode == "kept")
    flips = {}
    for mode in ("fused", "kept"):
        c = compare(build_report(tmp_path / f"{mode}-2"), build_report(tmp_path / f"{mode}-3"))
        flips[mode] = {s["stage"]: s.get("flips") for s in c["stages"]}
    assert flips["fused"] == flips["kept"]
    assert flips["fused"]["02-toy_drop_odd"]["kept_in_a_dropped_in_b"] > 0


def test_what_if_of_a_filter_reading_long_text_recomputes_its_input_on_a_fused_run(tmp_path):
    raw = {
        "name": "toy-text",
        "seed": 1,
        "stages": [
            {"type": f"{T}:CountSource", "per_shard": 14, "shards": 2},
            {"type": f"{T}:PadText"},
            {"type": f"{T}:DropDigit", "digits": "01"},
            {"type": f"{T}:DedupText"},
        ],
    }
    _run(tmp_path / "fused", raw)
    _run(tmp_path / "kept", raw, keep=True)
    assert not list((tmp_path / "fused" / "stages").glob("0[12]-*/part-*.parquet"))
    from synth.audit.whatif import what_if

    results = {}
    for mode in ("fused", "kept"):
        report = build_report(tmp_path / mode)
        results[mode] = what_if(tmp_path / mode, report, ["toy_drop_digit.digits='0123'"])[0]
    assert results["fused"] == {**results["kept"], "note": results["fused"]["note"]}
    assert results["fused"]["exact"] and (results["fused"]["kept_before"], results["fused"]["kept_after"]) == (20, 12)


def test_a_kill_while_merging_audit_files_then_a_rerun_gives_the_same_files(tmp_path, monkeypatch):
    import shutil

    import synth.core.executor as executor
    from synth.audit import compact

    def merged_but_not_deleted(run, labels, per_reason):
        # what a kill between writing a merged file and deleting the shard files leaves
        for label in labels:
            keep = tmp_path / "aside" / label
            for folder in (run.stage_dir(label), run.root / "rejected" / label):
                if folder.exists():
                    shutil.copytree(folder, keep / folder.parent.name, dirs_exist_ok=True)
            compact.compact_stage(run, label, per_reason)
            for folder in (run.stage_dir(label), run.root / "rejected" / label):
                if (keep / folder.parent.name).exists():
                    shutil.copytree(keep / folder.parent.name, folder, dirs_exist_ok=True)
        raise RuntimeError("killed while merging")

    monkeypatch.setattr(executor, "compact_run", merged_but_not_deleted)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "killed", _raw())
    monkeypatch.undo()
    assert list((tmp_path / "killed").rglob("part-*.profile.json")) and list(
        (tmp_path / "killed").rglob("profiles.json.gz")
    )
    again = _run(tmp_path / "killed", _raw())
    clean = _run(tmp_path / "clean", _raw())
    assert not again.invalidated and _rows(again) == _rows(clean)
    for root in (tmp_path / "killed", tmp_path / "clean"):
        assert not list(root.rglob("part-*.profile.json")) and not list((root / "rejected").glob("*/part-*.parquet"))
    for label in ("00-toy_count", "01-toy_slow", "02-toy_drop_odd", "04-odd_again"):
        a, b = RunDir(tmp_path / "killed"), RunDir(tmp_path / "clean")
        assert compact.read_profiles(a, label) == compact.read_profiles(b, label)
        for name in ("part-00000", "part-00003"):
            sa, sb = compact.read_scores(a, label, name), compact.read_scores(b, label, name)
            assert (sa is None and sb is None) or sa.equals(sb)
    assert reject_samples(tmp_path / "killed", "02-toy_drop_odd") == reject_samples(
        tmp_path / "clean", "02-toy_drop_odd"
    )
