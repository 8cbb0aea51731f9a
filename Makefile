# The two commands of README.md:
#   make demo   set up everything, then run the main job on the embedded defaults
#   make test   set up everything, then run the test suite
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synth-installed

.PHONY: setup demo test test-fast clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

demo: setup
	$(BIN)/synth models prepare-default
	$(BIN)/synth run pipelines/demo.yaml --output runs/demo
	$(BIN)/synth audit runs/demo

test: setup
	$(BIN)/python -m pytest

# Everything but the tests that start a real vLLM engine.
test-fast: setup
	$(BIN)/python -m pytest -m "not vllm"

clean-demo:
	rm -rf runs/demo
