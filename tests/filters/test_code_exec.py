import gzip
import json
import time

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.heuristic.code_exec import (
    CodeExecOptions,
    CodeExecutionFilter,
    instruction_tests,
    split_code_and_tests,
)


def fence(code):
    return f"```python\n{code}\n```"


def run(rows, **opts):
    opts.setdefault("cpu_seconds", 2)
    opts.setdefault("wall_seconds", 4)
    stage = CodeExecutionFilter(CodeExecOptions(**opts))
    shard = Shard("03-code_exec", 0, "part-00000", 0)
    return stage.process(pa.Table.from_pylist(rows), shard), shard


@pytest.fixture(scope="module")
def humaneval(shared_data):
    with gzip.open(shared_data / "benchmarks" / "humaneval" / "HumanEval.jsonl.gz", "rt") as fh:
        return [json.loads(line) for line in fh][:3]


def test_humaneval_check_pass_and_fail(humaneval):
    rows = []
    for p in humaneval:
        good = p["prompt"] + p["canonical_solution"]
        rows.append(
            {
                "id": p["task_id"] + "-good",
                "instruction": p["prompt"],
                "response": "Here:\n" + fence(good),
                "tests": p["test"],
                "entry_point": p["entry_point"],
            }
        )
        bad = p["prompt"] + "    return None\n"
        rows.append(
            {
                "id": p["task_id"] + "-bad",
                "instruction": p["prompt"],
                "response": fence(bad),
                "tests": p["test"],
                "entry_point": p["entry_point"],
            }
        )
    out, shard = run(rows)
    assert sorted(out.column("id").to_pylist()) == sorted(p["task_id"] + "-good" for p in humaneval)
    assert set(out.column("tests_passed").to_pylist()) == {True}
    assert shard.dropped == {"tests_failed": 3}


def test_asserts_from_instruction_and_response():
    code = "def add(a, b):\n    return a + b"
    rows = [
        {"id": "i", "instruction": "Write add(a, b).\nassert add(1, 2) == 3", "response": fence(code)},
        {
            "id": "r",
            "instruction": "Write add.",
            "response": fence(code) + "\nTests:\n" + fence("assert add(2, 2) == 4"),
        },
        {"id": "wrong", "instruction": "Write add.\nassert add(1, 1) == 3", "response": fence(code)},
        {
            "id": "crash",
            "instruction": "Write add.",
            "response": fence("def add(a, b):\n    return a + b\nraise ValueError('boom')"),
        },
    ]
    out, shard = run(rows)
    assert out.column("id").to_pylist() == ["i", "r"]
    assert out.column("tests_count").to_pylist() == [1, 1]
    assert shard.dropped == {"tests_failed": 1, "exec_error": 1}
    crash = next(r for r in shard.rejects if r.reason == "exec_error")
    assert "boom" in crash.scores["exec_stderr_tail"]


def test_hostile_response_contained():
    rows = [
        {"id": "loop", "response": fence("while True:\n    pass")},
        {"id": "mem", "response": fence("x = bytearray(10**10)")},
        {"id": "fork", "response": fence("import os\nwhile True:\n    os.fork()")},
    ]
    out, shard = run(rows, cpu_seconds=1, wall_seconds=3, memory_mb=256)
    assert out.num_rows == 0
    assert shard.dropped == {"exec_timeout": 1, "exec_memory_limit": 1, "exec_error": 1}


def test_no_code_domains_and_messages():
    rows = [
        {
            "id": "prose",
            "domain": "code",
            "response": None,
            "messages": [{"role": "assistant", "content": "Just use a loop."}],
        },
        {
            "id": "math",
            "domain": "math",
            "response": None,
            "messages": [{"role": "assistant", "content": fence("raise SystemExit(3)")}],
        },
        {
            "id": "msg",
            "domain": "code",
            "response": None,
            "messages": [{"role": "user", "content": "add?"}, {"role": "assistant", "content": fence("print(1)")}],
        },
    ]
    out, shard = run(rows, domains=["code"], response_column="messages", instruction_column=None)
    assert out.column("exec_status").to_pylist() == ["no_code", "skipped", "ok"]
    _, shard = run(rows, domains=["code"], response_column="messages", require_code=True)
    assert shard.dropped == {"no_code": 1}


def test_split_code_and_tests():
    text = (
        fence("def f():\n    return 1")
        + "\n"
        + fence("assert f() == 1")
        + "\n```bash\nls\n```\n"
        + fence("def check(candidate):\n    assert candidate() == 1")
    )
    code, tests = split_code_and_tests(text)
    assert "def f" in code and "ls" not in code
    assert len(tests) == 2
    assert instruction_tests("Example: `x`\nassert f(2) == 4\nassert broken(") == ["assert f(2) == 4"]


def test_runs_in_parallel():
    rows = [{"id": str(i), "response": fence("import time\ntime.sleep(1)\nprint('done')")} for i in range(6)]
    start = time.monotonic()
    out, _ = run(rows, max_parallel=6)
    elapsed = time.monotonic() - start
    assert out.num_rows == 6
    assert elapsed < 4.5, elapsed  # sequential would take 6 s and more


def test_missing_sandbox_layer_fails_the_shard_not_the_rows(monkeypatch):
    import functools

    import synth.filters.heuristic.code_exec as code_exec

    # a kernel without seccomp, simulated: the layer is not set up
    monkeypatch.setattr(code_exec, "SandboxLimits", functools.partial(code_exec.SandboxLimits, disable=("seccomp",)))
    with pytest.raises(RuntimeError, match="required layers unavailable: seccomp"):
        run([{"id": "a", "response": fence("print(1)")}], require_layers=["seccomp"])


def test_unknown_required_layer_is_a_config_error():
    with pytest.raises(ValueError, match=r"unknown sandbox layer.*no-such-layer.*allowed: netns"):
        CodeExecOptions(require_layers=["no-such-layer"])
