"""Symlink loops under a recursive --input glob end quickly, read every
real file once, and say what they skipped."""

from __future__ import annotations

import logging
import os

import pytest

from synth.core.stage import Shard
from synth.ingest.read import ReadDocuments, ReadOptions, expand_inputs


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("top.jsonl", "a/one.jsonl", "a/b/two.jsonl"):
        (root / rel).write_text(f'{{"text": "{rel}"}}\n')
    return root


@pytest.mark.timeout(20)
def test_loop_to_parent_and_self_link_end_and_read_each_file_once(tmp_path, caplog):
    root = make_tree(tmp_path / "data")
    os.symlink("..", root / "a" / "b" / "loop")  # back up into the tree: a cycle
    os.symlink(".", root / "a" / "self")  # the 41-shards case
    skipped: dict[str, int] = {}
    with caplog.at_level(logging.WARNING):
        files = expand_inputs([f"{root}/**/*.jsonl"], skipped=skipped)
    assert [os.path.relpath(f, root) for f in files] == ["a/b/two.jsonl", "a/one.jsonl", "top.jsonl"]
    assert skipped == {"directory_link_loop": 2}
    assert "skipped 2 path(s) (directory link loop)" in caplog.text


@pytest.mark.timeout(20)
def test_link_to_a_directory_outside_is_followed_and_duplicates_read_once(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "far.jsonl").write_text('{"text": "far"}\n')
    root = make_tree(tmp_path / "data")
    os.symlink(outside, root / "linked")  # a corpus kept on another disk: followed
    os.symlink(outside, root / "a" / "linked_again")  # the same directory twice: read once
    os.symlink(root / "top.jsonl", root / "a" / "alias.jsonl")  # the same file twice: read once
    os.symlink(tmp_path / "missing", root / "broken.jsonl")
    skipped: dict[str, int] = {}
    files = expand_inputs([f"{root}/**/*.jsonl", str(root / "top.jsonl")], skipped=skipped)
    real = sorted(os.path.realpath(f) for f in files)
    assert real == sorted(
        {
            os.path.realpath(p)
            for p in (outside / "far.jsonl", root / "top.jsonl", root / "a/one.jsonl", root / "a/b/two.jsonl")
        }
    )
    assert len(files) == 4
    assert skipped == {"directory_seen_twice": 1, "same_file": 1, "broken_link": 1}


@pytest.mark.timeout(20)
def test_directory_input_with_a_loop(tmp_path):
    root = make_tree(tmp_path / "data")
    os.symlink(root, root / "a" / "b" / "home")
    assert len(expand_inputs([str(root)])) == 3


@pytest.mark.timeout(30)
def test_read_stage_counts_the_skips_in_its_ledger(tmp_path):
    root = make_tree(tmp_path / "data")
    os.symlink(".", root / "self")
    stage = ReadDocuments(ReadOptions())
    specs = stage.list_shards([f"{root}/**/*.jsonl"])
    assert len(specs) == 3  # not one shard per path through the link
    shard = Shard("00-read", 0, "part-00000", 0)
    stage.read(specs[0], shard)
    assert shard.counters["inputs.skipped.directory_link_loop"] == 1
