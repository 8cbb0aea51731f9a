import csv
import gzip
import json
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core.ledger import audit
from synth.core.stage import Shard
from synth.filters.heuristic.decontaminate import (
    Decontaminate,
    DecontaminateCut,
    DecontaminateCutOptions,
    DecontaminateOptions,
    index_cache_key,
    tokenize,
)
from synth.filters.heuristic.decontaminate_cli import run_decontaminate


@pytest.fixture(scope="module")
def bench(shared_data):
    b = shared_data / "benchmarks"
    return [str(b / "gsm8k" / "test.jsonl"), str(b / "humaneval" / "HumanEval.jsonl.gz"), str(b / "mmlu" / "test")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dc-cache"))


@pytest.fixture(scope="module")
def stage(bench, cache):
    st = Decontaminate(DecontaminateOptions(benchmarks=bench, cache_dir=cache))
    st.setup()
    return st


@pytest.fixture(scope="module")
def items(shared_data):
    b = shared_data / "benchmarks"
    gsm = [json.loads(line) for line in open(b / "gsm8k" / "test.jsonl")]
    with gzip.open(b / "humaneval" / "HumanEval.jsonl.gz", "rt") as fh:
        he = [json.loads(line) for line in fh]
    with open(b / "mmlu" / "test" / "astronomy_test.csv", newline="") as fh:
        mmlu = list(csv.DictReader(fh))
    long_q = next(r["question"] for r in mmlu if len(tokenize(r["question"])) >= 20)
    short_q = next(r["question"] for r in mmlu if 9 <= len(tokenize(r["question"])) <= 12)
    return {
        "gsm": (gsm[42]["question"], "gsm8k/test", "42"),
        "he": (he[10]["prompt"], "humaneval/HumanEval", "HumanEval/10"),
        "mmlu": (long_q, "mmlu/test", None),
        "mmlu_short": (short_q, "mmlu/test", None),
        "gsm_answer": gsm[42]["answer"],
    }


@pytest.fixture(scope="module")
def passages(shared_data):
    out = []
    for f in sorted((shared_data / "books").glob("pg*.txt")):
        if "latin1" in f.name:
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        out += [text[i : i + 2000] for i in range(0, len(text), 2000)]
    return out


def reformat(text, how):
    if how == "verbatim":
        return text
    if how == "upper":
        return text.upper()
    if how == "punctuation":
        return re.sub(r"[,.?!:;'\"()\[\]]", lambda m: {",": " ;", ".": "!"}.get(m.group(), ""), text)
    if how == "whitespace":
        words = text.split()
        return "".join(w + ("\n" if i % 4 == 3 else "   ") for i, w in enumerate(words))
    raise ValueError(how)


@pytest.mark.parametrize("how", ["verbatim", "upper", "punctuation", "whitespace"])
@pytest.mark.parametrize("which", ["gsm", "he", "mmlu", "mmlu_short"])
def test_planted_items_found(stage, items, passages, which, how):
    text, bench, item = items[which]
    doc = passages[100][:800] + "\n" + reformat(text, how) + "\n" + passages[200][:800]
    hits = stage.match_text(doc)
    assert hits, (which, how)
    assert hits[0]["benchmark"] == bench
    if item:
        assert hits[0]["item"] == item


def test_partial_overlap_of_13_tokens_found(stage, items, passages):
    words = items["gsm"][0].split()
    doc = passages[5][:500] + " " + " ".join(words[3:16]) + " " + passages[6][:500]
    assert stage.match_text(doc)
    assert not stage.match_text(passages[5][:500] + " " + " ".join(words[3:14]) + " " + passages[6][:500])


def test_clean_book_passages_not_flagged(stage, passages):
    flagged = [(i, stage.match_text(p)[0]) for i, p in enumerate(passages) if stage.match_text(p)]
    # Known true overlap: an MMLU question quotes the US Declaration of Independence,
    # which Bierce's Devil's Dictionary also quotes. Anything else is a false positive.
    false_pos = [h for _, h in flagged if "we hold these truths" not in h["ngram"]]
    assert len(passages) > 2000
    assert false_pos == []
    assert len(flagged) <= 2


def test_answer_field_is_not_indexed(stage, items):
    assert not stage.match_text(items["gsm_answer"])


def test_batch_equals_single(stage, items, passages):
    docs = [passages[1], items["gsm"][0], passages[2], items["he"][0], ""]
    batch = stage.match_many(docs)
    assert [bool(b) for b in batch] == [False, True, False, True, False]
    assert batch == [stage.match_text(d) for d in docs]


def test_drop_and_cut_actions(bench, cache, items, passages):
    text, _, _ = items["gsm"]
    before, after = passages[10][:1000], passages[11][:1000]
    table = pa.table({"id": ["clean", "dirty"], "text": [passages[12], before + " " + text + " " + after]})
    drop = Decontaminate(DecontaminateOptions(benchmarks=bench, cache_dir=cache))
    shard = Shard("01-decontaminate", 0, "part-00000", 0)
    out = drop.process(table, shard)
    assert out.column("id").to_pylist() == ["clean"]
    assert shard.dropped == {"contaminated:gsm8k/test": 1}
    match = json.loads(shard.rejects[0].scores["decontam_match"])
    assert match[0]["item"] == "42" and len(match[0]["ngram"].split()) == 13

    cut = DecontaminateCut(DecontaminateCutOptions(benchmarks=bench, cache_dir=cache))
    shard = Shard("01-decontaminate", 0, "part-00000", 0)
    out = cut.process(table, shard)
    assert out.num_rows == 2 and not shard.dropped
    new = out.column("text").to_pylist()[1]
    assert not cut.match_text(new)
    assert new.startswith(before[:700]) and new.endswith(after[-700:])
    assert len(new) < len(table.column("text")[1].as_py()) - len(text)
    assert out.column("text").to_pylist()[0] == passages[12]


def test_action_cut_in_yaml_runs_the_cut_transform_and_scoring_never_rewrites(bench, cache, items, passages, tmp_path):
    from synth.core.config import build_pipeline

    text, _, _ = items["gsm"]
    dirty = passages[10][:500] + " " + text + " " + passages[11][:500]
    table = pa.table({"id": ["clean", "dirty", "only"], "text": [passages[12], dirty, text]})
    spec = {"benchmarks": bench, "cache_dir": cache, "removed_rows_dir": str(tmp_path / "removed")}
    raw = {
        "name": "t",
        "stages": [
            {"type": "tests.core.toy_stages:CountSource"},
            {"type": "decontaminate", "action": "cut", "min_chars_after_cut": 50, **spec},
        ],
    }
    cut = build_pipeline(raw).stages[1].stage
    assert isinstance(cut, DecontaminateCut)
    shard = Shard("01-decontaminate", 0, "part-00000", 0)
    out = cut.process(table, shard)
    assert out.column("id").to_pylist() == ["clean", "dirty"] and shard.dropped == {"contaminated:emptied_by_cut": 1}
    assert not cut.match_text(out.column("text")[1].as_py())
    assert pq.read_table(tmp_path / "removed" / "part-00000.parquet").column("id").to_pylist() == ["only"]
    # the filter's score looks without touching the text; its removed rows go through Filter's writer
    drop = Decontaminate(DecontaminateOptions(**{**spec, "removed_rows_dir": str(tmp_path / "dropped")}))
    scores = drop.score(table, Shard("01-decontaminate", 0, "part-00000", 0))
    assert set(scores) == {"decontam_hits", "decontam_match"}
    out = drop.process(table, Shard("01-decontaminate", 0, "part-00000", 0))
    assert out.column("id").to_pylist() == ["clean"]
    assert pq.read_table(tmp_path / "dropped" / "part-00000.parquet").column("id").to_pylist() == ["dirty", "only"]
    # annotate_only: the transform looks without cutting and counts what it would drop
    look = DecontaminateCut(DecontaminateCutOptions(**spec, annotate_only=True, min_chars_after_cut=10**6))
    shard = Shard("01-decontaminate", 0, "part-00000", 0)
    out = look.process(table, shard)
    assert out.column("text").to_pylist() == table.column("text").to_pylist() and not shard.dropped
    assert shard.counters["would_drop.contaminated:emptied_by_cut"] == 2


def test_cache_keyed_by_content(bench, tmp_path):
    copy = tmp_path / "gsm8k" / "test.jsonl"
    copy.parent.mkdir()
    shutil.copy(bench[0], copy)
    key = index_cache_key([str(copy)], ["question"], 13, 8)
    assert key == index_cache_key([bench[0]], ["question"], 13, 8)
    with open(copy, "a") as fh:
        fh.write(json.dumps({"question": "a brand new question about thirteen or more tokens of text here ok"}) + "\n")
    assert index_cache_key([str(copy)], ["question"], 13, 8) != key


def test_cli_drop_on_jsonl_and_parquet_messages(bench, cache, items, passages, tmp_path):
    rows = [{"text": p} for p in passages[300:340]]
    planted = {3: items["gsm"][0], 17: reformat(items["he"][0], "whitespace"), 29: reformat(items["mmlu"][0], "upper")}
    for i, t in planted.items():
        rows[i]["text"] = rows[i]["text"][:300] + "\n" + t
    src = tmp_path / "in.jsonl"
    with open(src, "w") as fh:
        for r in rows[:20]:
            fh.write(json.dumps(r) + "\n")
        fh.write("{not json\n")
        for r in rows[20:]:
            fh.write(json.dumps(r) + "\n")
    run = tmp_path / "run"
    summary = run_decontaminate([src], bench, run, cache_dir=cache)
    assert summary["rows"] == 40 and summary["removed"] == 3 and summary["kept"] == 37 and summary["unreadable"] == 1
    assert summary["matched"] == {"gsm8k/test": 1, "humaneval/HumanEval": 1, "mmlu/test": 1}
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((run / "output").glob("*.parquet"))])
    assert kept.num_rows == 37
    removed = pq.read_table(run / "rejected" / "01-decontaminate" / "removed" / "part-00000.parquet")
    assert sorted(removed.column("text").to_pylist()) == sorted(rows[i]["text"] for i in planted)
    assert all(json.loads(m)[0]["ngram"] for m in removed.column("decontam_match").to_pylist())
    report = audit(run)
    assert report["complete"] and all(s["balanced"] for s in report["stages"])
    # Same command again: resumes (nothing to do) with the same output.
    again = run_decontaminate([src], bench, run, cache_dir=cache)
    assert again["kept"] == 37

    msgs = [[{"role": "user", "content": r["text"][:200]}, {"role": "assistant", "content": r["text"]}] for r in rows]
    pq.write_table(pa.table({"id": [str(i) for i in range(40)], "messages": msgs}), tmp_path / "m.parquet")
    summary = run_decontaminate(
        [tmp_path / "m.parquet"], bench, tmp_path / "run2", columns=["messages"], cache_dir=cache
    )
    assert summary["removed"] == 3


