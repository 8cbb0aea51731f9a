"""A program cannot fake passing its tests by exiting before they run."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.heuristic.code_exec import CodeExecOptions, CodeExecutionFilter
from synth.filters.heuristic.sandbox import run_python

WRONG_ADD = "def add(a, b):\n    return a - b\n"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"


def fence(code):
    return f"```python\n{code}\n```"


def run(rows, **opts):
    stage = CodeExecutionFilter(CodeExecOptions(cpu_seconds=2, wall_seconds=5, **opts))
    shard = Shard("03-code_exec", 0, "part-00000", 0)
    table = pa.Table.from_pylist(rows)
    return stage.score(table, shard), stage.process(table, shard), shard


@pytest.mark.parametrize(
    "exit_call",
    [
        "import sys\nsys.exit(0)",
        "import os\nos._exit(0)",
        "raise SystemExit",
        "import sys\nsys.stdout.flush(); sys.exit()",
    ],
)
def test_an_early_exit_is_tests_not_run_not_a_pass(exit_call):
    rows = [{"id": "cheat", "response": fence(WRONG_ADD + exit_call), "tests": TESTS}]
    scores, kept, shard = run(rows)
    assert scores["exec_status"] == ["tests_not_run"]
    assert scores["tests_passed"] == [False]
    assert kept.num_rows == 0 and shard.dropped["tests_not_run"] == 1


def test_an_honest_program_still_passes_and_a_wrong_one_fails():
    rows = [
        {"id": "good", "response": fence("def add(a, b):\n    return a + b\n"), "tests": TESTS},
        {"id": "bad", "response": fence(WRONG_ADD), "tests": TESTS},
    ]
    scores, kept, shard = run(rows)
    assert scores["exec_status"] == ["ok", "tests_failed"]
    assert scores["tests_passed"] == [True, False]
    assert kept.column("id").to_pylist() == ["good"]


def test_the_proof_cannot_be_read_from_the_sandbox():
    # The secret the launcher writes after the tests lives in a control file
    # outside the program's directory: Landlock and the audit hook refuse to open it.
    program = "import glob\nprint(glob.glob('../control/*'))\nopen('../control/config.json').read()\n"
    res = run_python(program, tests="assert True\n")
    assert res.status == "error" and res.tests_completed is False
    assert "PermissionError" in res.stderr or "Permission denied" in res.stderr
