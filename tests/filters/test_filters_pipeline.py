"""The four filters as YAML stage types in one pipeline, through the executor."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.ledger import audit
from synth.core.records import content_id
from synth.core.stage import SourceStage, StageOptions


class RecordsOptions(StageOptions):
    rows: list[dict] = []


class Records(SourceStage):
    """Emits the rows given in its options (test only)."""

    type = "test_records"
    Options = RecordsOptions
    writes = ("id", "kind", "domain", "messages", "instruction", "responses", "finish_reasons")

    def list_shards(self, inputs):
        return [{"shard": 0}]

    def read(self, spec, shard):
        return pa.Table.from_pylist([{**r, "id": content_id(json.dumps(r, sort_keys=True))} for r in self.options.rows])


def row(domain, instruction, responses, finishes=None):
    return {
        "kind": "instruction",
        "domain": domain,
        "instruction": instruction,
        "messages": [{"role": "user", "content": instruction}],
        "responses": responses,
        "finish_reasons": finishes or ["stop"] * len(responses),
    }


def test_pipeline_of_filters(tmp_path, shared_data):
    gsm = json.loads(open(shared_data / "benchmarks" / "gsm8k" / "test.jsonl").readline())["question"]
    add = "```python\ndef add(a, b):\n    return a + b\n```"
    rows = [
        row("math", "What is 6 times 7?", ["6*7 = 42. The answer is 42.", "#### 42", "The answer is 41"]),
        row("math", "What is 2+3?", ["The answer is 5", "The answer is 6", "The answer is 7"]),
        row("code", "Write add(a, b).\nassert add(2, 3) == 5", [add, add, add]),
        row("code", "Write add(a, b).\nassert add(2, 3) == 6", [add, add, add]),
        row("math", gsm, ["The answer is 18", "The answer is 18", "The answer is 18"]),
        row(
            "math",
            "What is 1+1?",
            ["I'm sorry, but I can't help. The answer is 2", "I'm sorry, but I can't. The answer is 2", "x"],
        ),
    ]
    raw = {
        "name": "filters",
        "stages": [
            {"type": "tests.filters.test_filters_pipeline:Records", "rows": rows},
            {"type": "consistency", "min_agree": 2, "last_number_fallback": False, "domains": ["math"]},
            {"type": "rules", "response_column": "response"},
            {"type": "code_exec", "domains": ["code"], "cpu_seconds": 2},
            {
                "type": "decontaminate",
                "benchmarks": [str(shared_data / "benchmarks" / "gsm8k" / "test.jsonl")],
                "columns": ["messages"],
                "cache_dir": str(tmp_path / "cache"),
            },
        ],
    }
    pipe = build_pipeline(raw)
    run_pipeline(pipe, PipelineSource(raw=raw, path=None, seed=0), tmp_path / "run", executor=LocalExecutor(1))
    report = audit(tmp_path / "run")
    by = {s["stage"]: s for s in report["stages"]}
    assert all(s["balanced"] for s in report["stages"])
    assert by["01-consistency"]["dropped"] == {"no_majority": 1}
    assert by["02-rules"]["dropped"] == {"refusal": 1}
    assert by["03-code_exec"]["dropped"] == {"tests_failed": 1}
    assert by["04-decontaminate"]["dropped"] == {"contaminated:gsm8k/test": 1}
    out = pq.read_table(next((tmp_path / "run" / "output").glob("*.parquet"))).to_pylist()
    assert len(out) == 2
    math = next(r for r in out if r["domain"] == "math")
    assert math["answer"] == "42" and math["messages"][-1] == {
        "role": "assistant",
        "content": "6*7 = 42. The answer is 42.",
    }
