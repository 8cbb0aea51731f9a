"""`synth pack`: native output, packing.parquet accounting, mix by tokens, bad input."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.loader import PackedData
from synth.pack.packer import WindowPacker
from synth.pack.run import PackOptions, pack
from tests.pack.helpers import chat, default_tokenizer_dir, text, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def tok_dir():
    return default_tokenizer_dir()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    web = write_jsonl(d / "web.jsonl", [text(i, 20 + 13 * (i % 11)) for i in range(60)] + [text(1000, 700)])
    chats = write_jsonl(d / "chats.jsonl", [chat(i) for i in range(40)])
    return d, web, chats


def run_cli(*args):
    res = runner.invoke(app, ["pack", *map(str, args)])
    return res.exit_code, res.output


def test_native_pack_round_trips_every_record(corpus, tok_dir, tmp_path):
    from transformers import AutoTokenizer

    d, web, chats = corpus
    out = tmp_path / "out"
    code, output = run_cli(web, chats, "--tokenizer", tok_dir, "--seq-len", 256, "--output", out, "--window", 16)
    assert code == 0, output
    m = json.loads((out / "manifest.json").read_text())
    assert m["dtype"] == "uint16" and m["tokenizer"]["vocab_size"] == 49152
    data = PackedData(out)
    packing = pq.read_table(out / "packing.parquet").to_pylist()
    placed = [r for r in packing if r["status"] in ("packed", "split")]
    assert {r["record_id"] for r in packing} == {f"text-{i}" for i in [*range(60), 1000]} | {
        f"chat-{i}" for i in range(40)
    }
    # the 700-word text is longer than a sequence: split, nothing truncated
    pieces = sorted((r for r in placed if r["record_id"] == "text-1000"), key=lambda r: r["piece"])
    assert len(pieces) > 1 and all(r["status"] == "split" for r in pieces)
    assert sum(r["tokens"] for r in pieces) == pieces[0]["record_tokens"]
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    source = {r["id"]: r for r in [json.loads(x) for x in open(web)] + [json.loads(x) for x in open(chats)]}
    by_record = {}
    for r in sorted(placed, key=lambda r: (r["record_id"], r["piece"])):
        by_record.setdefault(r["record_id"], []).append(
            np.asarray(data.tokens[r["sequence"], r["offset"] : r["offset"] + r["tokens"]])
        )
    for rid, parts in by_record.items():
        ids = np.concatenate(parts)
        assert ids[-1] == m["tokenizer"]["eod_id"]
        if rid.startswith("text"):
            assert tok.decode(ids[:-1].tolist()) == source[rid]["text"]
        else:
            assert source[rid]["messages"][-1]["content"] in tok.decode(ids.tolist())
    # documents never overlap, never cross a sequence, and padding is never trained on
    for s in range(len(data)):
        docs = data.docs_of(s)
        ends = docs[:, 1] + docs[:, 2]
        assert (docs[1:, 1] == ends[:-1]).all() and docs[0, 1] == 0 and ends[-1] <= data.seq_len
        assert not data.mask[s, ends[-1] :].any()
    assert m["documents"] == len(placed) == len(data.documents)
    assert m["tokens"]["documents"] == sum(r["tokens"] for r in placed)
    assert 0.9 < m["fill_efficiency"] <= 1.0
    assert "fill" in output and "tokens by domain: general" in " ".join(output.split())


@pytest.mark.parametrize("mix_by", [None, "domain", "kind"])
def test_manifest_token_counts_equal_what_the_files_hold(corpus, tok_dir, tmp_path, mix_by):
    """Tokens written per source, domain and kind, and tokens trained on per mix group,
    as the manifest states them, recounted from documents.bin and loss_mask.bin."""
    d, web, chats = corpus
    mix = None
    if mix_by:
        values = {"domain": ["math", "general"], "kind": ["instruction", "passage"]}[mix_by]
        mix = tmp_path / "mix.yaml"
        mix.write_text(f"by: {mix_by}\nweights: {{{values[0]}: 1.5, {values[1]}: 0.75}}\n")
    out = tmp_path / "out"
    res = pack(PackOptions([str(web), str(chats)], str(tok_dir), 256, str(out), window=16, mix=mix and str(mix)))
    m, data = res.manifest, PackedData(out)
    docs = np.asarray(data.documents)
    trained = np.array([int(data.mask[s, o : o + n].sum()) for s, o, n in docs[:, :3]])
    recount = {key: {} for key in ("source", "domain", "kind")}
    trained_by = {}
    for row, t in zip(docs, trained):
        for col, key in enumerate(("source", "domain", "kind"), start=3):
            name = m["vocab"][key][row[col]]
            recount[key][name] = recount[key].get(name, 0) + int(row[2])
            if key == (mix_by or "source"):
                trained_by[name] = trained_by.get(name, 0) + int(t)
    assert m["tokens_written"] == recount
    assert {g: n for g, n in m["mix"]["trained_tokens"].items() if n} == trained_by
    assert m["mix"]["actual_tokens"] == recount[mix_by or "source"]
    assert len(recount["kind"]) == 2 and sum(trained_by.values()) > 0


def test_packer_is_best_fit_and_bounded():
    p = WindowPacker(10, window=4, carry=1)
    bins = []
    for i, n in enumerate([7, 3, 6, 4, 5, 5, 2, 8]):
        bins += list(p.add(n, (i, n)))
    # first window of 4: 7+3 and 6+4 fill exactly; nothing open is carried (no room left)
    assert [sorted(d[1] for d in b.docs) for b in bins[:2]] == [[3, 7], [4, 6]]
    assert len(p._open) <= 1 and len(p._pending) == 0
    bins += list(p.finish())
    assert sorted(n for b in bins for _, n in b.docs) == sorted([7, 3, 6, 4, 5, 5, 2, 8])
    assert all(sum(n for _, n in b.docs) <= 10 for b in bins)


def test_long_documents_can_be_dropped_and_are_accounted(corpus, tok_dir, tmp_path):
    d, web, _ = corpus
    res = pack(PackOptions([str(web)], str(tok_dir), 1024, str(tmp_path / "o"), long_docs="drop"))
    rows = pq.read_table(tmp_path / "o" / "packing.parquet").to_pylist()
    [dropped] = [r for r in rows if r["status"] == "dropped"]
    assert dropped["record_id"] == "text-1000" and "longer_than_seq_len" in dropped["reason"]
    assert res.manifest["counts"]["dropped"] == 1


def test_mix_by_tokens_reaches_the_weights(corpus, tok_dir, tmp_path):
    d, web, chats = corpus
    mix = tmp_path / "mix.yaml"
    mix.write_text("by: source\nweights: {web: 0.3, chats: 0.7}\nbudget_tokens: 8000\nmax_repeats: 4\n")
    code, output = run_cli(
        web, chats, "--tokenizer", tok_dir, "--seq-len", 256, "--output", tmp_path / "o", "--mix", mix, "--seed", 3
    )
    assert code == 0, output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())["mix"]
    assert m["target_share"] == {"chats": 0.7, "web": 0.3}
    assert abs(m["actual_share"]["chats"] - 0.7) < 0.05 and m["distance"] < 0.05
    assert abs(sum(m["actual_tokens"].values()) - 8000) < 800
    rows = pq.read_table(tmp_path / "o" / "packing.parquet").to_pylist()
    assert any(r["copy"] and r["copy"] > 0 for r in rows if r["source"] == "chats")  # chats are up-sampled: repeats
    assert any(r["status"] == "not_sampled" for r in rows if r["source"] == "web")  # web is down-sampled
    assert "mix distance" in output


def test_mix_by_domain(corpus, tok_dir, tmp_path):
    d, web, chats = corpus
    mix = tmp_path / "mix.yaml"
    mix.write_text("by: domain\nweights: {math: 1, general: 1}\n")
    res = pack(PackOptions([str(web), str(chats)], str(tok_dir), 256, str(tmp_path / "o"), mix=str(mix)))
    a = res.manifest["mix"]["actual_share"]
    assert abs(a["math"] - 0.5) < 0.05  # without a budget: the largest mix that repeats nothing
    assert res.manifest["counts"]["repeats"] == 0


@pytest.mark.parametrize(
    "mix_text, message",
    [
        ("weights: {web: 1, nowhere: 1}\n", "'nowhere', which is not in the inputs"),
        ("weights: {web: 1}\nbudget_tokens: 100000000\n", "lower the budget or raise max_repeats"),
        ("weights: {web: 1}\nbugdet: 3\n", "field bugdet"),
    ],
)
def test_bad_mix_is_one_line_error(corpus, tok_dir, tmp_path, mix_text, message):
    d, web, chats = corpus
    mix = tmp_path / "mix.yaml"
    mix.write_text(mix_text)
    code, output = run_cli(
        web, chats, "--tokenizer", tok_dir, "--seq-len", 64, "--output", tmp_path / "o", "--mix", mix
    )
    assert code == 1 and message in " ".join(output.split()) and "Traceback" not in output
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_bad_tokenizer_paths_are_one_line_errors(corpus, tmp_path):
    d, web, _ = corpus
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "tokenizer.json").write_text("{not a tokenizer")
    for path, message in [
        (tmp_path / "missing", "no such folder"),
        (tmp_path / "empty", "not a tokenizer folder"),
        (tmp_path / "junk", "cannot load a tokenizer"),
    ]:
        code, output = run_cli(web, "--tokenizer", path, "--seq-len", 64, "--output", tmp_path / "o")
        assert code == 1 and message in " ".join(output.split()) and "Traceback" not in output, output


def test_bad_records_are_counted_skips_with_ids(tok_dir, tmp_path):
    src = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            chat(1),
            {"id": "neither", "domain": "x"},
            {"id": "role", "messages": [{"role": "wizard", "content": "hi"}]},
            {
                "id": "args",
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    },
                ],
            },
            "this line is not json",
        ],
    )
    code, output = run_cli(src, "--tokenizer", tok_dir, "--seq-len", 128, "--output", tmp_path / "o")
    assert code == 0, output
    rows = {r["record_id"]: r for r in pq.read_table(tmp_path / "o" / "packing.parquet").to_pylist()}
    assert rows["neither"]["reason"] == "no_messages_or_text"
    assert rows["role"]["reason"] == "unknown_role"
    assert rows["args"]["reason"] == "tool_arguments_not_json"
    assert rows["mixed.jsonl#4"]["reason"] == "bad_json_line"
    assert rows["chat-1"]["status"] == "packed"
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["counts"]["skipped"] == {
        "bad_json_line": 1,
        "no_messages_or_text": 1,
        "tool_arguments_not_json": 1,
        "unknown_role": 1,
    }
    assert "skipped unknown_role: 1" in output


def test_missing_input_is_one_line_error(tok_dir, tmp_path):
    code, output = run_cli(tmp_path / "nope.jsonl", "--tokenizer", tok_dir, "--seq-len", 64, "--output", tmp_path / "o")
    assert code == 1 and "no such file" in output and "Traceback" not in output


def test_rerun_is_a_no_op_and_changed_options_repack(corpus, tok_dir, tmp_path):
    d, web, _ = corpus
    opts = PackOptions([str(web)], str(tok_dir), 256, str(tmp_path / "o"))
    first = pack(opts)
    again = pack(opts)
    assert again.resumed and again.manifest == first.manifest
    opts.seq_len = 128
    third = pack(opts)
    assert not third.resumed and third.manifest["seq_len"] == 128
    assert PackedData(tmp_path / "o").tokens.shape[1] == 128


def test_parallel_workers_write_the_same_bytes(corpus, tok_dir, tmp_path):
    from tests.pack.test_resume import tree_digest

    d, web, chats = corpus
    one = pack(PackOptions([str(web), str(chats)], str(tok_dir), 256, str(tmp_path / "one"), workers=1))
    two = pack(PackOptions([str(web), str(chats)], str(tok_dir), 256, str(tmp_path / "two"), workers=2))
    assert one.manifest["files"] == two.manifest["files"]
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_a_rewritten_input_is_tokenised_again(tok_dir, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [text(1, 10)])
    opts = PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "o"))
    first = pack(opts)
    write_jsonl(src, [text(1, 10), text(2, 10)])
    messages = []
    second = pack(opts, say=messages.append)
    assert first.manifest["documents"] == 1 and second.manifest["documents"] == 2
    assert any("tokenising again" in m for m in messages)


def test_a_new_mix_reuses_the_tokenised_shards_and_equals_a_fresh_pack(corpus, tok_dir, tmp_path, monkeypatch):
    import synth.pack.run as run
    from synth.pack import tokenize
    from tests.pack.test_resume import tree_digest

    d, web, chats = corpus
    mix_a, mix_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    mix_a.write_text("weights: {web: 0.5, chats: 0.5}\n")
    mix_b.write_text("weights: {web: 0.9, chats: 0.1}\n")
    inputs = [str(web), str(chats)]
    pack(PackOptions(inputs, str(tok_dir), 256, str(tmp_path / "o"), mix=str(mix_a)))
    tokenised = []

    def counting(tasks, *args):
        tokenised.extend(t.path for t in tasks if not Path(t.target).exists())
        return tokenize.tokenize_files(tasks, *args)

    monkeypatch.setattr(run, "tokenize_files", counting)
    said = []
    remixed = pack(PackOptions(inputs, str(tok_dir), 256, str(tmp_path / "o"), mix=str(mix_b)), say=said.append)
    assert tokenised == [] and any("2 of 2 input files already tokenised" in m for m in said)
    assert remixed.manifest["mix"]["weights"] == {"web": 0.9, "chats": 0.1}
    fresh = pack(PackOptions(inputs, str(tok_dir), 256, str(tmp_path / "fresh"), mix=str(mix_b)))
    assert len(tokenised) == 2  # a new output folder tokenises
    assert remixed.manifest["files"] == fresh.manifest["files"]
    assert tree_digest(tmp_path / "o") == tree_digest(tmp_path / "fresh")


def test_timestamp_like_ids_and_texts_stay_strings(tok_dir, tmp_path):
    # Arrow's JSON reader, left to infer types, reads a column of ISO timestamps as
    # timestamps: the ids changed and every text became a skip.
    src = write_jsonl(
        tmp_path / "dates.jsonl",
        [{"id": f"2024-01-0{i}T10:00:00", "text": f"2024-01-0{i}T00:00:00"} for i in range(1, 4)],
    )
    res = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "o")))
    rows = pq.read_table(tmp_path / "o" / "packing.parquet").to_pylist()
    assert sorted(r["record_id"] for r in rows) == [f"2024-01-0{i}T10:00:00" for i in range(1, 4)]
    assert {r["status"] for r in rows} == {"packed"} and res.manifest["counts"]["skipped"] == {}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_text_batches_read_by_column_equal_the_record_by_record_path(fmt, tok_dir, tmp_path, monkeypatch):
    import pyarrow as pa

    import synth.pack.tokenize as tokenize
    from tests.pack.test_resume import tree_digest

    records = [text(i, 5 + i) for i in range(30)]
    records[3]["id"] = ""  # default id from the file name and row
    records[4]["id"] = None
    records[5]["text"] = ""  # a skip: no text
    records[5]["kind"] = None
    records[6]["text"] = None
    records[7]["domain"] = None
    records[8]["kind"] = "book"
    records[9]["kind"] = ""
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "docs.jsonl", records)
    else:
        src = tmp_path / "docs.parquet"
        pq.write_table(pa.Table.from_pylist(records), src)
    columnar = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "columnar")))
    # The same file through the dict-per-record path.
    monkeypatch.setattr(tokenize, "_text_only", lambda batch: False)
    by_record = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "by-record")))
    assert columnar.manifest["files"] == by_record.manifest["files"]
    assert tree_digest(tmp_path / "columnar") == tree_digest(tmp_path / "by-record")
    rows = {r["record_id"]: r for r in pq.read_table(tmp_path / "columnar" / "packing.parquet").to_pylist()}
    assert rows[f"docs.{fmt}#3"]["status"] == "packed" and rows[f"docs.{fmt}#4"]["status"] == "packed"
    assert rows["text-5"]["reason"] == rows["text-6"]["reason"] == "no_messages_or_text"
    assert rows["text-7"]["domain"] == "unknown" and rows["text-8"]["kind"] == "book"
    assert rows["text-9"]["kind"] == "text" and rows["text-5"]["kind"] == "unknown"


def test_pack_leaves_the_collector_as_it_found_it(corpus, tok_dir, tmp_path, monkeypatch):
    import gc

    import synth.pack.run as run
    from synth.pack.render import TokenizerError

    _, web, _ = corpus
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    # While records are placed, the collector is off and the objects alive before are frozen.
    seen = []
    place = run.Placement.add

    def watched_add(self, *args):
        seen.append((gc.isenabled(), gc.get_freeze_count() > 0))
        return place(self, *args)

    monkeypatch.setattr(run.Placement, "add", watched_add)
    pack(PackOptions([str(web)], str(tok_dir), 256, str(tmp_path / "o")))
    assert seen and set(seen) == {(False, True)}
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with pytest.raises(TokenizerError):
        pack(PackOptions([str(web)], str(tmp_path / "no-tokenizer"), 256, str(tmp_path / "o2")))
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.disable()  # a caller's choice is kept
    try:
        pack(PackOptions([str(web)], str(tok_dir), 256, str(tmp_path / "o3")))
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("fmt", ["jsonl", "chats.jsonl", "parquet"])
def test_progress_moves_batch_by_batch_inside_one_file(fmt, tok_dir, tmp_path, monkeypatch):
    # Tokens and input bytes move with every batch, so one large file shows a rate and a
    # time left long before it ends (Arrow's JSON blocks, the line reader, Parquet).
    import pyarrow as pa

    from synth.pack import inputs, tokenize

    monkeypatch.setattr(tokenize, "BATCH_ROWS", 10)
    monkeypatch.setattr(inputs, "JSON_BLOCK_BYTES", 512)
    # (the line reader reads 8 kB at a time: the chats make a file of several)
    records = [chat(i) for i in range(120)] if fmt == "chats.jsonl" else [text(i, 12) for i in range(45)]
    if fmt == "parquet":
        src = tmp_path / "one.parquet"
        pq.write_table(pa.Table.from_pylist(records), src)
    else:
        src = write_jsonl(tmp_path / f"one.{fmt}", records)
    calls = []

    def progress(label, total, done, unit="files"):
        calls.append((label, "start", (total, done, unit)))
        return lambda stats: calls.append((label, "tick", stats))

    res = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "o")), progress=progress)
    assert ("tokenise", "start", (src.stat().st_size, 0, "bytes")) in calls
    ticks = [s for label, kind, s in calls if label == "tokenise" and kind == "tick" and s is not None]
    token_ticks = [s["tokens"] for s in ticks if s["files"] == 0 and s["tokens"]]
    assert len(token_ticks) == -(-len(records) // 10)  # one per batch of 10 records, before the file is done
    assert sum(token_ticks) == res.manifest["tokens"]["documents"]
    byte_ticks = [s["bytes"] for s in ticks if s.get("bytes")]
    assert sum(byte_ticks) == src.stat().st_size
    # (Arrow reads a few dozen MB ahead of the blocks it hands out: a small file is read at once.)
    assert len(byte_ticks) >= (1 if fmt == "jsonl" else 3)
    assert sum(s["files"] for s in ticks) == 1 and sum(s["tokens"] for s in ticks) == sum(token_ticks)


def test_a_shard_left_from_a_killed_run_is_placed_in_input_order(tok_dir, tmp_path, monkeypatch):
    """Files are tokenised through one pipeline (the next file is read while the last
    one still encodes); a file tokenised before a kill sits between two that are not."""
    from synth.pack import tokenize
    from tests.pack.test_resume import tree_digest

    monkeypatch.setattr(tokenize, "BATCH_ROWS", 4)
    inputs = [
        str(write_jsonl(tmp_path / f"in{f}.jsonl", [text(f * 100 + i, 8 + i) for i in range(10)] + [chat(f)]))
        for f in range(3)
    ]
    ref = pack(PackOptions(inputs, str(tok_dir), 64, str(tmp_path / "ref")))
    out = tmp_path / "out"
    pack(PackOptions(inputs, str(tok_dir), 64, str(out)))
    for shard in ("part-00000.parquet", "part-00002.parquet"):
        (out / ".work" / "tokens" / shard).unlink()
    (out / "manifest.json").unlink()
    said = []
    again = pack(PackOptions(inputs, str(tok_dir), 64, str(out)), say=said.append)
    assert any("1 of 3 input files already tokenised" in m for m in said)
    assert again.manifest["files"] == ref.manifest["files"] and tree_digest(out) == tree_digest(tmp_path / "ref")


def _line_by_line(path: Path) -> list[dict]:
    """What a JSONL file holds, read with json.loads line by line (the reference)."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"_bad": "bad_json_line"})
    return out


