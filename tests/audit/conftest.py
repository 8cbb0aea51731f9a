import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app

T = "tests.audit.toy"


def toy_pipeline(path, min_words=10, variant=0, name="toyaudit", extra_stage=False):
    stages = [
        {"type": f"{T}:SyntheticText", "per_shard": 200, "shards": 3, "variant": variant},
        {"type": f"{T}:MinWords", "min_words": min_words},
        {"type": f"{T}:MaxDigits"},
    ]
    if extra_stage:
        stages.append({"type": f"{T}:MaxDigits", "name": "digits_again", "max_digit_frac": 0.1})
    path.write_text(yaml.safe_dump({"name": name, "seed": 3, "stages": stages}))
    return path


def run_toy(tmp, name="run", keep=True, **kw):
    pipe = toy_pipeline(tmp / f"{name}.yaml", **kw)
    run = tmp / name
    # --keep-intermediate: every stage's shards (the what-if reads them); fused (the
    # default): the filters' stored scores of every row
    flags = ["--keep-intermediate"] if keep else []
    res = CliRunner().invoke(app, ["run", str(pipe), "--output", str(run), "--workers", "1", *flags])
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture(scope="module", params=["keep-intermediate", "fused"])
def toy_run(request, tmp_path_factory):
    return run_toy(tmp_path_factory.mktemp("audit"), keep=request.param == "keep-intermediate")
