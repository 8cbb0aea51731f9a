import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core.config import ConfigError, build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit, reject_samples
from synth.core.records import content_id
from synth.dedup.evaluate import book_passages, shingle_sets, true_duplicate_pairs
from synth.dedup.report import dedup_report
from synth.dedup.signatures import MinHasher
from synth.dedup.text import extract_texts

SRC = "tests.dedup.sources:InlineRows"


def _run(tmp_path, shards, dedup, workers=1, name="run"):
    raw = {"name": "dedup", "seed": 3, "stages": [{"type": SRC, "shards": shards}, *dedup]}
    pipe = build_pipeline(raw)
    result = run_pipeline(
        pipe, PipelineSource(raw=raw, path=None, seed=pipe.seed), tmp_path / name, executor=LocalExecutor(workers)
    )
    rows = [r for p in result.output for r in pq.read_table(p).to_pylist()]
    return rows, audit(tmp_path / name)


def _id(shard, n):
    return content_id("inline", shard, n)


@pytest.fixture(scope="module")
def passages(shared_data):
    books = sorted(p for p in (shared_data / "books").glob("pg*.txt") if "_nl" not in p.name and "_fr" not in p.name)
    found = book_passages(books[:2], random.Random(5), min_words=70, max_words=90)
    return found[10:50]  # 40 distinct passages


def _near_copy(text, seed):
    words = text.split()
    rng = random.Random(seed)
    words[rng.randrange(len(words))] = "zebra"  # one substitution: Jaccard ~0.9 on 5-grams
    return " ".join(words)


def test_exact_keeps_first_across_shards_and_counts(tmp_path):
    shards = [
        [{"text": "Hello, World!"}, {"text": "unique one"}],
        [],  # an empty shard in the middle
        [{"text": "hello   world"}, {"text": "ＨＥＬＬＯ world."}, {"text": "unique two"}, {"text": None}],
        [],  # and one at the end
    ]
    rows, report = _run(tmp_path, shards, [{"type": "dedup_exact"}])
    assert [r["id"] for r in rows] == [_id(0, 0), _id(0, 1), _id(2, 2), _id(2, 3)]
    stage = report["stages"][1]
    assert stage["dropped"] == {"exact_duplicate": 2} and stage["in"] == 6 and stage["out"] == 4
    assert stage["counters"] == {"kept_without_text": 1}
    samples = reject_samples(tmp_path / "run", stage["stage"])["exact_duplicate"]
    assert {s["scores"]["kept_id"] for s in samples} == {_id(0, 0)}


def test_exact_without_normalisation_keeps_variants(tmp_path):
    shards = [[{"text": "Hello, World!"}], [{"text": "hello world"}, {"text": "Hello, World!"}]]
    rows, report = _run(tmp_path, shards, [{"type": "dedup_exact", "lowercase": False, "strip_punctuation": False}])
    assert [r["id"] for r in rows] == [_id(0, 0), _id(1, 0)]


def test_exact_on_a_field_inside_json_messages(tmp_path):
    def conv(user, assistant):
        return {
            "messages": json.dumps([{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])
        }

    shards = [
        [conv("What is 2+2?", "4"), conv("Name a colour", "red")],
        [conv("WHAT is   2+2", "Four."), conv("Another", "red")],
    ]
    rows, _ = _run(tmp_path, shards, [{"type": "dedup_exact", "column": "messages", "field": "[role=user].content"}])
    assert {r["id"] for r in rows} == {_id(0, 0), _id(0, 1), _id(1, 1)}
    rows, _ = _run(
        tmp_path, shards, [{"type": "dedup_exact", "column": "messages", "field": "-1.content"}], name="run2"
    )
    assert {r["id"] for r in rows} == {_id(0, 0), _id(0, 1), _id(1, 0)}


def test_exact_on_several_columns_together(tmp_path):
    shards = [
        [{"text": "q1", "messages": "a1"}, {"text": "q1", "messages": "a2"}],
        [{"text": "Q1!", "messages": "a1"}, {"text": None, "messages": None}],
    ]
    rows, report = _run(tmp_path, shards, [{"type": "dedup_exact", "column": ["text", "messages"]}])
    assert [r["id"] for r in rows] == [_id(0, 0), _id(0, 1), _id(1, 1)]
    assert report["stages"][1]["dropped"] == {"exact_duplicate": 1}


def test_field_paths_on_arrow_values():
    table = pa.table({"m": [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], None]})
    assert extract_texts(table, "m", "*.content").to_pylist() == ["a\nb", None]
    assert extract_texts(table, "m", "[role=assistant].content").to_pylist() == ["b", None]


def test_bad_field_path_is_a_config_error():
    raw = {"name": "x", "stages": [{"type": SRC, "shards": [[]]}, {"type": "dedup_exact", "field": "a[b"}]}
    with pytest.raises(ConfigError, match="field"):
        build_pipeline(raw)


@pytest.mark.parametrize(
    "options",
    [{}, {"verify_sketch": 0}, {"engine": "datasketch"}, {"engine": "rensa"}],
    ids=["default", "verify-on-signatures", "datasketch", "rensa"],
)
def test_minhash_finds_planted_copies_across_shards(tmp_path, passages, options):
    if options.get("engine") == "rensa":
        pytest.importorskip("rensa")
    originals = [{"text": t} for t in passages]
    copies = [{"text": _near_copy(passages[i], i)} for i in range(5)]
    shards = [originals[:20], [], originals[20:] + copies]
    rows, report = _run(tmp_path, shards, [{"type": "dedup_minhash", **options}])
    kept = {r["id"] for r in rows}
    assert kept == {_id(0, i) for i in range(20)} | {_id(2, i) for i in range(20)}
    stage = report["stages"][1]
    assert stage["dropped"] == {"near_duplicate": 5}
    samples = reject_samples(tmp_path / "run", stage["stage"])["near_duplicate"]
    assert {s["scores"]["kept_id"] for s in samples} == {_id(0, i) for i in range(5)}
    assert all(0.8 <= s["scores"]["similarity"] <= 1.0 for s in samples)


