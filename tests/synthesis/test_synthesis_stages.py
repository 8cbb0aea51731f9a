"""Logic of the synthesis stages, with a scripted fake engine (no model)."""

import json
from collections import Counter

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.llm.critique import CritiqueFilter, parse_grade
from synth.llm.fake import FakeEngine
from synth.synthesis.evolve import EvolveInstructions, is_sorry_and_short, only_punctuation_and_stop_words
from synth.synthesis.instruct import GenerateInstructions
from synth.synthesis.respond import GenerateResponses
from synth.synthesis.self_instruct import SelfInstruct, deficits

PASSAGE = (
    "The Thames barrier was completed in 1982 to protect London from storm surges. "
    "It spans 520 metres and has ten steel gates that rotate into place when a surge is forecast."
)


def _stage(cls, engine, **options):
    stage = cls(cls.Options(**options))
    stage.engine = engine
    return stage


def _shard(name="part-00000"):
    return Shard("01-test", 0, name, seed=7)


def test_instruct_keeps_grounded_tasks_and_drops_with_reasons():
    def script(req, i):
        user = req.messages[-1]["content"]
        if "GARBLED" in user:
            return "I cannot produce JSON, sorry"
        return json.dumps(
            {
                "instructions": [
                    "Why do cities build movable flood barriers instead of permanent walls?",
                    "What does the passage say about the gates?",
                    PASSAGE.split(". ")[1],
                    "Why do cities build movable flood barriers instead of permanent walls?",
                ]
            }
        )

    engine = FakeEngine(script)
    stage = _stage(GenerateInstructions, engine, kinds={"open_question": 1}, kinds_per_passage=1, per_kind=4)
    table = pa.Table.from_pylist(
        [
            {"id": "p1", "text": PASSAGE, "url": "http://x", "title": None, "source": "a.warc"},
            {"id": "p2", "text": "GARBLED", "url": None, "title": "Book", "source": "b.txt"},
        ]
    )
    shard = _shard()
    out = stage.process(table, shard).to_pylist()
    assert [r["instruction"] for r in out] == ["Why do cities build movable flood barriers instead of permanent walls?"]
    row = out[0]
    assert row["task_type"] == "open_question" and row["source_id"] == "p1" and row["source_url"] == "http://x"
    prov = json.loads(row["provenance"])
    assert prov[0]["prompt"] == "instruct/generate@2" and prov[0]["model"] == "fake"
    assert shard.dropped == Counter(
        {"not_self_contained": 1, "copies_passage": 1, "repeated_in_output": 1, "unparseable_output": 1}
    )
    # schema-guided decoding was requested
    assert engine.requests_seen[0].sampling.json_schema["required"] == ["instructions"]


def test_instruct_extraction_kind_shows_passage_to_responder():
    engine = FakeEngine(lambda req, i: json.dumps({"instructions": ["List every number mentioned in the text."]}))
    stage = _stage(GenerateInstructions, engine, kinds={"extraction": 1}, kinds_per_passage=1, per_kind=1)
    out = stage.process(pa.Table.from_pylist([{"id": "p1", "text": PASSAGE}]), _shard()).to_pylist()
    assert len(out) == 1 and PASSAGE in out[0]["instruction"] and out[0]["instruction"].startswith("List every number")


def test_instruct_rejects_kind_missing_from_prompt_file():
    stage = GenerateInstructions(GenerateInstructions.Options(kinds={"poetry_slam": 1}))
    with pytest.raises(ValueError, match="poetry_slam"):
        stage.setup()


