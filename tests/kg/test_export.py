import json
from itertools import pairwise

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kg.config import WalkConfig
from kg.export import export, template_messages, to_hermes, to_sharegpt
from kg.generate import SampleFactory, sample_seeds
from kg.stage import SAMPLE_SCHEMA


@pytest.fixture(scope="module")
def records(nations):
    factory = SampleFactory(
        nations, WalkConfig(patterns={"2i": 1, "2u": 1, "1p": 1}, lookup_share=0.5, error_share=0.3)
    )
    return [o.record for o in factory.make(sample_seeds(3, 0, 40)) if o.record]


def test_sharegpt_turns(records):
    for rec in records:
        out = to_sharegpt(rec)
        assert out["system"] == rec["messages"][0]["content"]
        roles = [t["from"] for t in out["conversations"]]
        assert roles[0] == "human" and roles[-1] == "gpt"
        # LLaMA-Factory's sharegpt reader skips an example whose turns do not alternate
        # between (human | observation) and (gpt | function_call)
        for k, role in enumerate(roles):
            assert role in (("human", "observation"), ("gpt", "function_call"))[k % 2], roles
        # every function_call turn is answered by exactly one observation turn
        for a, b in pairwise(roles):
            if a == "function_call":
                assert b == "observation"
        calls = [json.loads(t["value"]) for t in out["conversations"] if t["from"] == "function_call"]
        n = sum(len(c) if isinstance(c, list) else 1 for c in calls)
        assert n == sum(len(m["tool_calls"] or []) for m in rec["messages"])
        assert json.loads(out["tools"]) == json.loads(rec["tools"])


def test_hermes_turns(records):
    for rec in records:
        out = to_hermes(rec)
        conv = out["conversations"]
        assert conv[0]["from"] == "system" and "<tools>" in conv[0]["value"]
        for tool in json.loads(rec["tools"]):
            assert json.dumps(tool, ensure_ascii=False) in conv[0]["value"]
        calls = [
            json.loads(block)
            for t in conv
            if t["from"] == "gpt"
            for block in t["value"].split("<tool_call>\n")[1:]
            for block in [block.split("\n</tool_call>")[0]]
        ]
        expected = [
            {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
            for m in rec["messages"]
            for c in m["tool_calls"] or []
        ]
        assert calls == expected
        assert sum(t["value"].count("<tool_response>") for t in conv if t["from"] == "tool") == len(expected)


def test_template_messages_drop_nulls_and_parse_arguments(records):
    rec = records[0]
    out = template_messages(rec["messages"])
    assert all(None not in m.values() for m in out)
    for m in out:
        for c in m.get("tool_calls", []):
            assert isinstance(c["function"]["arguments"], dict)


def test_export_files_and_datasets(records, tmp_path):
    datasets = pytest.importorskip("datasets")
    out_dir = tmp_path / "run" / "output"
    out_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records, schema=SAMPLE_SCHEMA), out_dir / "part-00000.parquet")
    for fmt in ("sharegpt", "hermes", "openai"):
        target = tmp_path / f"{fmt}.jsonl"
        assert export(tmp_path / "run", fmt, target) == len(records)
        lines = target.read_text().splitlines()
        assert len(lines) == len(records) and all(json.loads(line)["id"] for line in lines)
    ds = datasets.load_dataset(
        "json", data_files=str(tmp_path / "sharegpt.jsonl"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == len(records)
