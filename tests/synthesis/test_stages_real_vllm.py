"""Every synthesis LLM stage against the real engine: vLLM (offline) with the
embedded SmolLM2-135M-Instruct. A 135M model writes poor tasks; these tests check
that each stage drives the real engine end to end and accounts for every row,
not the quality of the text."""

import json
from collections import Counter

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.llm.critique import CritiqueFilter
from synth.llm.stage import SamplingOptions
from synth.synthesis.evolve import EvolveInstructions
from synth.synthesis.instruct import GenerateInstructions
from synth.synthesis.respond import GenerateResponses
from synth.synthesis.self_instruct import SelfInstruct, deficits

pytestmark = pytest.mark.vllm

SHORT = SamplingOptions(temperature=0.0, max_tokens=96)


def _run(stage, rows, name="part-00000"):
    shard = Shard("00-" + stage.type, 0, name, seed=11)
    table = stage.process(pa.Table.from_pylist(rows) if isinstance(rows, list) else rows, shard)
    return table, shard


def _tokens(shard) -> int:
    return sum(v for k, v in shard.counters.items() if k.endswith("completion_tokens"))


@pytest.fixture(scope="module")
def instructions(shared_data, tmp_path_factory):
    book = (shared_data / "books" / "pg11_alice.txt").read_text(encoding="utf-8")
    start = book.index("Alice was beginning to get very tired")
    passages = [
        {"id": f"p{i}", "text": book[start + i * 700 : start + (i + 1) * 700], "title": "Alice", "source": "pg11"}
        for i in range(2)
    ]
    stage = GenerateInstructions(
        GenerateInstructions.Options(
            kinds={"open_question": 1, "math": 1},
            kinds_per_passage=2,
            per_kind=2,
            cache=False,
            sampling=SamplingOptions(temperature=0.0, max_tokens=160),
        )
    )
    table, shard = _run(stage, passages)
    assert _tokens(shard) > 0, "the engine generated nothing"
    assert shard.counters.get("llm.default.failures", 0) == 0
    # every request either produced instructions or a counted drop
    rows = table.to_pylist()
    assert rows or shard.dropped
    for r in rows:
        assert r["instruction"] and r["source_id"] in {"p0", "p1"}
        assert json.loads(r["provenance"])[0]["prompt"] == "instruct/generate@2"
    if not rows:  # a 135M model may fail the JSON; keep the chain going with real tasks
        rows = [
            {
                "id": "i0",
                "instruction": "Why did Alice follow the White Rabbit?",
                "domain": "general",
                "task_type": "open_question",
                "evolution": [],
                "provenance": None,
            },
            {
                "id": "i1",
                "instruction": "Alice has 3 cakes and eats 1. How many are left?",
                "domain": "math",
                "task_type": "math",
                "evolution": [],
                "provenance": None,
            },
        ]
    return rows[:3]


def test_evolve_real(instructions):
    stage = EvolveInstructions(EvolveInstructions.Options(rounds=1, cache=False, sampling=SHORT, trial_max_tokens=48))
    table, shard = _run(stage, instructions)
    assert table.num_rows == len(instructions)  # one in, one out
    accepted = sum(v for k, v in shard.counters.items() if k.startswith("evolve.accepted."))
    discarded = sum(v for k, v in shard.counters.items() if k.startswith("discarded."))
    assert accepted + discarded == len(instructions)
    assert _tokens(shard) > 0


def test_self_instruct_real(instructions):
    stage = SelfInstruct(
        SelfInstruct.Options(target={"general": 0.5, "code": 0.5}, max_new_per_shard=2, cache=False, sampling=SHORT)
    )
    table, shard = _run(stage, instructions)
    new = [r for r in table.to_pylist() if r["task_type"] == "self_instruct"]
    planned = deficits(Counter(r.get("domain") or "general" for r in instructions), stage.options.target, 2)
    assert planned.get("code", 0) >= 1
    assert len(new) + sum(shard.dropped.values()) == sum(planned.values())
    assert {r["domain"] for r in new} <= set(planned)


def test_respond_and_critique_real(instructions):
    respond = GenerateResponses(GenerateResponses.Options(n_objective=2, cache=False, sampling=SHORT))
    answered, shard = _run(respond, instructions)
    assert answered.num_rows == len(instructions) and sum(shard.dropped.values()) == 0
    for r in answered.to_pylist():
        objective = r["domain"] == "math" or r["task_type"] in ("math", "coding")
        assert len(r["responses"]) == (2 if objective else 1) and r["response"] == r["responses"][0]
        assert r["finish_reasons"][0] in ("stop", "length")

    critique = CritiqueFilter(CritiqueFilter.Options(min_grade=1, cache=False))
    graded, shard = _run(critique, answered)
    assert graded.num_rows + sum(shard.dropped.values()) == answered.num_rows
    assert set(shard.dropped) <= {"critique_unparseable"}
    assert all(1 <= g <= 4 for g in graded.column("critique_grade").to_pylist())
