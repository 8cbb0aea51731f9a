"""One prompt loader: chat prompts and kg wording pools from the same files, also
from an installed wheel (the prompts ship inside the package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from synth.prompts import PromptError, load_prompt

REPO = Path(__file__).resolve().parents[2]


def test_chat_prompt_and_kg_wording_share_one_loader():
    chat = load_prompt("respond/answer")
    assert chat.render(instruction="What is 2+2?", domain="math")[-1]["content"]
    pool = load_prompt("kg/system_prompts")
    assert pool.ref.startswith("kg/system_prompts@") and pool.templates and not pool.messages
    single = load_prompt("kg/hermes_system")
    assert "{tools}" in single.template
    with pytest.raises(PromptError, match="wording"):
        single.render()


def test_a_file_needs_exactly_one_body(tmp_path):
    (tmp_path / "both.yaml").write_text(
        "name: both\nversion: 1\ntemplate: hi\nmessages:\n  - {role: user, content: hi}\n"
    )
    (tmp_path / "none.yaml").write_text("name: none\nversion: 1\n")
    for name in ("both", "none"):
        with pytest.raises(PromptError, match="exactly one of messages, template, templates"):
            load_prompt(name, str(tmp_path))


@pytest.mark.slow
def test_built_wheel_ships_the_prompts_and_reads_them_installed(tmp_path):
    # Built from a copy: an in-tree build leaves build/ behind, whose stale files a later wheel would ship.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("synth", "kg", "prompts"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(src),
            "-w",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("synth-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO / "prompts").as_posix() for p in (REPO / "prompts").rglob("*.yaml")}
    assert shipped and {f"synth/prompt_files/{p}" for p in shipped} <= names
    # Installed (unpacked) away from the repo, the package reads its own copy.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "from synth.prompts import load_prompt; print(load_prompt('kg/answers').path); print(load_prompt('critique/grade').ref)"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert str(site / "synth" / "prompt_files") in out.stdout and "critique/grade@" in out.stdout