def test_minhash_same_result_for_reruns_and_worker_counts(tmp_path, passages):
    originals = [{"text": t} for t in passages]
    copies = [{"text": _near_copy(passages[i], 100 + i)} for i in range(0, 40, 4)]
    shards = [originals[:13] + copies[:5], originals[13:26], [], originals[26:] + copies[5:]]
    dedup = [{"type": "dedup_exact"}, {"type": "dedup_minhash"}]
    one, rep1 = _run(tmp_path, shards, dedup, workers=1, name="w1")
    two, rep2 = _run(tmp_path, shards, dedup, workers=2, name="w2")
    again, rep3 = _run(tmp_path, shards, dedup, workers=1, name="w1")  # rerun in place: nothing left to do
    assert [r["id"] for r in one] == [r["id"] for r in two] == [r["id"] for r in again]
    counts = [[(s["stage"], s["in"], s["out"], s["dropped"]) for s in r["stages"]] for r in (rep1, rep2, rep3)]
    assert counts[0] == counts[1] == counts[2]
    plans = [
        [
            pq.read_table(p).to_pylist()
            for p in sorted((tmp_path / run / "stages" / "02-dedup_minhash" / "_state" / "drops").glob("*.parquet"))
        ]
        for run in ("w1", "w2")
    ]
    assert plans[0] == plans[1] and len(plans[0]) == 3  # the copy of passage 16 precedes its original
    report = dedup_report(tmp_path / "w1")
    near = report["stages"][1]
    assert near["stage"] == "02-dedup_minhash" and near["dropped"] == 10 and near["cluster_sizes"] == {"2": 10}
    assert sum(near["similarity_to_kept"].values()) == 10 and near["similarity_to_kept"]["<0.8"] == 0
    assert rep1["stages"][2]["dropped"] == {"near_duplicate": 10}


def test_clearly_different_passages_are_all_kept(tmp_path, passages):
    rows, report = _run(
        tmp_path,
        [[{"text": t} for t in passages[:20]], [{"text": t} for t in passages[20:]]],
        [{"type": "dedup_minhash"}],
    )
    assert len(rows) == 40 and report["stages"][1]["dropped"] == {}


def test_all_shards_empty(tmp_path):
    rows, report = _run(tmp_path, [[], []], [{"type": "dedup_exact"}, {"type": "dedup_minhash"}])
    assert rows == [] and [s["out"] for s in report["stages"]] == [0, 0, 0]


def test_signature_similarity_tracks_exact_jaccard(passages):
    """Estimated Jaccard is unbiased: mean error over many pairs stays small."""
    texts = passages[:10] + [_near_copy(t, i) for i, t in enumerate(passages[:10])]
    sig, _, _ = MinHasher()(pa.array(texts))
    sets = shingle_sets(texts)
    errors = []
    for i in range(10):
        a, b = sets[i], sets[i + 10]
        exact = len(a & b) / len(a | b)
        errors.append((sig[i] == sig[i + 10]).mean() - exact)
    assert abs(sum(errors) / len(errors)) < 0.05


def test_ground_truth_join_matches_brute_force(passages):
    texts = passages[:15] + [_near_copy(t, i) for i, t in enumerate(passages[:5])] + [passages[0]]
    sets = shingle_sets(texts)
    brute = {}
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            if jac >= 0.8:
                brute[(i, j)] = jac
    assert true_duplicate_pairs(sets, 0.8).keys() == brute.keys() and len(brute) >= 6


def test_report_command(tmp_path):
    typer = pytest.importorskip("typer")
    from typer.testing import CliRunner

    from synth.dedup.report import register

    shards = [[{"text": "same words here"}], [{"text": "Same words, here."}]]
    _run(tmp_path, shards, [{"type": "dedup_exact"}])
    app = typer.Typer()
    app.command("noop")(lambda: None)  # typer needs a second command to keep sub-apps named
    register(app)
    result = CliRunner().invoke(app, ["dedup", "report", str(tmp_path / "run"), "--json"])
    assert result.exit_code == 0, result.output
    stage = json.loads(result.output)["stages"][0]
    assert stage["stage"] == "01-dedup_exact" and stage["dropped"] == 1
    assert stage["most_copied"] == [{"kept_id": _id(0, 0), "copies": 1}]
    bad = CliRunner().invoke(app, ["dedup", "report", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "not a run directory" in bad.output


def test_documents_larger_than_a_block_get_the_same_signature(monkeypatch, passages):
    import numpy as np

    import synth.dedup.signatures as sig_mod

    texts = pa.array([" ".join(passages), passages[0], None, "two words"])
    shingles = sig_mod.Shingler()(texts)
    perm = sig_mod.Permutations(112)
    whole = perm.signatures(shingles)
    monkeypatch.setattr(sig_mod, "_SHINGLE_CHUNK", 64)  # the long text now spans many blocks
    assert shingles.counts[0] > 64 * 10
    assert np.array_equal(perm.signatures(shingles), whole)
    assert (whole[2] == sig_mod.EMPTY).all() and (whole[3] != sig_mod.EMPTY).all()
