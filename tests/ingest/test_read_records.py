"""`read_records`: JSONL, Parquet and saved `datasets` folders, every column kept."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synth.core.stage import Shard
from synth.ingest.records import ReadRecords, ReadRecordsOptions

ROWS = [{"instruction": f"task {i}", "score": i / 2, "tags": ["a", str(i)], "meta": {"src": "x"}} for i in range(7)]


def _read_all(inputs, **opts):
    reader = ReadRecords(ReadRecordsOptions(**opts))
    shard = Shard("00-read_records", 0, "p", 0)
    tables = [reader.read(spec, shard) for spec in reader.list_shards([str(i) for i in inputs])]
    return [r for t in tables for r in t.to_pylist()], shard


def _without_id(rows):
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def test_jsonl_parquet_and_saved_datasets_keep_every_column(tmp_path):
    import datasets

    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    for path in ("a.jsonl", "a.parquet", "ds"):
        rows, _ = _read_all([tmp_path / path], rows_per_shard=3)
        assert _without_id(rows) == ROWS, path
        assert len({r["id"] for r in rows}) == 7
    # ids are stable across reads (they key resumes and the LLM cache)
    assert _read_all([tmp_path / "ds"])[0] == _read_all([tmp_path / "ds"], rows_per_shard=2)[0]


def test_dataset_dict_splits_and_unknown_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:5]), "test": datasets.Dataset.from_list(ROWS[5:])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(_read_all([tmp_path / "dd"])[0]) == 7
    test_rows, _ = _read_all([tmp_path / "dd"], split=["test"])
    assert [r["instruction"] for r in test_rows] == ["task 5", "task 6"]
    with pytest.raises(ValueError, match="no split dev"):
        _read_all([tmp_path / "dd"], split=["dev"])


def test_existing_id_column_is_kept(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"id": "mine-1", "text": "x"}]), tmp_path / "b.parquet")
    assert _read_all([tmp_path / "b.parquet"])[0] == [{"id": "mine-1", "text": "x"}]


def test_messages_derive_instruction_and_response(tmp_path):
    chats = [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2"},
                {"role": "user", "content": "Q3"},
                {"role": "assistant", "content": "A3"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "unanswered"},
                {"role": "user", "content": "Q4"},
                {"role": "assistant", "content": "A4"},
            ]
        },
        {"messages": [{"role": "assistant", "content": "hello"}]},
        {
            "messages": [{"role": "user", "content": "Q5"}, {"role": "assistant", "content": "A5"}],
            "instruction": "given",
            "response": None,
        },
    ]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    rows, shard = _read_all([tmp_path / "c.jsonl"], messages_column="messages")
    assert [(r["instruction"], r["response"]) for r in rows] == [("Q1", "A1"), ("Q2", "A2"), ("given", "A5")]
    assert shard.dropped == {"no_user_assistant_exchange": 2}
    assert shard.counters["read_records.multi_turn_first_exchange"] == 1
    assert ReadRecords(ReadRecordsOptions(messages_column="messages")).output_columns() == (
        "id",
        "instruction",
        "response",
    )


def test_missing_messages_column_is_one_clear_error(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(ValueError, match="messages_column 'messages' is not a column"):
        _read_all([tmp_path / "d.jsonl"], messages_column="messages")


def test_other_formats_are_refused(tmp_path):
    (tmp_path / "e.txt").write_text("x")
    with pytest.raises(ValueError, match="Parquet or JSONL"):
        _read_all([tmp_path / "e.txt"])


def test_jsonl_column_first_seen_in_a_later_row_is_kept(tmp_path):
    (tmp_path / "f.jsonl").write_text(json.dumps({"a": 1}) + "\n" + json.dumps({"a": 2, "late": "x"}) + "\n")
    assert _without_id(_read_all([tmp_path / "f.jsonl"])[0]) == [{"a": 1, "late": None}, {"a": 2, "late": "x"}]
