"""self_instruct records the domain mix before and after expansion, and its target,
as ledger counters the audit renders; rows without a domain get the router's label."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.ledger import stage_totals, write_shard_ledger
from synth.core.rundir import RunDir
from synth.core.stage import Shard
from synth.llm.fake import FakeEngine
from synth.synthesis.self_instruct import SelfInstruct

MATH = "Solve for x: 3x + 5 = 20, then compute the sum of its digits."
CODE = "Write a Python function that reverses a linked list in place."


def _answer(req, i):
    return CODE if '"code"' in req.messages[-1]["content"] else MATH


def _stage(**options):
    stage = SelfInstruct(SelfInstruct.Options(**options))
    stage.engine = FakeEngine(_answer)
    return stage


def _rows(n: int, domain: str | None) -> list[dict]:
    return [
        {"id": f"{domain}{i}", "instruction": f"Suggest a name for my new puppy number {i}.", "domain": domain}
        for i in range(n)
    ]


def test_domain_mix_counters_reach_the_ledger(tmp_path):
    stage = _stage(target={"general": 0.5, "math": 0.25, "code": 0.25}, max_new_per_shard=4)
    run = RunDir(tmp_path)
    label = "05-self_instruct"
    outs = []
    for index in (0, 1):
        shard = Shard(label, index, f"part-0000{index}", seed=3)
        table = pa.Table.from_pylist(_rows(4, "general"))
        out = stage.process(table, shard)
        outs.append(out)
        run.stage_dir(label).mkdir(parents=True, exist_ok=True)
        write_shard_ledger(run, label, shard, table.num_rows, out.num_rows, 0.1, True)
        pq.write_table(out, run.part(label, shard.name))
    counters = stage_totals(run, label, "self_instruct")["counters"]
    # before: 4 general rows per shard, none of the under-target domains
    assert counters["domain_mix.before.general"] == 8
    assert counters["domain_mix.before.math"] == 0 and counters["domain_mix.before.code"] == 0
    # after: what the stage wrote, summed over both shards
    after = Counter(r["domain"] for out in outs for r in out.to_pylist())
    assert {k: counters[f"domain_mix.after.{k}"] for k in after} == dict(after)
    assert after["math"] == 2 and after["code"] == 2  # one new each per shard (the second repeats the first)
    # target: a share in per-mille, recorded once however many shards there are
    assert counters["domain_mix.target.general"] == 500
    assert counters["domain_mix.target.math"] == 250 and counters["domain_mix.target.code"] == 250


def test_rows_without_domain_are_labelled_by_the_classifier():
    stage = _stage(target={"general": 0.5, "math": 0.5}, max_new_per_shard=0)
    rows = [
        {"id": "a", "instruction": MATH, "domain": None},
        {"id": "b", "instruction": "Suggest a nice name for my new puppy.", "domain": None},
    ]
    shard = Shard("05-self_instruct", 1, "part-00001", seed=3)
    out = stage.process(pa.Table.from_pylist(rows), shard).to_pylist()
    assert [r["domain"] for r in out] == ["math", "general"]
    assert shard.counters["domain_mix.before.math"] == 1 and "domain_mix.target.math" not in shard.counters


def test_self_instruct_needs_no_domain_column():
    stage = _stage()
    assert "domain" not in stage.input_columns() and "domain" in stage.output_columns()


def test_off_target_instructions_are_counted_or_dropped():
    # the engine answers every request with a math problem, whatever domain it was asked for
    for drop in (False, True):
        stage = _stage(target={"general": 0.5, "science": 0.5}, max_new_per_shard=1, drop_off_target=drop)
        stage.engine = FakeEngine(lambda req, i: MATH)
        shard = Shard("05-self_instruct", 1, "part-00001", seed=3)
        out = stage.process(pa.Table.from_pylist(_rows(2, "general")), shard).to_pylist()
        if drop:
            assert len(out) == 2 and shard.dropped == Counter({"off_target_domain": 1})
        else:
            assert len(out) == 3 and shard.counters["self_instruct.off_target.science"] == 1
