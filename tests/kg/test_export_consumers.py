"""Every sample of a run, exported, goes through the real consumer of its format.

- mistral: parsed by mistral-common's own message types and encoded by its v3 tokenizer
  in finetuning mode, which runs its request validator (message order, tool-call ids of
  9 alphanumeric characters, one result per call, weights 0/1);
- sequential: rendered by the Llama 3.1 chat template (shipped in `trl`), which refuses
  a message with more than one call, so the plain export must fail where this one works;
- openai: rendered by the Qwen2.5 tool-calling template (shipped in `trl`);
- sharegpt: read by LLaMA-Factory's own ShareGPT converter (which skips an example whose
  turns do not alternate) and made into supervised examples by its processor with its
  `qwen` and `llama3` templates; the trained spans must be the calls (parsed back by the
  template's own tool extractor) and the answer;
- hermes: read by the same converter with the Hermes roles (system / human / gpt / tool),
  and every gpt turn parsed by vLLM's Hermes 2 Pro tool parser (what serves Hermes models),
  which must give back every call's name and arguments.

LLaMA-Factory is installed without its dependencies (its releases pin transformers <= 5.6
and need torchaudio, which breaks beside torch 2.13+cpu); only its data modules are used,
and torchaudio, which it imports for audio inputs only, is stood in for while they load.
"""

import importlib
import importlib.machinery
import importlib.util
import json
import sys
import types
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kg.config import WalkConfig
from kg.export import export, sequential_messages, to_sharegpt
from kg.generate import SampleFactory, sample_seeds
from kg.stage import SAMPLE_SCHEMA
from tests.chat_templates import trl_template


def _with_weights(record):
    """What the training loader adds: weight 0 on the deliberately wrong call of a self-correction."""
    messages = [dict(m) for m in record["messages"]]
    for k, m in enumerate(messages[:-1]):
        nxt = messages[k + 1]
        if m["tool_calls"] and nxt["role"] == "tool" and '"error"' in nxt["content"]:
            m["weight"] = 0
    return {**record, "messages": messages}


@pytest.fixture(scope="module")
def run(nations, tmp_path_factory):
    """A run's output: plain, parallel (2i/3i/2u), self-correction, lookup and irrelevance samples."""
    factory = SampleFactory(nations, WalkConfig(error_share=0.3, irrelevance_share=0.1, lookup_share=0.3))
    records = [o.record for o in factory.make(sample_seeds(9, 0, 80)) if o.record]
    root = tmp_path_factory.mktemp("run")
    (root / "output").mkdir()
    pq.write_table(pa.Table.from_pylist(records, schema=SAMPLE_SCHEMA), root / "output" / "part-00000.parquet")
    return root, records


@pytest.fixture(scope="module")
def weighted_run(run, tmp_path_factory):
    _, records = run
    weighted = [_with_weights(r) for r in records]
    assert any(m.get("weight") == 0 for r in weighted for m in r["messages"])
    root = tmp_path_factory.mktemp("weighted")
    (root / "output").mkdir()
    # kg's own message schema carries `weight` (0 on a self-correction's wrong call)
    assert "weight" in [f.name for f in SAMPLE_SCHEMA.field("messages").type.value_type]
    schema = SAMPLE_SCHEMA
    pq.write_table(pa.Table.from_pylist(weighted, schema=schema), root / "output" / "part-00000.parquet")
    return root, weighted


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))


