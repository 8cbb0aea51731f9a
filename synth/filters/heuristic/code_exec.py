"""Code execution (stage `code_exec`): run the Python a response writes, with the
tests the instruction or the response gives, in the sandbox (sandbox.py).

Reads `response_column` (default `response`; a messages column works: the last
assistant turn) and, when present, `instruction_column` (default `instruction`,
else the user turn of `messages_column`), `tests_column` (default `tests`: test
code) and `entry_point_column` (default `entry_point`). Only rows whose
`domain` is in `domains` run (all rows when `domains` is empty).

Code is every ```python (or ```py, or untagged) fence of the response that is not
a test; tests are fences or lines made of `assert` statements, and a HumanEval
style `def check(candidate)`, from the response, the instruction or the tests
column. A `check` is called with the entry point (the column, else the first
function the code defines whose name the instruction mentions, else its last).

Writes `exec_status` (ok, error, tests_failed, tests_not_run, timeout, memory_limit,
output_limit, disk_limit, no_code, skipped), `exec_stderr_tail`, `tests_passed` (null
when there were no tests) and `tests_count`. Drop reasons: `no_code` (only with
`require_code`), `no_tests` (only with `require_tests`), `tests_failed`,
`tests_not_run`, `exec_error`, `exec_timeout`, `exec_memory_limit`,
`exec_output_limit`, `exec_disk_limit`.

The tests run after the program, and a pass must be proven by them: the sandbox
confirms the tests reached their end, so a program that exits early (`sys.exit(0)`,
`os._exit(0)`) is `tests_not_run`, never a pass. The sandbox layers active on this
machine are counted once per run (`sandbox.layer.<name>` on the first shard), and
`require_layers` stops the stage with a clear error when one is missing.

Executions run in parallel within a shard, at most `max_parallel` at a time.
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.stage import Filter, FilterOptions
from synth.filters import code_blocks, turn_text
from synth.filters.heuristic.sandbox import LAYER_NAMES, STATUS_OK, STATUS_SANDBOX, SandboxLimits, run_python

_PY_LANGS = {"python", "py", "python3", ""}
_CHECK = re.compile(r"^def check\(\s*candidate\s*\)", re.M)
_ASSERT_LINE = re.compile(r"^\s*assert\b.*$", re.M)


class CodeExecOptions(FilterOptions):
    response_column: str = "response"
    instruction_column: str | None = "instruction"
    messages_column: str | None = "messages"
    tests_column: str | None = "tests"
    entry_point_column: str | None = "entry_point"
    domain_column: str = "domain"
    domains: list[str] = Field(
        default_factory=list, description="Run only rows of these domains (empty: every row with code)."
    )
    require_code: bool = Field(
        False, description="Drop rows (of the chosen domains) whose response has no Python code."
    )
    require_tests: bool = Field(False, description="Drop rows that have code but no tests.")
    cpu_seconds: int = Field(5, ge=1)
    wall_seconds: float = Field(10.0, gt=0)
    memory_mb: int = Field(512, ge=64)
    output_bytes: int = Field(64_000, ge=1000)
    max_parallel: int = Field(4, ge=1, description="Concurrent sandboxes within a shard.")
    site_packages: bool = Field(
        False, description="Let the code import installed packages (default: standard library only)."
    )
    require_layers: list[str] = Field(
        default_factory=list,
        description="Fail unless these sandbox layers are active, e.g. [netns, landlock, seccomp].",
    )
    disk_mb: int = Field(64, ge=1, description="Bytes the program may write in its scratch directory (MiB).")
    disk_inodes: int = Field(2048, ge=16, description="Files and directories the program may create.")
    stderr_tail_chars: int = Field(500, ge=0)

    @field_validator("require_layers")
    @classmethod
    def _known_layers(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown sandbox layer(s) {', '.join(unknown)}; allowed: {', '.join(LAYER_NAMES)}")
        return value


def split_code_and_tests(response: str) -> tuple[str, list[str]]:
    """The program a response writes and the tests it brings along."""
    code, tests = [], []
    for lang, block in code_blocks(response):
        if lang not in _PY_LANGS:
            continue
        if lang == "" and not _looks_like_python(block):
            continue
        if _CHECK.search(block) or _only_asserts(block):
            tests.append(block)
        else:
            code.append(block)
    return "\n\n".join(code), tests


def instruction_tests(instruction: str) -> list[str]:
    tests = []
    for lang, block in code_blocks(instruction):
        if lang in _PY_LANGS and (_CHECK.search(block) or _only_asserts(block)):
            tests.append(block)
        elif lang in _PY_LANGS:
            asserts = _ASSERT_LINE.findall(block)
            if asserts:
                tests.append("\n".join(a.strip() for a in asserts))
    if not tests:
        asserts = [a.strip() for a in _ASSERT_LINE.findall(instruction)]
        asserts = [a for a in asserts if _parses(a)]
        if asserts:
            tests.append("\n".join(asserts))
    return tests


def _only_asserts(block: str) -> bool:
    try:
        tree = ast.parse(block)
    except SyntaxError:
        return False
    body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom))]
    return bool(body) and all(isinstance(n, ast.Assert) for n in body)


def _looks_like_python(block: str) -> bool:
    return _parses(block) and bool(re.search(r"^\s*(def|class|import|from|print|for|while|if)\b", block, re.M))


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except SyntaxError:
        return False


def entry_point(code: str, instruction: str, given: str | None) -> str | None:
    if given:
        return given
    try:
        names = [n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    except SyntaxError:
        return None
    mentioned = [n for n in names if re.search(rf"\b{re.escape(n)}\b", instruction or "")]
    if mentioned:
        return mentioned[0]
    return names[-1] if names else None


def build_program(code: str, tests: list[str], entry: str | None) -> str:
    return "\n\n".join([code, build_tests(tests, entry)])


def build_tests(tests: list[str], entry: str | None) -> str:
    """The test program, run after the code in its namespace."""
    parts = []
    for test in tests:
        parts.append(test)
        if _CHECK.search(test) and entry:
            parts.append(f"check({entry})")
    return "\n\n".join(parts) + "\n"


class CodeExecutionFilter(Filter):
    type = "code_exec"
    Options = CodeExecOptions
    writes = ("exec_status", "exec_stderr_tail", "tests_passed", "tests_count")

    def input_columns(self):
        return (self.options.response_column,)

    def column_types(self):
        return {
            "exec_status": pa.string(),
            "exec_stderr_tail": pa.string(),
            "tests_passed": pa.bool_(),
            "tests_count": pa.int32(),
        }

    def _column(self, table, name):
        return table.column(name).to_pylist() if name and name in table.column_names else [None] * table.num_rows

    def score(self, table, shard):
        o = self.options
        responses = self._column(table, o.response_column)
        instructions = self._column(table, o.instruction_column)
        messages = self._column(table, o.messages_column)
        given_tests = self._column(table, o.tests_column)
        entries = self._column(table, o.entry_point_column)
        domains = self._column(table, o.domain_column)
        limits = SandboxLimits(
            cpu_seconds=o.cpu_seconds,
            wall_seconds=o.wall_seconds,
            memory_mb=o.memory_mb,
            output_bytes=o.output_bytes,
            site_packages=o.site_packages,
            require=tuple(o.require_layers),
            disk_bytes=o.disk_mb * 1024 * 1024,
            disk_inodes=o.disk_inodes,
        )
        layers = sandbox_layers(limits)
        if shard.index == 0:  # once per run: what confined the code on this machine
            for layer in layers:
                shard.count(f"sandbox.layer.{layer}")

        jobs: dict[int, tuple[str, str | None]] = {}
        status = ["skipped"] * table.num_rows
        tests_count = [0] * table.num_rows
        for i in range(table.num_rows):
            if o.domains and domains[i] not in o.domains:
                continue
            response = turn_text(responses[i]) or ""
            instruction = turn_text(instructions[i]) if instructions[i] is not None else turn_text(messages[i], "user")
            code, tests = split_code_and_tests(response)
            if not code.strip():
                status[i] = "no_code"
                continue
            tests += instruction_tests(instruction or "")
            if given_tests[i]:
                tests.append(str(given_tests[i]))
            tests_count[i] = len(tests)
            jobs[i] = (code, build_tests(tests, entry_point(code, instruction or "", entries[i])) if tests else None)

        stderr_tail: list[str | None] = [None] * table.num_rows
        passed: list[bool | None] = [None] * table.num_rows
        with ThreadPoolExecutor(max_workers=o.max_parallel) as pool:
            results = dict(zip(jobs, pool.map(lambda job: run_python(job[0], limits, tests=job[1]), jobs.values())))
        for i, res in results.items():
            if res.status == STATUS_SANDBOX:
                # The machine, not the code: fail the shard loudly rather than drop good data.
                raise RuntimeError(f"code_exec: the sandbox cannot start here: {res.stderr.strip()[-300:]}")
            failed_test = res.status == "error" and tests_count[i] and "AssertionError" in res.stderr
            status[i] = "tests_failed" if failed_test else res.status
            if status[i] == STATUS_OK and tests_count[i] and not res.tests_completed:
                status[i] = "tests_not_run"  # exited before its tests ran to the end
            stderr_tail[i] = res.stderr_tail(o.stderr_tail_chars) if o.stderr_tail_chars else ""
            if tests_count[i]:
                passed[i] = status[i] == STATUS_OK
            shard.count(f"exec.{status[i]}")
        return {
            "exec_status": status,
            "exec_stderr_tail": stderr_tail,
            "tests_passed": passed,
            "tests_count": tests_count,
        }

    def decide(self, row):
        o = self.options
        s = row["exec_status"]
        if s == "skipped":
            return None
        if s == "no_code":
            return "no_code" if o.require_code else None
        if s == STATUS_OK:
            return "no_tests" if (o.require_tests and not row["tests_count"]) else None
        if s in ("tests_failed", "tests_not_run"):
            return s
        return f"exec_{s}"


_LAYERS: dict[SandboxLimits, list[str]] = {}


def sandbox_layers(limits: SandboxLimits) -> list[str]:
    """The layers the sandbox sets up here (probed once per process); a clear error
    when it cannot start or a required layer is missing."""
    if limits not in _LAYERS:
        probe = run_python("pass", limits)
        if probe.status == STATUS_SANDBOX:
            raise RuntimeError(f"code_exec: {probe.stderr.strip().splitlines()[-1].removeprefix('synth-sandbox: ')}")
        _LAYERS[limits] = probe.layers
    return _LAYERS[limits]