def test_cli_bad_inputs(bench, tmp_path):
    from synth.core.executor import InputError

    with pytest.raises(InputError, match="does not exist"):
        run_decontaminate([tmp_path / "missing.jsonl"], bench, tmp_path / "run")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="Parquet or JSONL"):
        run_decontaminate([tmp_path / "x.txt"], bench, tmp_path / "run")


def test_jsonl_split_into_byte_ranges_loses_nothing(tmp_path):
    from synth.core.stage import Shard as S
    from synth.ingest.records import ReadRecords, ReadRecordsOptions

    src = tmp_path / "big.jsonl"
    with open(src, "w") as fh:
        for i in range(3000):
            fh.write(json.dumps({"n": i, "text": f"row {i} " + "x" * (i % 97)}) + "\n")
    reader = ReadRecords(ReadRecordsOptions(bytes_per_shard=65536, columns=["text"]))
    specs = reader.list_shards([str(src)])
    assert len(specs) > 2
    seen = [n for spec in specs for n in reader.read(spec, S("00-read", 0, "p", 0)).column("n").to_pylist()]
    assert sorted(seen) == list(range(3000))


def test_typer_command(bench, cache, items, passages, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from synth.filters.heuristic.decontaminate_cli import decontaminate

    monkeypatch.setenv("XDG_CACHE_HOME", cache)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": passages[1]}) + "\n" + json.dumps({"text": items["gsm"][0]}) + "\n")
    app = typer.Typer()
    app.command()(decontaminate)
    res = CliRunner().invoke(
        app, [str(src), "--benchmark", bench[0], "--output", str(tmp_path / "run"), "--workers", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "gsm8k/test: 1 rows matched" in res.output and "2 rows checked, 1 kept, 1 removed" in res.output
    res = CliRunner().invoke(
        app, [str(tmp_path / "nope.jsonl"), "--benchmark", bench[0], "--output", str(tmp_path / "run3")]
    )
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output


def test_vectorised_token_hashes_equal_regex_path(passages):
    import numpy as np

    from synth.filters.heuristic.decontaminate import TokenHasher

    texts = passages[:300] + [
        "",
        " ",
        "naïve café — “quoted” ’tis",
        "\ufeffBOM\xa0nbsp",
        "İstanbul DİL",
        "日本語 です",
        "emoji 😀 𝔘𝔫𝔦",
        "snake_case x2",
    ]
    many = TokenHasher().many(texts)
    assert len(many) == len(texts)
    for text, hashes in zip(texts, many):
        assert np.array_equal(hashes, TokenHasher()(tokenize(text))), text[:40]


def test_benchmark_files_are_hashed_once_per_process_while_unchanged(bench, tmp_path, monkeypatch):
    # A stage asks for the key twice (its fingerprint, then its setup); the files are read once.
    import synth.filters.heuristic.decontaminate as decontaminate

    copy = tmp_path / "test.jsonl"
    shutil.copy(bench[0], copy)
    reads = []
    content_key = decontaminate._content_key
    monkeypatch.setattr(decontaminate, "_content_key", lambda *a: reads.append(1) or content_key(*a))
    first = index_cache_key([str(copy)], ["question"], 13, 8)
    assert index_cache_key([str(copy)], ["question"], 13, 8) == first and len(reads) == 1
    with open(copy, "a") as fh:
        fh.write(json.dumps({"question": "one more question of thirteen or more tokens to change the file"}) + "\n")
    assert index_cache_key([str(copy)], ["question"], 13, 8) != first and len(reads) == 2
