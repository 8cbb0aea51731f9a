"""Existing instruction data through synth's filters: a JSONL of conversations read by
`read_records`, then `rules` + `critique` + `decontaminate`, all through `synth run`."""

import json

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

import synth.llm.stage as llm_stage
from synth.cli import app
from synth.core.ledger import audit
from synth.llm.fake import FakeEngine

runner = CliRunner()
GOOD = (
    "Explain why the sky looks blue during the day.",
    "Sunlight is scattered by the molecules of the air, and blue light, with its short wavelength, is scattered far more than red light, so the sky looks blue from every direction.",
)
WEAK = (
    "Name the largest planet of the solar system.",
    "Jupiter is the largest planet of the solar system: its mass is more than twice that of all the other planets together.",
)
REFUSAL = ("Write a short poem about autumn leaves.", "I'm sorry, but as an AI language model I cannot write poems.")


def _conversations(path, gsm_question):
    def chat(user, assistant, system=None):
        turns = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
        return {"messages": turns, "team": "t1"}

    rows = [
        chat(*GOOD, system="You are a helpful teacher."),
        chat(*WEAK),
        chat(*REFUSAL),
        chat(gsm_question, "She sells 9 eggs a day at 2 dollars each, so she makes 18 dollars."),
        {"messages": [{"role": "user", "content": "Is anyone there?"}], "team": "t2"},
    ]
    multi = chat(*GOOD)
    multi["messages"] += [
        {"role": "user", "content": "And at sunset?"},
        {
            "role": "assistant",
            "content": "At sunset the light crosses more air, so the blue is scattered away and reds remain.",
        },
    ]
    multi["messages"][0]["content"] = "Why is the sky blue? Explain it simply for a child of ten."
    rows.append(multi)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pipeline(tmp_path, shared_data, **critique):
    path = tmp_path / "byod.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "byod",
                "stages": [
                    {"type": "read_records", "messages_column": "messages"},
                    {"type": "rules"},
                    {"type": "critique", "sampling": {"temperature": 0.0, "max_tokens": 96}, **critique},
                    {
                        "type": "decontaminate",
                        "benchmarks": [str(shared_data / "benchmarks/gsm8k/test.jsonl")],
                        "columns": ["instruction", "response"],
                    },
                ],
            }
        )
    )
    return path


def _run(tmp_path, shared_data, **critique):
    src = tmp_path / "chats.jsonl"
    gsm = json.loads((shared_data / "benchmarks/gsm8k/test.jsonl").read_text().splitlines()[0])["question"]
    _conversations(src, gsm)
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            str(_pipeline(tmp_path, shared_data, **critique)),
            "--input",
            str(src),
            "--output",
            str(run),
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [r for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return rows, {s["stage"]: s for s in audit(run)["stages"]}


def test_conversations_through_rules_critique_decontaminate_fake_engine(tmp_path, shared_data, monkeypatch):
    def grade(req, i):
        weak = WEAK[0] in req.messages[-1]["content"]
        return json.dumps({"rationale": "thin" if weak else "correct and clear", "grade": 2 if weak else 4})

    monkeypatch.setattr(llm_stage, "shared_engine", lambda *a, **k: FakeEngine(grade))
    rows, stages = _run(tmp_path, shared_data, min_grade=3)
    assert stages["00-read_records"]["dropped"] == {"no_user_assistant_exchange": 1}
    assert stages["00-read_records"]["counters"]["read_records.multi_turn_first_exchange"] == 1
    assert stages["01-rules"]["dropped"] == {"refusal": 1}
    assert stages["02-critique"]["dropped"] == {"critique_below_min_grade": 1}
    assert sum(stages["03-decontaminate"]["dropped"].values()) == 1
    assert sorted(r["instruction"] for r in rows) == sorted(
        [GOOD[0], "Why is the sky blue? Explain it simply for a child of ten."]
    )
    for r in rows:  # every input column kept, and every filter's scores
        assert r["team"] == "t1" and r["messages"][-1]["role"] == "assistant"
        assert r["critique_grade"] == 4 and "rule_refusal" in r and "decontam_hits" in r
    for s in list(stages.values())[1:]:
        assert s["balanced"]


@pytest.mark.vllm
def test_conversations_through_rules_critique_decontaminate_real_engine(tmp_path, shared_data):
    """The embedded 135M model cannot judge answers, so critique only annotates here."""
    rows, stages = _run(tmp_path, shared_data, annotate_only=True)
    assert stages["01-rules"]["dropped"] == {"refusal": 1}
    assert stages["02-critique"]["in"] == 4 and stages["02-critique"]["balanced"]
    assert sum(stages["03-decontaminate"]["dropped"].values()) == 1
    assert rows and all(r["critique_grade"] in (1, 2, 3, 4) and r["critique_model"] for r in rows)
    assert any(k.startswith("llm.") for k in stages["02-critique"]["counters"])
