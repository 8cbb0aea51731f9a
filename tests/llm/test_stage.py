"""LLMStage with a fake engine: whole shard in one call, usage counted, failed
requests dropped as llm_error with the error kept, bad output dropped with reason."""

from __future__ import annotations

from typing import ClassVar

import pyarrow as pa
import pytest

from synth.core.stage import PipelineContext, Shard
from synth.llm.fake import FakeEngine
from synth.llm.stage import BAD_OUTPUT, LLM_ERROR, LLMStage, LLMStageOptions, parse_json
from synth.llm.types import ChatRequest


class Answer(LLMStage):
    """Test stage: asks the `question` column, parses the answer as JSON."""

    type: ClassVar[str] = "answer"
    writes = ("answer",)

    def build_request(self, row, shard):
        if row.get("skip"):
            return None
        return ChatRequest(
            [{"role": "user", "content": row["question"]}], self.sampling(shard, row, json_schema={"type": "object"})
        )

    def apply_result(self, row, result, shard):
        try:
            value = parse_json(result.text)
        except ValueError:
            return BAD_OUTPUT
        return {**row, "answer": value["a"]}


SCRIPT = {"q1": '{"a": 1}', "q2": '```json\n{"a": 2}\n```', "q3": "I cannot do JSON", "q4": '{"a": 4}'}


def run(rows, fake):
    stage = Answer(LLMStageOptions(), PipelineContext(seed=1))
    stage.engine = fake
    shard = Shard("05-answer", 0, "00000", 1)
    out = stage.process(pa.Table.from_pylist(rows), shard)
    return out, shard


def test_shard_is_one_engine_call_and_records_are_answered_or_dropped():
    rows = [{"id": f"r{i}", "question": f"q{i}", "skip": False} for i in range(1, 5)]
    fake = FakeEngine(SCRIPT, name="m", fail_keys={"r4"})
    out, shard = run(rows, fake)
    assert fake.calls == 1 and len(fake.requests_seen) == 4
    assert out.column("id").to_pylist() == ["r1", "r2"]
    assert out.column("answer").to_pylist() == [1, 2]
    assert shard.dropped == {BAD_OUTPUT: 1, LLM_ERROR: 1}
    assert out.num_rows + sum(shard.dropped.values()) == len(rows)  # nothing lost
    err = next(r for r in shard.rejects if r.reason == LLM_ERROR)
    assert err.record["id"] == "r4" and "fake failure" in err.scores["error"]
    bad = next(r for r in shard.rejects if r.reason == BAD_OUTPUT)
    assert bad.scores["raw"] == ["I cannot do JSON"]  # raw text kept for the audit
    assert shard.counters["llm.m.requests"] == 4
    assert shard.counters["llm.m.failures"] == 1
    assert [r.key for r in fake.requests_seen] == ["r1", "r2", "r3", "r4"]


def test_rows_without_request_pass_through_and_seeds_follow_run_seed():
    rows = [{"id": "r1", "question": "q1", "skip": False}, {"id": "r2", "question": "q2", "skip": True}]
    fake = FakeEngine(SCRIPT)
    out, _ = run(rows, fake)
    assert out.column("id").to_pylist() == ["r1", "r2"]
    assert len(fake.requests_seen) == 1
    seed1 = fake.requests_seen[0].sampling.seed
    stage = Answer(LLMStageOptions(), PipelineContext(seed=2))
    other = stage.sampling(Shard("05-answer", 0, "00000", 2), rows[0])
    assert seed1 is not None and other.seed != seed1


def test_all_dropped_shard_keeps_a_schema():
    fake = FakeEngine(SCRIPT, fail_keys={"r1"})
    out, shard = run([{"id": "r1", "question": "q1", "skip": False}], fake)
    assert out.num_rows == 0 and "id" in out.column_names
    assert shard.dropped[LLM_ERROR] == 1


@pytest.mark.parametrize(
    "text,value",
    [
        ('{"a": 1}', {"a": 1}),
        ("Sure! [1, 2] done", [1, 2]),
        ('```\n{"a": [1]}\n```', {"a": [1]}),
        ('x {"a": 2} y', {"a": 2}),
    ],
)
def test_parse_json_repairs_common_damage(text, value):
    assert parse_json(text) == value


def test_parse_json_rejects_garbage():
    with pytest.raises(ValueError):
        parse_json('{"a": ')


def test_shared_engines_open_once_per_distinct_entry(tmp_path, monkeypatch):
    from synth.llm import stage as stage_mod
    from synth.llm.config import ModelsConfig

    opened = []

    def fake_open(name, models):
        opened.append(name)
        return FakeEngine(name=name)

    monkeypatch.setattr("synth.llm.engines.open_engine", fake_open)
    monkeypatch.setattr(stage_mod, "_engines", {})
    monkeypatch.setattr(stage_mod, "_bases", {})
    models = ModelsConfig.from_dict({"models": {"general": {}, "math": {}, "big": {"model": "other/model"}}})
    g = stage_mod.shared_engine("general", models, "k", tmp_path / "c.sqlite")
    m = stage_mod.shared_engine("math", models, "k", tmp_path / "c.sqlite")
    b = stage_mod.shared_engine("big", models, "k", None)
    assert stage_mod.shared_engine("general", models, "k", tmp_path / "c.sqlite") is g
    assert opened == []  # engines open on the first request the cache cannot answer
    assert (g.name, m.name, b.name) == ("general", "math", "big")
    (res,) = m.generate([ChatRequest([{"role": "user", "content": "x"}])])
    assert res.ok
    b.generate([ChatRequest([{"role": "user", "content": "x"}])])
    assert opened == ["general", "big"]  # math has the same settings as general
    (again,) = g.generate([ChatRequest([{"role": "user", "content": "x"}])])
    assert again.cached and opened == ["general", "big"]  # served by the cache: nothing more opened
    stage_mod.close_engines()


def test_output_keeps_input_and_declared_types():
    class Typed(Answer):
        def column_types(self):
            return {"answer": pa.int32()}

    stage = Typed(LLMStageOptions(), PipelineContext())
    stage.engine = FakeEngine(SCRIPT)
    table = pa.Table.from_pylist(
        [{"id": "r1", "question": "q1", "skip": False, "note": None}],
        schema=pa.schema(
            [("id", pa.string()), ("question", pa.string()), ("skip", pa.bool_()), ("note", pa.list_(pa.string()))]
        ),
    )
    out = stage.process(table, Shard("05-answer", 0, "00000", 0))
    assert out.schema.field("note").type == pa.list_(pa.string())  # not inferred as null
    assert out.schema.field("answer").type == pa.int32()
