import pyarrow.parquet as pq
import pytest

from synth.core.config import ConfigError, build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, StageFailed, run_pipeline
from synth.core.ledger import audit

T = "tests.core.toy_stages"


def _raw(**slow):
    return {
        "name": "toy",
        "seed": 1,
        "stages": [
            {"type": f"{T}:CountSource", "per_shard": 10, "shards": 3},
            {"type": f"{T}:Slow", **slow},
            {"type": f"{T}:DropOdd"},
            {"type": f"{T}:DedupText"},
        ],
    }


def _run(tmp_path, raw, workers=1):
    pipe = build_pipeline(raw)
    src = PipelineSource(raw=raw, path=None, seed=pipe.seed)
    return run_pipeline(pipe, src, tmp_path / "run", executor=LocalExecutor(workers), keep_intermediate=False)


def test_runs_and_ledger_balances(tmp_path):
    result = _run(tmp_path, _raw())
    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    assert sorted(r["text"] for r in rows) == sorted({f"record {n % 7}" for n in range(0, 30, 2)})
    report = audit(tmp_path / "run")
    by = {s["stage"]: s for s in report["stages"]}
    assert by["02-toy_drop_odd"]["dropped"] == {"odd": 15}
    assert by["03-toy_dedup_text"]["dropped"] == {"duplicate_text": 8}
    assert by["03-toy_dedup_text"]["counters"] == {"summarized_rows": 15}
    for s in report["stages"][1:]:
        assert s["in"] == s["out"] + sum(s["dropped"].values())
    assert report["complete"]


def test_unknown_field_names_file_and_allowed():
    raw = _raw()
    raw["stages"][2]["modulos"] = 3
    with pytest.raises(ConfigError) as err:
        build_pipeline(raw)
    assert "modulos" in str(err.value) and "allowed fields" in str(err.value) and "modulus" in str(err.value)


def test_failed_shard_keeps_others_and_resume_completes(tmp_path, monkeypatch):
    raw = _raw(crash_on=15)
    with pytest.raises(StageFailed, match="1 of 3 shards failed"):
        _run(tmp_path, raw)
    # stages 0-2 are fused: the group commits in its last stage's folder
    done = sorted(p.name for p in (tmp_path / "run" / "stages" / "02-toy_drop_odd").glob("part-*.parquet"))
    assert done == ["part-00000.parquet", "part-00002.parquet"]
    monkeypatch.setenv("TOY_NO_CRASH", "1")
    resumed = _run(tmp_path, raw)
    clean = _run(tmp_path / "clean", _raw())
    ids = lambda r: [i for p in r.output for i in pq.read_table(p).column("id").to_pylist()]  # noqa: E731
    assert ids(resumed) == ids(clean) and ids(clean)


def test_sample_stage_is_deterministic_and_bounded(tmp_path):
    raw = {
        "name": "s",
        "seed": 5,
        "stages": [
            {"type": f"{T}:CountSource", "per_shard": 40, "shards": 2},
            {"type": "sample", "fraction": 0.5, "max_per_shard": 7},
        ],
    }
    first = [r["id"] for p in _run(tmp_path / "a", raw).output for r in pq.read_table(p).to_pylist()]
    again = [r["id"] for p in _run(tmp_path / "b", raw).output for r in pq.read_table(p).to_pylist()]
    assert first == again and len(first) == 14
    assert audit(tmp_path / "a" / "run")["stages"][1]["dropped"] == {"sampled_out": 66}


def test_output_loads_in_datasets_and_skips_empty_shards(tmp_path):
    from datasets import load_dataset

    raw = {
        "name": "e",
        "stages": [
            {"type": f"{T}:CountSource", "per_shard": 4, "shards": 3},
            {"type": "sample", "fraction": 0.999, "max_per_shard": 1},
        ],
    }
    # shard 1 empties completely: every record there is dropped
    raw["stages"].insert(1, {"type": f"{T}:DropOdd", "modulus": 100})
    result = _run(tmp_path, raw)
    names = sorted(p.name for p in result.output)
    assert names == ["part-00000.parquet"]  # records 4..11 are all "odd" modulo 100 except 0
    ds = load_dataset("parquet", data_files=str(tmp_path / "run" / "output" / "*.parquet"), split="train")
    assert ds.num_rows == 1 and set(ds.column_names) >= {"id", "n", "text"}
