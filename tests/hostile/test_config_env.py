"""`${VAR}` expands only where a value is a path or endpoint (or as an
explicit `${env:VAR}`), `$` elsewhere stands, and no expanded value reaches
run.json or the stage metadata on disk."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from synth.core.config import ConfigError, build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline
from synth.core.stage import SourceStage, StageOptions

SECRET = "s3cr3t-token-do-not-write"


class EnvOptions(StageOptions):
    pattern: str = ""
    prompt: str = ""
    token: str = ""
    data_path: str = ""
    endpoint_url: str = ""


class EnvSource(SourceStage):
    type = "env_probe"
    Options = EnvOptions
    writes = ("id", "text")

    def list_shards(self, inputs):
        return [{}]

    def read(self, spec, shard):
        o = self.options
        yield {"id": "only", "text": json.dumps([o.pattern, o.prompt, o.token, o.data_path, o.endpoint_url])}

    def schema(self):
        return pa.schema([("id", pa.string()), ("text", pa.string())])


STAGE = f"{__name__}:EnvSource"


def pipeline(**options):
    return {"name": "env", "seed": 0, "stages": [{"type": STAGE, **options}]}


def test_dollar_in_a_regex_or_prompt_stands(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    raw = pipeline(pattern=r"^\d+\$$|${HOME}", prompt="Cost: $5, see ${HOME}")
    opts = build_pipeline(raw).stages[0].stage.options
    assert opts.pattern == r"^\d+\$$|${HOME}"
    assert opts.prompt == "Cost: $5, see ${HOME}"


def test_paths_and_endpoints_expand_and_env_prefix_expands_anywhere(monkeypatch):
    monkeypatch.setenv("CORPUS", "/data/corpus")
    monkeypatch.setenv("JUDGE_HOST", "judge.internal")
    monkeypatch.setenv("API_TOKEN", SECRET)
    raw = pipeline(
        data_path="${CORPUS}/x.jsonl",
        endpoint_url="http://${JUDGE_HOST}:8000/v1",
        token="${env:API_TOKEN}",
        prompt="${API_TOKEN}",
    )
    opts = build_pipeline(raw).stages[0].stage.options
    assert opts.data_path == "/data/corpus/x.jsonl"
    assert opts.endpoint_url == "http://judge.internal:8000/v1"
    assert opts.token == SECRET
    assert opts.prompt == "${API_TOKEN}"


def test_unset_variable_names_the_field(monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.data_path: names \$\{NOPE_NOT_SET\}.*not set"):
        build_pipeline(pipeline(data_path="${NOPE_NOT_SET}/a"))


def test_expanded_secrets_never_reach_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("API_TOKEN", SECRET)
    raw = pipeline(token="${env:API_TOKEN}")
    pipe = build_pipeline(raw)
    result = run_pipeline(
        pipe,
        PipelineSource(raw=pipe.raw, path=None, seed=0),
        tmp_path / "run",
        inputs=["unused"],
        executor=LocalExecutor(1),
    )
    assert result.output  # the stage ran with the secret...
    for path in (tmp_path / "run").rglob("*.json"):
        assert SECRET not in path.read_text(), path  # ...and no json file on disk holds it
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["config"]["stages"][0]["token"] == "${env:API_TOKEN}"
    meta = json.loads(next((tmp_path / "run" / "stages").rglob("_stage.json")).read_text())
    assert meta["options"]["token"] == "${env:API_TOKEN}"