def _essentials(rec: dict) -> tuple:
    return tuple(rec.get(k) for k in ("id", "text", "domain", "kind", "_bad")) + (bool(rec.get("messages")),)


def test_jsonl_streams_through_arrow_then_line_by_line_from_the_first_block_it_cannot_read(tmp_path, monkeypatch):
    # Arrow reads a JSONL file block by block (memory does not grow with the file); a
    # block it cannot read hands the rest of the file to the line reader: no record is
    # lost or read twice, whatever comes first.
    import pyarrow as pa

    import synth.pack.inputs as inputs

    monkeypatch.setattr(inputs, "JSON_BLOCK_BYTES", 256)
    texts = [text(i, 3 + i % 5) for i in range(40)]
    cases = {
        "clean": texts,
        "bad_line": texts[:25] + ["{not json"] + texts[25:],
        "number_id": texts[:20] + [{"id": 7, "text": "seven"}] + texts[20:],
        "chat_later": texts[:30] + [chat(0)] + texts[30:],
        "new_field_later": texts[:22] + [{**texts[22], "url": "http://x"}] + texts[23:],
        "longer_than_a_block": texts[:12] + [text(99, 200)] + texts[12:],
    }
    for name, recs in cases.items():
        path = tmp_path / f"{name}.jsonl"
        lines = [r if isinstance(r, str) else json.dumps(r) for r in recs]
        lines.insert(5, "   ")  # blank lines count as no record on both paths
        path.write_text("\n".join(lines) + "\n\n")
        batches = list(inputs.iter_batches(str(path), batch_rows=8))
        got = [r for b in batches for r in (b.to_pylist() if isinstance(b, pa.Table) else b)]
        want = _line_by_line(path)
        assert [_essentials(r) for r in got] == [_essentials(r) for r in want], name
        assert isinstance(batches[0], pa.Table), name  # the first blocks went through Arrow
        if name != "clean":
            assert isinstance(batches[-1], list), name  # ... and the rest line by line
        assert all(len(b) <= 8 for b in batches)
        # batches cut by bytes too (on both paths): the same records, in smaller batches
        by_bytes = list(inputs.iter_batches(str(path), batch_rows=8, batch_bytes=300))
        got = [r for b in by_bytes for r in (b.to_pylist() if isinstance(b, pa.Table) else b)]
        assert [_essentials(r) for r in got] == [_essentials(r) for r in want], name
        assert len(by_bytes) > len(batches), name


