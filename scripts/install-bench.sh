#!/usr/bin/env bash
# Peers for benchmarks/ (datatrove and what its readers, extractors and filters
# import), beside synth in ./.venv. Not needed to use or test synth.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -e ".[bench]"
# --no-deps: datatrove[processing] would downgrade trafilatura and overwrite the
# fasttext module synth trains with.
"${PIP[@]}" install --no-deps "datatrove==0.10.1"
echo "benchmark peers installed in $VENV"
