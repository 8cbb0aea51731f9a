"""The `split_passages` stage: sizes, boundaries, chapters, provenance."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.core.records import content_id
from synth.core.stage import Shard
from synth.ingest.passages import PassageOptions, SplitPassages, split_text
from synth.ingest.read import ReadDocuments, ReadOptions


def split_table(table, **options):
    stage = SplitPassages(PassageOptions(**options))
    shard = Shard("02-split_passages", 0, "part-00000", 0)
    return stage.process(table, shard), shard


def read_book(path):
    stage = ReadDocuments(ReadOptions())
    return stage.read(stage.list_shards([str(path)])[0], Shard("00-read", 0, "part-00000", 0))


def test_book_passages_are_exact_slices_with_chapters(shared_data):
    book = read_book(shared_data / "books" / "pg11_alice.txt")
    doc = book.to_pylist()[0]
    out, shard = split_table(book, max_chars=1500, min_chars=200)
    rows = out.to_pylist()
    assert len(rows) > 50 and shard.counters["split_documents"] == 1
    for i, r in enumerate(rows):
        assert doc["text"][r["char_offset"] : r["char_offset"] + len(r["text"])] == r["text"]
        assert r["passage_index"] == i and r["doc_id"] == doc["id"]
        assert r["id"] == content_id(doc["id"], r["char_offset"], r["text"])
        assert r["title"] == doc["title"] and r["author"] == "Lewis Carroll" and r["source"] == doc["source"]
        assert len(r["text"]) <= 1500 + 200
    chapters = list(dict.fromkeys(r["chapter"] for r in rows if r["chapter"]))
    assert chapters[:2] == ["CHAPTER I. Down the Rabbit-Hole", "CHAPTER II. The Pool of Tears"]
    assert len(chapters) == 12
    # a chapter heading opens its passage
    first_of_ch2 = next(r for r in rows if r["chapter"] == chapters[1])
    assert first_of_ch2["text"].startswith("CHAPTER II.")
    # together the passages cover every paragraph of the book
    covered = "".join(r["text"] for r in rows).replace("\n", "").replace(" ", "")
    assert covered == doc["text"].replace("\n", "").replace(" ", "")


def test_table_of_contents_is_not_a_chapter(shared_data):
    book = read_book(shared_data / "books" / "pg2701_moby_dick.txt")
    rows, _ = split_table(book)
    rows = rows.to_pylist()
    toc = next(r for r in rows if "CONTENTS" in r["text"])
    assert toc["chapter"] is None
    loomings = next(r for r in rows if r["text"].startswith("CHAPTER 1. Loomings.") and "Call me Ishmael" in r["text"])
    assert loomings["chapter"] == "CHAPTER 1. Loomings."


def test_long_paragraph_splits_at_sentence_ends():
    sentences = [f"Sentence {i} says something about the weather today." for i in range(100)]
    text = " ".join(sentences)
    pieces = split_text(text, max_chars=500, min_chars=50)
    assert len(pieces) > 5
    for s, e, _ in pieces:
        assert e - s <= 550
        assert text[s:e].endswith(".") and text[s:e].startswith("Sentence")


def test_sentence_longer_than_max_is_cut_at_whitespace():
    text = "word " * 1000
    pieces = split_text(text.strip(), max_chars=300, min_chars=10)
    assert all(e - s <= 310 for s, e, _ in pieces)
    assert all(not text[s:e].startswith(" ") and text[s:e].startswith("word") for s, e, _ in pieces)


def test_short_documents_stay_whole_and_empty_ones_drop():
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "text": ["Just one short paragraph.", None, "  "],
            "url": ["u1", "u2", "u3"],
            "html": [None, None, None],
        }
    )
    out, shard = split_table(table)
    rows = out.to_pylist()
    assert len(rows) == 1 and rows[0]["text"] == "Just one short paragraph." and rows[0]["url"] == "u1"
    assert rows[0]["passage_index"] == 0 and rows[0]["char_offset"] == 0 and rows[0]["chapter"] is None
    assert "html" not in out.column_names
    assert dict(shard.dropped) == {"no_text": 2}


def test_small_tail_joins_previous_passage():
    text = ("A" * 400 + "\n\n") * 3 + "tail."
    pieces = split_text(text, max_chars=900, min_chars=100)
    assert text[pieces[-1][0] : pieces[-1][1]].endswith("tail.")
    assert all(e - s >= 100 for s, e, _ in pieces)


def test_min_must_be_below_max():
    with pytest.raises(ValueError, match="min_chars"):
        PassageOptions(max_chars=100, min_chars=100)