def test_parquet_batches_are_cut_by_bytes_too(tmp_path):
    import pyarrow as pa

    from synth.pack.inputs import iter_batches

    recs = [text(i, 150 + i) for i in range(60)]  # ~1 kB each
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "long.parquet")
    batches = list(iter_batches(str(tmp_path / "long.parquet"), batch_rows=4096, batch_bytes=8000))
    assert [r["id"] for b in batches for r in b.to_pylist()] == [r["id"] for r in recs]
    assert 5 <= len(batches) <= 30 and max(b.num_rows for b in batches) < 20


def test_a_shard_is_written_batch_by_batch_and_a_failed_write_commits_nothing(tok_dir, tmp_path, monkeypatch):
    """A file's shard grows a row group per encoded batch (memory holds a batch, not the
    file); a write that fails (a full disk) stops the pack with that error, no shard of
    the file is renamed into place, and the next run tokenises it again and finishes."""
    from synth.core import rundir
    from synth.pack import tokenize
    from tests.pack.test_resume import tree_digest

    monkeypatch.setattr(tokenize, "BATCH_ROWS", 4)
    src = write_jsonl(tmp_path / "in.jsonl", [text(i, 8 + i) for i in range(10)] + [chat(0)])
    ref = tmp_path / "ref"
    pack(PackOptions([str(src)], str(tok_dir), 64, str(ref)))
    assert pq.ParquetFile(ref / ".work" / "tokens" / "part-00000.parquet").num_row_groups == 3

    real_write, calls = rundir.AtomicParquetWriter.write, []

    def full_disk(self, table):
        calls.append(table.num_rows)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(self, table)

    monkeypatch.setattr(rundir.AtomicParquetWriter, "write", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left"):
        pack(PackOptions([str(src)], str(tok_dir), 64, str(out)))
    assert calls == [4, 4]  # nothing written after the failure
    assert not (out / ".work" / "tokens" / "part-00000.parquet").exists()
    assert not (out / "manifest.json").exists()
    monkeypatch.setattr(rundir.AtomicParquetWriter, "write", real_write)
    pack(PackOptions([str(src)], str(tok_dir), 64, str(out)))
    assert tree_digest(out) == tree_digest(ref)
    assert not list(out.rglob(".*.tmp-*"))


def test_a_slow_disk_holds_the_pipeline_not_memory(tok_dir, tmp_path, monkeypatch):
    """Batches wait for the shard thread at most WRITES_AHEAD deep: with writes slower
    than encoding, tokenised tables do not pile up in memory."""
    import time

    from synth.core import rundir
    from synth.pack import tokenize

    monkeypatch.setattr(tokenize, "BATCH_ROWS", 2)
    src = write_jsonl(tmp_path / "in.jsonl", [text(i, 6) for i in range(60)])
    made, written, backlog = [0], [0], []
    real_table, real_write = tokenize._batch_table, rundir.AtomicParquetWriter.write

    def counted_table(*args):
        made[0] += 1
        return real_table(*args)

    def slow_write(self, table):
        backlog.append(made[0] - written[0])
        time.sleep(0.02)
        real_write(self, table)
        written[0] += 1

    monkeypatch.setattr(tokenize, "_batch_table", counted_table)
    monkeypatch.setattr(rundir.AtomicParquetWriter, "write", slow_write)
    res = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "o")))
    assert res.manifest["counts"]["input_records"] == 60 and written[0] == 30
    assert max(backlog) <= tokenize.WRITES_AHEAD + 1