@pytest.mark.parametrize("sequential", [False, True])
def test_mistral_export_passes_mistral_common(weighted_run, tmp_path, sequential):
    pytest.importorskip("mistral_common")
    from mistral_common.protocol.instruct.messages import (
        FinetuningAssistantMessage,
        SystemMessage,
        ToolMessage,
        UserMessage,
    )
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import Tool
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    root, records = weighted_run
    target = tmp_path / "mistral.jsonl"
    assert export(root, "mistral", target, sequential=sequential) == len(records)
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": FinetuningAssistantMessage, "tool": ToolMessage}
    path = MistralTokenizer._data_path() / "mistral_instruct_tokenizer_240323.model.v3"
    tok = MistralTokenizer.from_file(str(path), mode=ValidationMode.finetuning)
    weights = 0
    for line in _lines(target):
        messages = [kinds[m["role"]].model_validate(m) for m in line["messages"]]
        weights += sum(1 for m in messages if getattr(m, "weight", None) == 0)
        request = ChatCompletionRequest(messages=messages, tools=[Tool.model_validate(t) for t in line["tools"]])
        tokens = tok.encode_chat_completion(request).tokens
        assert len(tokens) > 20
    assert weights > 0  # the wrong calls keep weight 0 for mistral-finetune


def test_mistral_validator_rejects_what_the_export_avoids(run):
    # The consumer is strict: the openai-style ids we store would not pass it.
    pytest.importorskip("mistral_common")
    from mistral_common.exceptions import InvalidMessageStructureException, MistralCommonException
    from mistral_common.protocol.instruct.messages import AssistantMessage, ToolMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.tool_calls import FunctionCall, ToolCall
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    _, records = run
    call = next(c for r in records for m in r["messages"] for c in m["tool_calls"] or [])
    bad = ChatCompletionRequest(
        messages=[
            UserMessage(content="q"),
            AssistantMessage(
                tool_calls=[
                    ToolCall(
                        id=call["id"],
                        function=FunctionCall(name=call["function"]["name"], arguments=call["function"]["arguments"]),
                    )
                ]
            ),
            ToolMessage(content="{}", tool_call_id=call["id"]),
            AssistantMessage(content="a"),
        ]
    )
    with pytest.raises((MistralCommonException, InvalidMessageStructureException, ValueError)):
        MistralTokenizer.v3().encode_chat_completion(bad)


def test_sequential_export_renders_with_llama31(run, tmp_path, tokenizer):
    root, records = run
    tokenizer.chat_template = trl_template("llama3_1.jinja")
    parallel = [r for r in records if any(len(m["tool_calls"] or []) > 1 for m in r["messages"])]
    assert parallel
    plain = _lines(tmp_path / "plain.jsonl") if export(root, "openai", tmp_path / "plain.jsonl") else []
    refused = 0
    for line in plain:
        try:
            tokenizer.apply_chat_template(line["messages"], tools=line["tools"], tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja2 raise_exception
            assert "single tool-calls" in str(exc)
            refused += 1
    assert refused == len(parallel)
    export(root, "openai", tmp_path / "seq.jsonl", sequential=True)
    for line, rec in zip(_lines(tmp_path / "seq.jsonl"), records):
        text = tokenizer.apply_chat_template(line["messages"], tools=line["tools"], tokenize=False)
        calls = [c for m in rec["messages"] for c in m["tool_calls"] or []]
        assert text.count("<|python_tag|>") + text.count('"parameters"') >= len(calls)
        for c in calls:
            assert json.dumps(json.loads(c["function"]["arguments"])) in text
        assert rec["messages"][-1]["content"] in text


def test_sequential_keeps_calls_results_and_order(run):
    _, records = run
    for rec in records:
        seq = sequential_messages(rec["messages"])
        assert all(len(m["tool_calls"] or []) <= 1 for m in seq)
        calls = [c["id"] for m in rec["messages"] for c in m["tool_calls"] or []]
        assert [c["id"] for m in seq for c in m["tool_calls"] or []] == calls
        # every call is answered right after it is made
        for a, b in pairwise(seq):
            if a["tool_calls"]:
                assert b["role"] == "tool" and b["tool_call_id"] == a["tool_calls"][0]["id"]


def test_openai_export_renders_with_qwen25(weighted_run, tmp_path, tokenizer):
    root, records = weighted_run
    tokenizer.chat_template = trl_template("qwen2_5.jinja")
    export(root, "openai", tmp_path / "openai.jsonl")
    lines = _lines(tmp_path / "openai.jsonl")
    assert len(lines) == len(records)
    assert any(m.get("weight") == 0 for line in lines for m in line["messages"])  # kept for trainers that read it
    for line, rec in zip(lines, records):
        text = tokenizer.apply_chat_template(line["messages"], tools=line["tools"], tokenize=False)
        body = text.split("<|im_end|>", 1)[1]
        assert body.count("<tool_call>") == sum(len(m["tool_calls"] or []) for m in rec["messages"])
        assert rec["messages"][-1]["content"] in text


# -- sharegpt and hermes: LLaMA-Factory's reader and templates, vLLM's Hermes parser -----------


@pytest.fixture(scope="module")
def llamafactory():
    """LLaMA-Factory's data modules (converter, parser, templates), without its trainer stack.

    `llamafactory.data/__init__` imports the collators and the dataset loader, which need
    its pinned trainer stack, so only the modules a dataset goes through are loaded. Its
    multimodal plugin imports torchaudio at module level for audio inputs; a stand-in module
    satisfies that import (text samples never reach it) and is removed right after.
    """
    pytest.importorskip("peft")  # imported by llamafactory.extras.constants
    lf = pytest.importorskip("llamafactory")
    import transformers.processing_utils
    import transformers.video_utils  # noqa: F401

    name = "llamafactory.data"
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(Path(lf.__file__).parent / "data")]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    had_torchaudio = "torchaudio" in sys.modules
    if not had_torchaudio:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        template = importlib.import_module("llamafactory.data.template")
    finally:
        if not had_torchaudio:
            del sys.modules["torchaudio"]
    return types.SimpleNamespace(
        template=template,
        converter=importlib.import_module("llamafactory.data.converter"),
        parser=importlib.import_module("llamafactory.data.parser"),
    )


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A byte-level tokenizer: any text encodes and decodes back unchanged."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(BPE({c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok)


