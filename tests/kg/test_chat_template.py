"""Samples render through real tool-calling chat templates with transformers.

The templates are the Qwen2.5 and Qwen3 chat templates shipped inside the `trl`
package (no hub download); the tokenizer is a stub because only the template matters.
"""

import json
import re

import pytest

from kg.config import WalkConfig
from kg.export import template_messages
from kg.generate import SampleFactory, sample_seeds
from kg.stage import SAMPLE_SCHEMA
from tests.chat_templates import trl_template


@pytest.fixture(scope="module")
def tokenizer():
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))


@pytest.fixture(scope="module")
def rows(nations, tmp_path_factory):
    """Samples as a training job sees them: written to Parquet, read by `datasets`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets = pytest.importorskip("datasets")
    factory = SampleFactory(nations, WalkConfig(error_share=0.3, irrelevance_share=0.1))
    records = [o.record for o in factory.make(sample_seeds(4, 0, 60)) if o.record]
    path = tmp_path_factory.mktemp("shards") / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(records, schema=SAMPLE_SCHEMA), path)
    ds = datasets.load_dataset(
        "parquet", data_files=[str(path)], split="train", cache_dir=str(tmp_path_factory.mktemp("hf"))
    )
    assert len(ds) == len(records)
    return list(ds)


def _calls(messages):
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for m in messages for c in m["tool_calls"] or []
    ]


@pytest.mark.parametrize("template", ["qwen2_5.jinja", "qwen3.jinja"])
def test_samples_render_with_tool_calls_and_results(tokenizer, rows, template):
    tokenizer.chat_template = trl_template(template)
    for row in rows:
        tools = json.loads(row["tools"])
        text = tokenizer.apply_chat_template(template_messages(row["messages"]), tools=tools, tokenize=False)
        for tool in tools:
            assert json.dumps(tool, ensure_ascii=False) in text or tool["function"]["name"] in text
        # the system turn shows an example call with placeholders: read the turns after it
        body = text.split("<|im_end|>", 1)[1]
        rendered = [json.loads(b) for b in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", body, re.S)]
        assert [(c["name"], c["arguments"]) for c in rendered] == _calls(row["messages"])
        responses = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", text, re.S)
        assert responses == [m["content"] for m in row["messages"] if m["role"] == "tool"]
        assert row["messages"][-1]["content"] in text


def test_rows_as_loaded_render_directly(tokenizer, rows):
    # No conversion at all: what `datasets` returns goes straight into the template.
    tokenizer.chat_template = trl_template("qwen3.jinja")
    for row in rows:
        text = tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
        body = text.split("<|im_end|>", 1)[1]
        assert body.count("<tool_call>\n{") == len(_calls(row["messages"]))
    tokenizer.chat_template = trl_template("qwen2_5.jinja")
    for row in rows:
        tokenizer.apply_chat_template(row["messages"], tools=json.loads(row["tools"]), tokenize=False)
