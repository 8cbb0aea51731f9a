"""Prompt lengths in tokens, not characters.

Passages sized in tokens of the reading model, and every LLM request measured
before it is sent: shortened where the stage allows (the passage), else dropped
as `prompt_too_long` without a request. The finding reproduced: 3,000 characters
of Chinese are more than the default model's 2,048-token context.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.core.stage import PipelineContext, Shard
from synth.ingest.passages import PassageOptions, SplitPassages
from synth.llm.fake import FakeEngine
from synth.llm.stage import SamplingOptions
from synth.llm.tokens import PROMPT_TOO_LONG, PromptBudget, count_tokens, load_tokenizer
from synth.llm.types import ChatRequest, SamplingParams
from synth.synthesis.instruct import GenerateInstructions
from synth.synthesis.respond import GenerateResponses

ZH_SENTENCE = "国家统计局发布了今年前三个季度的经济数据，国内生产总值同比增长百分之五，消费和投资的恢复是主要原因。"


@pytest.fixture(scope="module")
def tokenizer():
    try:
        return load_tokenizer("default")
    except Exception as e:  # noqa: BLE001 - the default model is prepared by scripts/install.sh
        pytest.skip(f"default model tokenizer unavailable: {e}")


def chinese(chars: int) -> str:
    paras = []
    while sum(map(len, paras)) < chars:
        paras.append(ZH_SENTENCE * 3)
    return "\n\n".join(paras)[:chars]


def test_finding_3000_chinese_chars_overflow_the_context(tokenizer):
    assert count_tokens(tokenizer, [chinese(3000)])[0] > 2048


def test_split_passages_max_tokens(tokenizer):
    text = chinese(6000) + "\n\n" + ("The river rose in the night. " * 200)
    doc = pa.Table.from_pylist([{"id": "d1", "text": text, "url": "http://example.com/"}])
    stage = SplitPassages(PassageOptions(max_chars=3000, min_chars=200, max_tokens=512))
    shard = Shard("02-split_passages", 0, "part-00000", 0)
    out = stage.process(doc, shard).to_pylist()
    sizes = count_tokens(tokenizer, [p["text"] for p in out])
    assert max(sizes) <= 512 and len(out) >= 12
    # still exact slices of the document, in order, with nothing lost but whitespace
    for p in out:
        assert text[p["char_offset"] : p["char_offset"] + len(p["text"])] == p["text"]
    assert "".join(p["text"] for p in out).replace("\n", "").replace(" ", "") == text.replace("\n", "").replace(" ", "")
    assert shard.counters["passages_resplit_for_tokens"] >= 1
    # characters alone let a 3,000-character Chinese passage through
    chars_only = (
        SplitPassages(PassageOptions(max_chars=3000, min_chars=200)).process(doc, Shard("x", 0, "p", 0)).to_pylist()
    )
    assert max(count_tokens(tokenizer, [p["text"] for p in chars_only])) > 2048


def test_budget_shortens_the_passage_part(tokenizer):
    passage = chinese(3000)
    req = ChatRequest(
        [
            {"role": "system", "content": "Write tasks."},
            {"role": "user", "content": f"Passage:\n{passage}\n\nWrite 2 questions."},
        ],
        SamplingParams(max_tokens=384),
        shortenable=passage,
    )
    budget = PromptBudget(tokenizer, 2048)
    fitted, size, shortened = budget.fit(req)
    assert shortened and size <= 2048 - 384
    assert fitted.messages[1]["content"].startswith("Passage:\n") and fitted.messages[1]["content"].endswith(
        "\n\nWrite 2 questions."
    )
    assert passage.startswith(fitted.shortenable) and len(fitted.shortenable) < len(passage)
    # nothing to cut: refused
    fitted, size, shortened = budget.fit(
        ChatRequest([{"role": "user", "content": passage}], SamplingParams(max_tokens=384))
    )
    assert fitted is None and size > 2048 and not shortened
    # fits: sent as is
    small = ChatRequest([{"role": "user", "content": "Hello"}], SamplingParams(max_tokens=384))
    assert budget.fit(small) == (small, budget.prompt_tokens(small.messages), False)


def test_instruct_shortens_and_respond_drops_without_a_request(tokenizer):
    fake = FakeEngine(
        lambda req, i: '{"instructions": ["What grew by five percent this year according to the bureau?"]}',
        name="default",
    )
    stage = GenerateInstructions(
        GenerateInstructions.Options(
            kinds={"open_question": 1},
            kinds_per_passage=1,
            per_kind=1,
            max_passage_chars=20000,
            cache=False,
            sampling=SamplingOptions(max_tokens=384),
        ),
        PipelineContext(),
    )
    stage.engine = fake
    shard = Shard("05-instruct", 0, "part-00000", 0)
    out = stage.process(
        pa.Table.from_pylist([{"id": "p1", "text": chinese(3000), "title": "t", "url": "u", "language": "zh"}]), shard
    )
    assert out.num_rows == 1 and not shard.dropped
    assert out.column("language").to_pylist() == ["zh"]  # the passage's language rides along
    assert shard.counters["llm.default.prompt_shortened"] == 1
    sent = fake.requests_seen[0]
    assert PromptBudget(tokenizer, 2048).prompt_tokens(sent.messages) <= 2048 - 384

    fake = FakeEngine(lambda req, i: "answer", name="default")
    respond = GenerateResponses(GenerateResponses.Options(cache=False, use_routing=False), PipelineContext())
    respond.engine = fake
    shard = Shard("06-respond", 0, "part-00000", 0)
    rows = [
        {"id": "i1", "instruction": chinese(3000), "domain": "general"},
        {"id": "i2", "instruction": "Say hi.", "domain": "general"},
    ]
    out = respond.process(pa.Table.from_pylist(rows), shard)
    assert out.column("id").to_pylist() == ["i2"]
    assert dict(shard.dropped) == {PROMPT_TOO_LONG: 1}
    assert [r.key for r in fake.requests_seen] == ["i2"]  # the long one was never sent
    assert shard.counters["llm.default.prompt_too_long"] == 1
    assert "2048 context" in shard.rejects[0].scores["error"]


def test_check_can_be_turned_off(tokenizer):
    fake = FakeEngine(lambda req, i: "answer", name="default")
    respond = GenerateResponses(
        GenerateResponses.Options(cache=False, use_routing=False, check_prompt_length=False), PipelineContext()
    )
    respond.engine = fake
    shard = Shard("06-respond", 0, "part-00000", 0)
    respond.process(pa.Table.from_pylist([{"id": "i1", "instruction": chinese(3000), "domain": "general"}]), shard)
    assert len(fake.requests_seen) == 1 and not shard.dropped
