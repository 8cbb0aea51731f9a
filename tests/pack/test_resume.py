"""kill -9 at any point of `synth pack`, run the same command again: byte-identical files."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pack.helpers import chat, default_tokenizer_dir, text, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def tree_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".work" not in p.parts
    }


def command(inputs, out, tok):
    return [
        sys.executable,
        "-m",
        "synth",
        "pack",
        *map(str, inputs),
        "--tokenizer",
        str(tok),
        "--seq-len",
        "512",
        "--output",
        str(out),
        "--window",
        "64",
    ]


def env():
    return {**os.environ, "PYTHONPATH": str(REPO)}


def kill_when(cmd, ready, timeout=240):
    proc = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if ready():
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    files = []
    for f in range(4):
        recs = [text(f * 10000 + i, 40 + (i * 37) % 300) for i in range(500)] + [chat(f * 1000 + i) for i in range(200)]
        files.append(write_jsonl(d / f"part{f}.jsonl", recs))
    return files


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_bytes(inputs, tmp_path):
    tok = default_tokenizer_dir()
    ref = tmp_path / "ref"
    subprocess.run(command(inputs, ref, tok), env=env(), check=True, capture_output=True)
    out = tmp_path / "out"
    # killed while tokenising (after the first committed shard) ...
    assert kill_when(command(inputs, out, tok), lambda: any((out / ".work" / "tokens").glob("part-*.parquet")))
    assert not (out / "manifest.json").exists()

    # ... then, resumed, killed again once packed sequences are being written (they are
    # written while later files are still being tokenised) ...
    def writing() -> bool:
        staged = out / ".work" / "staging" / "tokens.bin"
        return staged.exists() and staged.stat().st_size > 0 and len(list(shards.glob("part-*.parquet"))) >= 2

    shards = out / ".work" / "tokens"
    assert kill_when(command(inputs, out, tok), writing)
    assert not (out / "manifest.json").exists()
    # ... and run to the end: the same bytes as the uninterrupted pack, and no shard's
    # temporary file left behind (a killed pack's, planted here too, is removed)
    (shards / ".part-00003.parquet.tmp-999999").write_bytes(b"torn")
    done = subprocess.run(command(inputs, out, tok), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "of 4 input files already tokenised" in done.stderr
    assert tree_digest(out) == tree_digest(ref)
    assert len(tree_digest(ref)) == 6
    assert not list(out.rglob(".*.tmp-*"))
