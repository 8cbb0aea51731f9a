"""The sketches behind every histogram: mergeable, within 1% relative error, flat in memory."""

import numpy as np
import pyarrow as pa

from synth.audit import stats


def test_merged_shard_sketches_equal_one_sketch_and_quantiles_are_within_one_percent():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(2, 1.5, 50_000), rng.uniform(-5, 5, 10_000), np.zeros(100)])
    shards = np.array_split(values, 7)
    merged = stats.merge_sketches(stats.sketch(pa.array(s)) for s in shards)
    whole = stats.sketch(pa.array(values))
    assert merged["buckets"] == whole["buckets"] and abs(merged["sum"] - whole["sum"]) < 1e-6 * abs(whole["sum"])
    assert merged["count"] == len(values) and merged["min"] == values.min() and merged["max"] == values.max()
    q = stats.quantiles(merged, (0.1, 0.5, 0.9, 0.99))
    for name, p in (("p10", 10), ("p50", 50), ("p90", 90), ("p99", 99)):
        exact = np.percentile(values, p)
        assert abs(q[name] - exact) <= 0.011 * abs(exact) + 1e-6, (name, q[name], exact)
    # memory is bounded by the value range, not the record count
    assert len(merged["buckets"]) < 3000


def test_nulls_nans_booleans_and_text_are_handled():
    s = stats.sketch(pa.array([1.0, None, float("nan"), 3.0]))
    assert s["count"] == 2 and s["nulls"] == 2
    assert stats.sketch(pa.array([True, False, True]))["sum"] == 2
    assert stats.sketch(pa.array(["a", "b"])) is None
    assert stats.summary(stats.sketch(pa.array([], pa.float64())))["count"] == 0


def test_profile_counts_languages_with_tokens_when_known_else_words():
    table = pa.table({"text": ["a b c", "d e", "f"], "language": ["en", "fr", "en"]})
    p = stats.profile_table(table, ["language"])
    assert p["unit"] == "words"
    assert p["categorical"]["language"] == {"en": [2, 4], "fr": [1, 2]}
    assert p["lengths"]["text"]["chars"]["sum"] == 9
    with_tokens = table.append_column("completion_tokens", pa.array([10, 20, 30]))
    p = stats.profile_table(with_tokens, [])
    assert p["unit"] == "tokens" and p["categorical"]["language"] == {"en": [2, 40], "fr": [1, 20]}
    merged = stats.merge_profiles([p, p])
    assert merged["categorical"]["language"]["en"] == [4, 80] and merged["rows"] == 6


def test_word_counts_match_python_split_on_ascii_whitespace():
    import random

    rng = random.Random(1)
    texts = ["".join(rng.choice("ab \n\t") for _ in range(rng.randint(0, 12))) for _ in range(3000)] + ["", ""]
    arr = pa.array(texts)
    assert stats._word_counts(arr).to_pylist() == [len(t.split()) for t in texts]
    assert stats._word_counts(arr.slice(7)).to_pylist() == [len(t.split()) for t in texts[7:]]
    assert stats._word_counts(pa.array(["a b", None, "é ü"], pa.large_string())).to_pylist() == [2, 0, 2]


def test_a_stage_that_drops_on_its_own_score_has_it_summarised_over_every_record(tmp_path):
    """An LLM critique is not a `Filter`: its grade is kept on kept rows and in the
    drop's scores; the audit summarises both."""
    from synth.audit.collect import profile_path, write_shard_statistics
    from synth.core.rundir import RunDir, read_json
    from synth.core.stage import Shard

    run = RunDir(tmp_path)
    shard = Shard("01-critique", 0, "part-00000", 0)
    for i, grade in enumerate([1, 2, 2]):
        shard.drop(
            {"id": str(i), "text": "t"},
            "critique_below_min_grade",
            {"critique_grade": grade, "critique_rationale": "meh"},
        )
    kept = pa.table({"id": ["3", "4"], "text": ["a", "b"], "critique_grade": pa.array([4, 5], pa.int64())})
    write_shard_statistics(run, "01-critique", shard, kept, ["critique_grade", "critique_rationale"])
    profile = read_json(profile_path(run, "01-critique", "part-00000"))
    seen = profile["seen"]["critique_grade"]
    assert seen["count"] == 5 and seen["min"] == 1 and seen["max"] == 5 and seen["sum"] == 14
    assert set(profile["categorical"]["critique_grade"]) == {"4", "5"}  # the kept records' grades


def test_a_statistics_failure_is_counted_never_fatal(tmp_path, monkeypatch):
    from synth.audit import collect
    from synth.core.rundir import RunDir
    from synth.core.stage import Shard

    def broken(*args, **kwargs):
        raise ValueError("bug")

    monkeypatch.setattr(collect.stats, "profile_table", broken)
    shard = Shard("01-x", 0, "part-00000", 0)
    collect.write_shard_statistics(RunDir(tmp_path), "01-x", shard, pa.table({"text": ["a"]}), [])
    assert shard.counters["audit.statistics_failed"] == 1 and shard.counters["audit.statistics_failed.ValueError"] == 1


def test_integer_columns_have_exact_small_values_and_whole_number_bins():
    values = pa.array([1, 2, 2, 3, 10, 10, 10, 30], pa.int32())
    s = stats.merge_sketches([stats.sketch(values.slice(0, 4)), stats.sketch(values.slice(4))])
    assert s["integer"]
    q = stats.quantiles(s, (0.1, 0.5, 0.9))
    assert [q["p10"], q["p50"], q["p90"]] == np.percentile(values.to_numpy(), [10, 50, 90], method="nearest").tolist()
    h = stats.histogram(s)
    assert all(abs((b - a) - (h["edges"][1] - h["edges"][0])) < 1e-9 for a, b in zip(h["edges"], h["edges"][1:]))
    assert h["edges"][0] == 0.5 and sum(h["counts"]) == 8
    assert h["edges"][1] == 1.5 and h["counts"][9] == 3  # unit bins: [9.5, 10.5) holds the three 10s
