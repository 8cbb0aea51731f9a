"""Rule and heuristic filters: deterministic checks that need no language model
(response rules, self-consistency voting, code execution, decontamination)."""
