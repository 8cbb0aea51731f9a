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

Writes `exec_status` (ok, error, tests_failed, timeout, memory_limit, output_limit, no_code,
skipped), `exec_stderr_tail`, `tests_passed` (null when there were no tests) and
`tests_count`. Drop reasons: `no_code` (only with `require_code`), `no_tests`
(only with `require_tests`), `tests_failed`, `exec_error`, `exec_timeout`,
`exec_memory_limit`, `exec_output_limit`.

Executions run in parallel within a shard, at most `max_parallel` at a time.
"""

from __future__ import annotations

import ast
import re
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Filter, FilterOptions
from synth.filters import code_blocks, turn_text
from synth.filters.sandbox import STATUS_OK, STATUS_SANDBOX, SandboxLimits, run_python

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
    domains: list[str] = Field(default_factory=list, description="Run only rows of these domains (empty: every row with code).")
    require_code: bool = Field(False, description="Drop rows (of the chosen domains) whose response has no Python code.")
    require_tests: bool = Field(False, description="Drop rows that have code but no tests.")
    cpu_seconds: int = Field(5, ge=1)
    wall_seconds: float = Field(10.0, gt=0)
    memory_mb: int = Field(512, ge=64)
    output_bytes: int = Field(64_000, ge=1000)
    max_parallel: int = Field(4, ge=1, description="Concurrent sandboxes within a shard.")
    site_packages: bool = Field(False, description="Let the code import installed packages (default: standard library only).")
    require_layers: list[str] = Field(default_factory=list, description="Fail unless these sandbox layers are active, e.g. [netns, landlock, seccomp].")
    stderr_tail_chars: int = Field(500, ge=0)


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
    parts = [code]
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
        return {"exec_status": pa.string(), "exec_stderr_tail": pa.string(), "tests_passed": pa.bool_(), "tests_count": pa.int32()}

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
        )

        jobs: dict[int, str] = {}
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
            jobs[i] = build_program(code, tests, entry_point(code, instruction or "", entries[i]))

        stderr_tail: list[str | None] = [None] * table.num_rows
        passed: list[bool | None] = [None] * table.num_rows
        with ThreadPoolExecutor(max_workers=o.max_parallel) as pool:
            results = dict(zip(jobs, pool.map(lambda program: run_python(program, limits), jobs.values())))
        for i, res in results.items():
            if res.status == STATUS_SANDBOX:
                # The machine, not the code: fail the shard loudly rather than drop good data.
                raise RuntimeError(f"code_exec: the sandbox cannot start here: {res.stderr.strip()[-300:]}")
            failed_test = res.status == "error" and tests_count[i] and "AssertionError" in res.stderr
            status[i] = "tests_failed" if failed_test else res.status
            stderr_tail[i] = res.stderr_tail(o.stderr_tail_chars) if o.stderr_tail_chars else ""
            if tests_count[i]:
                passed[i] = res.status == STATUS_OK
            shard.count(f"exec.{status[i]}")
        return {"exec_status": status, "exec_stderr_tail": stderr_tail, "tests_passed": passed, "tests_count": tests_count}

    def decide(self, row):
        o = self.options
        s = row["exec_status"]
        if s == "skipped":
            return None
        if s == "no_code":
            return "no_code" if o.require_code else None
        if s == STATUS_OK:
            return "no_tests" if (o.require_tests and not row["tests_count"]) else None
        if s == "tests_failed":
            return s
        return f"exec_{s}"