def test_evolve_elimination_rules_and_pool_return():
    rows = [
        {"id": "a", "instruction": "Explain tides.", "domain": "science"},
        {"id": "b", "instruction": "Add two numbers.", "domain": "math"},
        {"id": "c", "instruction": "Describe rain.", "domain": "science"},
        {"id": "d", "instruction": "Name a river.", "domain": "general"},
    ]

    def script(req, i):
        system = req.messages[0]["content"]
        user = req.messages[-1]["content"]
        if "You rewrite tasks" in system:
            if "Explain tides." in user:
                return "Explain tides, including the role of the Moon and the Sun."
            if "Add two numbers." in user:
                return "#Rewritten Prompt#: add two numbers"
            if "Describe rain." in user:
                return "Describe rain in detail, covering how droplets form."
            return "Name a river in Africa and its length."
        if "Equal or Different" in system:
            return "Equal" if "Africa" in user else "Different"
        # trial responses
        return (
            "Sorry, I cannot help."
            if "droplets" in user
            else "Tides are caused mainly by the gravity of the Moon. " * 3
        )

    engine = FakeEngine(script)
    stage = _stage(EvolveInstructions, engine, operators={"add_constraints": 1}, rounds=1)
    shard = _shard()
    out = {r["evolution_parent"]: r for r in stage.process(pa.Table.from_pylist(rows), shard).to_pylist()}
    assert out["Explain tides."]["instruction"].startswith("Explain tides, including")
    assert out["Explain tides."]["evolution"] == ["add_constraints"]
    assert out["Explain tides."]["id"] != "a"
    for parent in ("Add two numbers.", "Describe rain.", "Name a river."):
        assert out[parent]["instruction"] == parent and out[parent]["evolution"] == []
    assert shard.counters["discarded.copies_scaffolding"] == 1
    assert shard.counters["discarded.response_sorry_short"] == 1
    assert shard.counters["discarded.no_information_gain"] == 1
    assert sum(shard.dropped.values()) == 0  # one in, one out


def test_evolve_rule_helpers():
    assert is_sorry_and_short("Sorry, I can't do that.")
    assert not is_sorry_and_short("sorry " + "word " * 90)
    assert only_punctuation_and_stop_words("... the, and; is it?")
    assert not only_punctuation_and_stop_words("The answer is 42.")


def test_respond_samples_objective_and_routes(monkeypatch):
    general = FakeEngine(lambda req, i: f"general answer {i}", name="general")
    mathy = FakeEngine(lambda req, i: f"The answer is {4 + i % 2}", name="math")
    import synth.llm.stage as llm_stage

    monkeypatch.setattr(llm_stage, "shared_engine", lambda model, *a, **k: {"math": mathy}[model])
    stage = _stage(GenerateResponses, general, n_objective=3)
    table = pa.Table.from_pylist(
        [
            {"id": "q1", "instruction": "What is 2+2?", "domain": "math", "route_model": "math", "provenance": None},
            {
                "id": "q2",
                "instruction": "Tell me about owls.",
                "domain": "general",
                "route_model": None,
                "provenance": None,
            },
        ]
    )
    out = {r["id"]: r for r in stage.process(table, _shard()).to_pylist()}
    assert out["q1"]["responses"] == ["The answer is 4", "The answer is 5", "The answer is 4"]
    assert out["q1"]["response_model"] == "math"
    assert out["q2"]["responses"] == ["general answer 0"] and out["q2"]["response_model"] == "general"
    assert json.loads(out["q1"]["provenance"])[-1]["sampling"]["n"] == 3


def test_critique_grades_and_threshold():
    def script(req, i):
        user = req.messages[-1]["content"]
        if "bad" in user:
            return '{"rationale": "wrong", "grade": 1}'
        if "odd" in user:
            return "no idea"
        return '{"rationale": "fine", "grade": 4}'

    stage = _stage(CritiqueFilter, FakeEngine(script), min_grade=3)
    table = pa.Table.from_pylist(
        [
            {"id": str(i), "instruction": "q", "response": r, "provenance": None}
            for i, r in enumerate(["good", "bad", "odd"])
        ]
    )
    shard = _shard()
    out = stage.process(table, shard).to_pylist()
    assert [(r["id"], r["critique_grade"], r["critique_rationale"]) for r in out] == [("0", 4, "fine")]
    assert shard.dropped == Counter({"critique_below_min_grade": 1, "critique_unparseable": 1})
    assert parse_grade("grade: 2") == (2, "grade: 2")