def _pack_in_child(src: str, tok: str, out: str) -> None:
    pack(PackOptions([src], tok, 64, out))


def test_encoder_threads_are_kept_for_the_next_pack_and_a_forked_child_gets_its_own(tok_dir, tmp_path):
    """The encoder threads outlive a pack (their tokenizer caches stay warm); a process
    forked afterwards (worker processes may be forked) must not wait on its parent's
    threads, which it does not have."""
    import multiprocessing as mp

    from synth.pack import tokenize

    src = write_jsonl(tmp_path / "in.jsonl", [text(i, 8) for i in range(30)] + [chat(0)])
    first = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "a")))
    pools = dict(tokenize._ENCODER_POOLS)
    again = pack(PackOptions([str(src)], str(tok_dir), 64, str(tmp_path / "b")))
    assert pools == tokenize._ENCODER_POOLS and again.manifest["tokens"] == first.manifest["tokens"]
    child = mp.get_context("fork").Process(target=_pack_in_child, args=(str(src), str(tok_dir), str(tmp_path / "c")))
    child.start()
    child.join(120)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["tokens"] == first.manifest["tokens"]


def test_an_empty_input_file_gets_an_empty_shard(tok_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    src = write_jsonl(tmp_path / "in.jsonl", [text(i, 6) for i in range(3)])
    res = pack(PackOptions([str(empty), str(src)], str(tok_dir), 64, str(tmp_path / "o")))
    shard = pq.read_table(tmp_path / "o" / ".work" / "tokens" / "part-00000.parquet")
    assert shard.num_rows == 0 and "tokens" in shard.column_names
    assert res.manifest["counts"]["input_records"] == 3
