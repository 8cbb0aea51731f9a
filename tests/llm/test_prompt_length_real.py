"""Prompt measurement against the real engine (vLLM offline, the embedded SmolLM2 with its
2,048-token context): a 3,000-character Chinese passage is rejected by the engine
when sent unmeasured (the reported failure), is shortened and answered when
measured, and a prompt that cannot be shortened is dropped as `prompt_too_long`
without reaching the engine."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.core.stage import PipelineContext, Shard
from synth.llm.stage import LLM_ERROR, SamplingOptions
from synth.llm.tokens import PROMPT_TOO_LONG
from synth.synthesis.instruct import GenerateInstructions
from synth.synthesis.respond import GenerateResponses

pytestmark = pytest.mark.vllm

SENTENCE = "国家统计局发布了今年前三个季度的经济数据，国内生产总值同比增长百分之五，消费和投资的恢复是主要原因。"
PASSAGE = "\n\n".join([SENTENCE * 3] * 20)[:3000]
SHORT = SamplingOptions(temperature=0.0, max_tokens=64)


def _shard(label):
    return Shard(label, 0, "part-00000", seed=3)


def test_long_chinese_prompts_with_the_real_engine(default_model_path):
    rows = [{"id": "p1", "text": PASSAGE, "title": "统计", "url": "http://example.cn/"}]
    opts = dict(
        kinds={"open_question": 1},
        kinds_per_passage=1,
        per_kind=1,
        max_passage_chars=20000,
        cache=False,
        sampling=SHORT,
    )

    # unmeasured: the engine itself refuses it, after a round trip (the reported failure)
    unchecked = GenerateInstructions(GenerateInstructions.Options(**opts, check_prompt_length=False), PipelineContext())
    shard = _shard("05-instruct")
    unchecked.process(pa.Table.from_pylist(rows), shard)
    assert dict(shard.dropped) == {LLM_ERROR: 1}, dict(shard.dropped)
    assert shard.counters["llm.default.requests"] == 1

    # measured: the passage is cut to fit and the engine answers
    checked = GenerateInstructions(GenerateInstructions.Options(**opts), PipelineContext())
    shard = _shard("05-instruct")
    checked.process(pa.Table.from_pylist(rows), shard)
    assert LLM_ERROR not in shard.dropped, [r.scores for r in shard.rejects]
    assert shard.counters["llm.default.prompt_shortened"] == 1
    assert shard.counters["llm.default.failures"] == 0 and shard.counters["llm.default.completion_tokens"] > 0
    assert 1000 < shard.counters["llm.default.prompt_tokens"] <= 2048 - SHORT.max_tokens

    # nothing to shorten (the instruction is the prompt): dropped, never sent
    respond = GenerateResponses(
        GenerateResponses.Options(cache=False, use_routing=False, sampling=SHORT), PipelineContext()
    )
    shard = _shard("06-respond")
    out = respond.process(
        pa.Table.from_pylist(
            [
                {"id": "i1", "instruction": PASSAGE, "domain": "general"},
                {"id": "i2", "instruction": "Say hello.", "domain": "general"},
            ]
        ),
        shard,
    )
    assert out.column("id").to_pylist() == ["i2"]
    assert dict(shard.dropped) == {PROMPT_TOO_LONG: 1}
    assert shard.counters["llm.default.requests"] == 1 and shard.counters["llm.default.prompt_too_long"] == 1