def test_self_instruct_fills_domains_below_target():
    assert deficits(Counter({"general": 6, "math": 2}), {"general": 0.5, "math": 0.5}, cap=10) == {"math": 4}
    assert deficits(Counter({"general": 6}), {"general": 0.5, "math": 0.25, "code": 0.25}, cap=2) == {"code": 2}

    engine = FakeEngine(
        lambda req, i: (
            "Write a Python function that reverses a linked list."
            if '"code"' in req.messages[-1]["content"]
            else "Solve 3x + 5 = 20 for x."
        )
    )
    stage = _stage(SelfInstruct, engine, target={"general": 0.5, "math": 0.25, "code": 0.25}, max_new_per_shard=4)
    rows = [
        {
            "id": str(i),
            "instruction": f"General question number {i}?",
            "domain": "general",
            "task_type": "open_question",
            "evolution": [],
            "provenance": None,
        }
        for i in range(4)
    ]
    shard = _shard()
    out = stage.process(pa.Table.from_pylist(rows), shard).to_pylist()
    new = [r for r in out if r["task_type"] == "self_instruct"]
    assert len(out) == 4 + len(new) and Counter(r["domain"] for r in new) == Counter({"math": 1, "code": 1})
    # the second request per domain repeats the first answer and is dropped as a repeat
    assert len(new) == 2 and shard.dropped == Counter({"repeats_seed": 2})


def test_instruct_repairs_a_list_cut_by_max_tokens():
    from synth.llm.types import ChatResult

    class Cut(FakeEngine):
        def _one(self, req):
            text = '{"instructions": ["Why do rivers flood in spring after snow melts?", "How are flood barriers tested before winter storm'
            return ChatResult(texts=[text], finish_reasons=["length"], prompt_tokens=5, completion_tokens=40)

    stage = _stage(GenerateInstructions, Cut(), kinds={"open_question": 1}, kinds_per_passage=1, per_kind=2)
    shard = _shard()
    out = stage.process(pa.Table.from_pylist([{"id": "p1", "text": PASSAGE}]), shard).to_pylist()
    assert [r["instruction"] for r in out] == ["Why do rivers flood in spring after snow melts?"]
    assert shard.counters["instruct.repaired_truncated_output"] == 1


def test_instruct_truncated_beyond_repair_is_its_own_reason():
    from synth.llm.types import ChatResult

    class Cut(FakeEngine):
        def _one(self, req):
            return ChatResult(
                texts=['{"instructions": ["Why do riv'],
                finish_reasons=["length"],
                prompt_tokens=5,
                completion_tokens=40,
            )

    stage = _stage(GenerateInstructions, Cut(), kinds={"open_question": 1}, kinds_per_passage=1, per_kind=2)
    shard = _shard()
    assert stage.process(pa.Table.from_pylist([{"id": "p1", "text": PASSAGE}]), shard).num_rows == 0
    assert shard.dropped == Counter({"truncated_output": 1})


def test_critique_is_a_filter_annotate_only_counts_would_drop_and_audit_sees_grades():
    from synth.core.stage import Filter

    engine = FakeEngine(
        lambda req, i: (
            '{"rationale": "wrong", "grade": 1}'
            if "bad" in req.messages[-1]["content"]
            else '{"rationale": "fine", "grade": 4}'
        )
    )
    table = pa.Table.from_pylist(
        [{"id": str(i), "instruction": "q", "response": r, "provenance": None} for i, r in enumerate(["good", "bad"])]
    )
    stage = _stage(CritiqueFilter, engine, min_grade=3, annotate_only=True)
    assert isinstance(stage, Filter)
    shard = _shard()
    out = stage.process(table, shard).to_pylist()
    assert [r["critique_grade"] for r in out] == [4, 1] and not shard.dropped
    assert shard.counters["would_drop.critique_below_min_grade"] == 1
    assert shard.seen_scores.column("critique_grade").to_pylist() == [4, 1]
    assert json.loads(out[1]["provenance"])[-1] == {
        "stage": "critique",
        "prompt": stage.prompt.ref,
        "model": engine.name,
        "grade": 1,
        "sampling": json.loads(out[0]["provenance"])[-1]["sampling"],
    }
