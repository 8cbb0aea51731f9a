"""The audit on synth's own ingest filters (real WARC, langid, Gopher, C4): re-tuning is
exact against a rerun, and the overlap matrix covers every CPU filter."""

import json

import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app

runner = CliRunner()


def _ingest(tmp_path, shared_data, name, min_words, keep=True):
    pipe = tmp_path / f"{name}.yaml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "ingest-audit",
                "stages": [
                    {"type": "read"},
                    {"type": "extract_html", "extractor": "resiliparse"},
                    {"type": "split_passages", "max_chars": 2000, "min_chars": 200},
                    {"type": "langid", "min_score": 0.65},
                    {"type": "gopher_quality", "min_words": min_words},
                    {"type": "c4_quality", "min_sentences": 3},
                ],
            }
        )
    )
    run = tmp_path / name
    flags = ["--keep-intermediate"] if keep else []
    res = runner.invoke(
        app,
        [
            "run",
            str(pipe),
            "--output",
            str(run),
            "--workers",
            "1",
            *flags,
            "--input",
            str(shared_data / "warc" / "aut-2008-crawl.warc.gz"),
        ],
    )
    assert res.exit_code == 0, res.output
    return run


@pytest.mark.slow
def test_what_if_and_overlap_on_real_ingest_filters(tmp_path, shared_data):
    run = _ingest(
        tmp_path, shared_data, "a", 50, keep=False
    )  # fused: re-decided from stored scores, overlap input recomputed
    res = runner.invoke(app, ["audit", str(run), "--json", "--what-if", "gopher_quality.min_words=120", "--overlap"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    w = report["what_if"][0]
    assert w["exact"] and w["newly_dropped"] > 0
    rerun = _ingest(tmp_path, shared_data, "b", 120)
    out_b = json.loads(runner.invoke(app, ["audit", str(rerun), "--json"]).output)
    assert w["kept_after"] == out_b["stages"][4]["out"]
    assert report["profiles"]["04-gopher_quality"]["thresholds"]["gopher_words"] == {"option": "min_words", "value": 50}
    assert "en" in report["profiles"]["05-c4_quality"]["categorical"]["language"]
    o = report["overlap"]
    assert (
        o["filters"] == ["03-langid", "04-gopher_quality", "05-c4_quality"] and o["sampled_from"] == "02-split_passages"
    )
    assert all(o["matrix"][i][i] == o["drops"][i] for i in range(3))
