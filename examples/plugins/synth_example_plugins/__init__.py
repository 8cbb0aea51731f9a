"""Two example synth stage plugins: a heuristic filter and an LLM stage."""
