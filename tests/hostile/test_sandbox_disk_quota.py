"""The sandbox's scratch directory has a byte and an inode budget; code
that floods it is stopped and counted as `disk_limit`."""

from __future__ import annotations

import pyarrow as pa
import pytest

from synth.core.stage import Shard
from synth.filters.heuristic.code_exec import CodeExecOptions, CodeExecutionFilter
from synth.filters.heuristic.sandbox import SandboxLimits, run_python

MANY_DIRECTORIES = "import os\nfor i in range(20000):\n    os.mkdir(f'd{i}')\nprint('all made')\n"
# each file stays under the per-file limit (RLIMIT_FSIZE): only a total budget stops this
MANY_BYTES = "for i in range(200):\n    with open(f'f{i}', 'wb') as fh:\n        fh.write(b'x' * 900_000)\nprint('all written')\n"
LIMITS = SandboxLimits(disk_bytes=16 * 1024 * 1024, disk_inodes=500, wall_seconds=20, cpu_seconds=10)


@pytest.mark.parametrize("program", [MANY_DIRECTORIES, MANY_BYTES], ids=["inodes", "bytes"])
@pytest.mark.parametrize("disabled", [(), ("disk-quota",)], ids=["tmpfs", "no-mount-namespace"])
def test_flooding_the_scratch_directory_is_disk_limit(program, disabled):
    limits = SandboxLimits(**{**LIMITS.__dict__, "disable": disabled})
    res = run_python(program, limits)
    assert res.status == "disk_limit", (res.status, res.stderr[-500:])
    if not disabled:
        # a tmpfs refuses the write itself; the polled fallback measures after the fact, so a
        # fast writer may finish before the poll (it is still counted disk_limit, its output
        # discarded with its directory)
        assert "all " not in res.stdout
    # where no tmpfs can be mounted, the parent measures the directory and stops the child
    assert ("disk-quota(polled)" if disabled else "disk-quota(tmpfs)") in res.layers


def test_code_exec_counts_disk_limit():
    stage = CodeExecutionFilter(CodeExecOptions(cpu_seconds=10, wall_seconds=20, disk_mb=16, disk_inodes=500))
    table = pa.Table.from_pylist([{"id": "flood", "response": f"```python\n{MANY_DIRECTORIES}```"}])
    shard = Shard("03-code_exec", 0, "part-00000", 0)
    out = stage.process(table, shard)
    assert out.num_rows == 0 and shard.dropped == {"exec_disk_limit": 1}
    assert shard.counters["exec.disk_limit"] == 1
