"""The HTML report in a real headless browser (Debian's chromium): it opens offline,
every chart is drawn, the console stays silent; a screenshot is kept as an artefact."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synth.cli import app
from tests.audit.conftest import run_toy

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SYNTH_TEST_ARTIFACTS", REPO / "test-artifacts"))
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? (.*)")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not found: install it (Debian: apt-get install chromium; .ci/run does this)")


def open_in_browser(page: Path, *, screenshot: Path | None = None, height: int = 3000) -> tuple[str, list[str]]:
    """The DOM after scripts ran (or a screenshot) and the console messages."""
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--no-first-run",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network fetch fails loudly
        f"--window-size=1280,{height}",
        f"--user-data-dir={page.parent / '.chromium-profile'}",
    ]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    res = subprocess.run(
        [*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=600
    )  # a loaded CI box is slow
    console = [m.group(1) for m in map(CONSOLE.search, res.stderr.splitlines()) if m]
    return res.stdout, console


def test_console_errors_are_caught(tmp_path):
    """The check below can fail: a broken page is seen as broken."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>missingFunction();</script></body></html>")
    _, console = open_in_browser(bad)
    assert any("missingFunction" in m for m in console)


@pytest.mark.slow
def test_html_report_renders_offline_with_every_chart(tmp_path):
    run = run_toy(tmp_path)
    other = run_toy(tmp_path, name="other", min_words=20, variant=1)
    page = tmp_path / "audit.html"
    res = CliRunner().invoke(
        app,
        [
            "audit",
            str(run),
            "--html",
            str(page),
            "--what-if",
            "toy_min_words.min_words=20",
            "--sweep",
            "toy_max_digits.max_digit_frac",
            "--sweep",
            "toy_min_words.min_words",
            "--overlap",
            "--compare",
            str(other),
        ],
    )
    assert res.exit_code == 0, res.output
    source = page.read_text()
    # self-contained: outside the inlined plotly.js, nothing points at the network
    # (and the browser runs with every host unresolvable, so a fetch would log an error)
    head, _, rest = source.partition("</script>")
    assert "<script" in head and not re.search(r"""(src|href)=["']https?://""", rest) and "@import" not in rest
    charts = source.count('<div class="chart">')
    assert charts >= 9  # funnel, shares, histograms, two sweeps, overlap, comparison
    assert "Sweep 01-toy_min_words.min_words" in source
    dom, console = open_in_browser(page)
    assert console == []
    drawn = dom.count('class="main-svg"')
    assert drawn >= charts, (drawn, charts)  # plotly drew an svg for every chart
    assert dom.count("plotly-graph-div") >= charts
    assert "What if 01-toy_min_words" in dom and "Filter overlap" in dom and "Sweep 02-toy_max_digits" in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "audit-report.png"
    shot.unlink(missing_ok=True)
    _, console = open_in_browser(page, screenshot=shot, height=9000)  # the whole page
    assert console == [] and shot.stat().st_size > 20_000