def _lf_attr(llamafactory, **columns_and_tags):
    """A dataset as `dataset_info.json` would declare it: `formatting: sharegpt`, columns, tags."""
    return llamafactory.parser.DatasetAttr("file", "kg", formatting="sharegpt", **columns_and_tags)


def _lf_read(llamafactory, line, **tags):
    """One exported line through LLaMA-Factory's ShareGPT converter; [] means it skipped the example."""
    converter = llamafactory.converter.SharegptDatasetConverter(
        _lf_attr(llamafactory, **tags), types.SimpleNamespace(media_dir=None)
    )
    example = converter(line)
    return example["_prompt"] + example["_response"], example["_system"], example["_tools"]


def _calls(message):
    return [
        {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
        for c in message["tool_calls"] or []
    ]


@pytest.mark.slow  # loading LLaMA-Factory's data modules takes ~15 s
@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize(
    "template_name,stop", [("qwen", "<|im_end|>\n"), ("llama3", "<|eot_id|>")], ids=["qwen", "llama3"]
)
def test_sharegpt_export_trains_in_llamafactory(
    run, tmp_path, llamafactory, byte_tokenizer, template_name, stop, sequential
):
    """Every sample becomes a LLaMA-Factory supervised example whose trained tokens are exactly
    its calls (parsed back by the template's own tool extractor) and its answer."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    root, records = run
    target = tmp_path / "sharegpt.jsonl"
    assert export(root, "sharegpt", target, sequential=sequential) == len(records)
    template = llamafactory.template.TEMPLATES[template_name]
    examples = [
        llamafactory.converter.SharegptDatasetConverter(
            _lf_attr(llamafactory, system="system", tools="tools"), types.SimpleNamespace(media_dir=None)
        )(line)
        for line in _lines(target)
    ]
    for ex, rec in zip(examples, records):
        assert ex["_prompt"], f"LLaMA-Factory skipped sample {rec['id']}"
    batch = {k: [ex[k] for ex in examples] for k in examples[0]}
    processor = SupervisedDatasetProcessor(
        template=template,
        tokenizer=byte_tokenizer,
        processor=None,
        data_args=types.SimpleNamespace(cutoff_len=10**6, train_on_prompt=False, mask_history=False),
    )
    encoded = processor.preprocess_dataset(batch)
    assert len(encoded["input_ids"]) == len(records)  # none dropped
    for input_ids, labels, ex, rec in zip(encoded["input_ids"], encoded["labels"], examples, records):
        text = byte_tokenizer.decode(input_ids)
        for tool in json.loads(rec["tools"]):  # the template's tool formatter lists every tool
            assert tool["function"]["name"] in text
        assert rec["messages"][1]["content"] in text
        # the trained spans (labels not masked), one per assistant turn
        spans, span = [], []
        for token, label in zip(input_ids, labels):
            if label != -100:
                span.append(token)
            elif span:
                spans, span = [*spans, byte_tokenizer.decode(span).removesuffix(stop)], []
        spans.append(byte_tokenizer.decode(span).removesuffix(stop))
        turns = (ex["_prompt"] + ex["_response"])[1::2]
        assert len(spans) == len(turns)
        parsed = [template.extract_tool(t) for t, m in zip(spans, turns) if m["role"] == "function"]
        expected = [_calls(m) for m in rec["messages"] if m["role"] == "assistant" and m["tool_calls"]]
        if sequential:
            expected = [[c] for calls in expected for c in calls]
        assert [[{"name": f.name, "arguments": json.loads(f.arguments)} for f in p] for p in parsed] == expected
        assert spans[-1] == rec["messages"][-1]["content"]
        results = [m["content"] for m in rec["messages"] if m["role"] == "tool"]
        assert not any(r in span for r in results for span in spans)  # tool results are context, not targets


@pytest.mark.slow
def test_llamafactory_skips_what_the_sharegpt_export_avoids(run, llamafactory):
    # The reader is strict: a reflection kept as a gpt turn before its corrected call breaks
    # the alternation, and LLaMA-Factory silently drops the whole example.
    _, records = run
    rec = next(
        r for r in records if any(m["role"] == "assistant" and m["content"] and m["tool_calls"] for m in r["messages"])
    )
    line = to_sharegpt(rec)
    k = next(i for i, t in enumerate(line["conversations"]) if t["from"] == "function_call" and i > 2)
    line["conversations"].insert(k, {"from": "gpt", "value": "Let me correct that."})
    assert _lf_read(llamafactory, line, system="system", tools="tools")[0] == []


@pytest.mark.slow  # importing vLLM takes ~20 s (and LLaMA-Factory ~15 s)
@pytest.mark.parametrize("sequential", [False, True])
def test_hermes_export_parses_with_vllm_hermes_parser(run, tmp_path, llamafactory, byte_tokenizer, sequential):
    pytest.importorskip("vllm")
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    parser = Hermes2ProToolParser(byte_tokenizer)
    root, records = run
    target = tmp_path / "hermes.jsonl"
    assert export(root, "hermes", target, sequential=sequential) == len(records)
    for line, rec in zip(_lines(target), records):
        # a Hermes function-calling dataset: roles system / human / gpt / tool, system in the turns
        messages, system, _ = _lf_read(llamafactory, line, observation_tag="tool")
        assert messages, f"LLaMA-Factory skipped sample {rec['id']}"
        assert "<tools>" in system
        source = sequential_messages(rec["messages"]) if sequential else rec["messages"]
        assistant = [m for m in source if m["role"] == "assistant"]
        gpt = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(gpt) == len(assistant)
        for text, m in zip(gpt, assistant):
            info = parser.extract_tool_calls(text, request=None)
            assert info.tools_called == bool(m["tool_calls"])
            got = [{"name": c.function.name, "arguments": json.loads(c.function.arguments)} for c in info.tool_calls]
            assert got == _calls(m)
            assert (info.content or "").strip() == (m["content"] or "").strip()
