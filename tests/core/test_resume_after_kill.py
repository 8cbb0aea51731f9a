"""A run killed with SIGKILL mid-way, re-run with the same command, ends with the
same output as an uninterrupted run: same ids, none missing, none duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

PIPELINE = {
    "name": "toy-resume",
    "seed": 3,
    "stages": [
        {"type": "tests.core.toy_stages:CountSource", "per_shard": 50, "shards": 12},
        {"type": "tests.core.toy_stages:Slow", "sleep": 0.4},
        {"type": "tests.core.toy_stages:DropOdd"},
        {"type": "tests.core.toy_stages:DedupText"},
    ],
}


def _cmd(pipeline: Path, out: Path, fuse: bool) -> list[str]:
    cmd = [sys.executable, "-m", "synth", "run", str(pipeline), "--output", str(out), "--workers", "2"]
    return cmd + ([] if fuse else ["--keep-intermediate"])  # fused is the default


def _output_ids(run: Path) -> list[str]:
    ids = []
    for part in sorted((run / "output").glob("*.parquet")):
        ids += pq.read_table(part).column("id").to_pylist()
    return ids


@pytest.mark.parametrize("fuse", [False, True], ids=["every-stage-written", "fused"])
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, fuse):
    pipeline = tmp_path / "toy.yaml"
    pipeline.write_text(yaml.safe_dump(PIPELINE))
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    clean = tmp_path / "clean"
    subprocess.run(_cmd(pipeline, clean, fuse), cwd=REPO, env=env, check=True, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(pipeline, killed, fuse),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # source, slow and drop_odd run fused: the group commits in drop_odd's folder
    slow_dir = killed / "stages" / ("02-toy_drop_odd" if fuse else "01-toy_slow")
    deadline = time.time() + 60
    while time.time() < deadline and len(list(slow_dir.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(slow_dir.glob("part-*.parquet")))
    assert 3 <= done_before < 12, "the kill should land mid-stage"
    assert not (killed / "output").exists()

    rerun = subprocess.run(_cmd(pipeline, killed, fuse), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr

    clean_ids = _output_ids(clean)
    killed_ids = _output_ids(killed)
    assert len(killed_ids) == len(set(killed_ids))
    assert killed_ids == clean_ids
    assert not list(killed.rglob(".*.tmp-*"))
    # every stage's ledger matches the uninterrupted run's, fused ones included
    for label in ("00-toy_count", "01-toy_slow", "02-toy_drop_odd", "03-toy_dedup_text"):
        for stats in sorted((clean / "stages" / label).glob("part-*.stats.json")):
            again = killed / "stages" / label / stats.name
            strip = lambda d: {k: v for k, v in json.loads(d.read_text()).items() if k != "seconds"}  # noqa: E731
            assert strip(again) == strip(stats), f"{label}/{stats.name}"
    if fuse:
        assert not list((killed / "stages" / "01-toy_slow").glob("part-*.parquet")), "a fused stage writes no shards"
        # the completed run released dedup's input and merged its audit files, as the uninterrupted one did
        assert not list((killed / "stages" / "02-toy_drop_odd").glob("part-*.parquet"))
        for run in (clean, killed):
            assert (
                not list(run.rglob("part-*.profile.json"))
                and (run / "rejected" / "02-toy_drop_odd" / "scores.parquet").exists()
            )
        assert (
            pq.read_table(killed / "rejected" / "02-toy_drop_odd" / "scores.parquet")
            .sort_by([("shard", "ascending"), ("row", "ascending")])
            .equals(
                pq.read_table(clean / "rejected" / "02-toy_drop_odd" / "scores.parquet").sort_by(
                    [("shard", "ascending"), ("row", "ascending")]
                )
            )
        )
