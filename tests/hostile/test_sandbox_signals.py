"""Sandboxed code (here as root) cannot signal processes outside the
sandbox even without Landlock's scope layer; the active layers are logged once per
run, and a pipeline can require layers and fails clearly when one is missing."""

from __future__ import annotations

import functools
import json
import platform
import subprocess

import pyarrow as pa
import pytest

import synth.filters.heuristic.code_exec as code_exec
from synth.core.stage import Shard
from synth.filters.heuristic.code_exec import CodeExecOptions, CodeExecutionFilter
from synth.filters.heuristic.sandbox import SandboxLimits, available_layers, run_python

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers below are x86_64's")

ATTACK = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
target = {target}
def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [r, ctypes.get_errno()]
out = {{
    "kill": call(62, target, 15),
    "tkill": call(200, target, 15),
    "tgkill": call(234, target, target, 15),
    "rt_sigqueueinfo": call(129, target, 15, 0),
    "pidfd_open": call(434, target, 0),
    "pidfd_send_signal": call(424, 3, 15, 0, 0),
    "kill_self_probe": call(62, os.getpid(), 0),
    "python_has_pidfd_open": hasattr(os, "pidfd_open"),
}}
print(json.dumps(out))
"""
EPERM = 1


@pytest.fixture
def target():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("disabled", [("landlock",), ()], ids=["without-landlock-scope", "all-layers"])
def test_signals_to_outside_processes_are_refused(target, disabled):
    # audit hook off: the kernel layers alone must hold (ctypes would otherwise be refused first)
    limits = SandboxLimits(audit_hook=False, disable=disabled)
    res = run_python(ATTACK.format(target=target.pid), limits)
    assert res.status == "ok", res.stderr
    assert "seccomp" in res.layers and not (disabled and any(layer.startswith("landlock") for layer in res.layers))
    out = json.loads(res.stdout)
    for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "pidfd_open", "pidfd_send_signal"):
        assert out[name] == [-1, EPERM], (name, out[name])
    assert out["kill_self_probe"] == [0, 0]  # signalling itself still works
    assert out["python_has_pidfd_open"] is False
    assert target.poll() is None  # the outside process lives


def test_layers_are_counted_once_per_run_in_the_ledger():
    stage = CodeExecutionFilter(CodeExecOptions(cpu_seconds=2, wall_seconds=5))
    table = pa.Table.from_pylist([{"id": "a", "response": "```python\nprint(1)\n```"}])
    first, second = Shard("03-code_exec", 0, "part-00000", 0), Shard("03-code_exec", 1, "part-00001", 0)
    stage.process(table, first)
    stage.process(table, second)
    layers = {k.removeprefix("sandbox.layer."): v for k, v in first.counters.items() if k.startswith("sandbox.layer.")}
    assert set(layers) == set(available_layers()) and set(layers.values()) == {1}
    assert "seccomp" in layers and "netns" in layers
    assert not any(k.startswith("sandbox.layer.") for k in second.counters)


def test_required_layers_present_run():
    stage = CodeExecutionFilter(
        CodeExecOptions(cpu_seconds=2, wall_seconds=5, require_layers=["netns", "landlock", "seccomp", "disk-quota"])
    )
    table = pa.Table.from_pylist([{"id": "a", "response": "```python\nprint(1)\n```"}])
    out = stage.process(table, Shard("03-code_exec", 0, "part-00000", 0))
    assert out.column("exec_status").to_pylist() == ["ok"]


@pytest.mark.parametrize("missing", ["seccomp", "landlock"])
def test_a_required_layer_missing_is_one_clear_error(monkeypatch, missing):
    # a kernel without the layer, simulated by not setting it up
    monkeypatch.setattr(code_exec, "SandboxLimits", functools.partial(SandboxLimits, disable=(missing,)))
    stage = CodeExecutionFilter(CodeExecOptions(cpu_seconds=2, wall_seconds=5, require_layers=[missing]))
    table = pa.Table.from_pylist([{"id": "a", "response": "```python\nprint(1)\n```"}])
    with pytest.raises(RuntimeError) as err:
        stage.process(table, Shard("03-code_exec", 0, "part-00000", 0))
    message = str(err.value)
    assert "\n" not in message and f"required layers unavailable: {missing}" in message
