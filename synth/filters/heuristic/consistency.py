"""Self-consistency (stage `consistency`): vote on the final answers of n sampled
responses and keep the majority's response.

Reads `responses_column` (default `responses`: a list of n sampled strings, as
the respond stage writes them) and, when present, `finish_reasons_column`
(default `finish_reasons`; samples cut at max tokens do not vote unless
`count_truncated`). Writes `response` (the chosen sample: the first, or the
shortest, of those with the winning answer), `answer` (normalised, see
answers.py; answers that math-verify finds equal vote together, see
answer_equivalence.py), `agreement` (votes for it / samples that were drawn) and
`consistency_votes`. When a `messages` column is present its assistant turn
becomes the chosen response.

Drop reasons: `no_answer_extracted` (no sample has a final answer),
`no_majority` (the top answer has fewer than `min_agree` votes, or less than
`min_fraction` of the samples, or ties with another answer). Rows outside
`domains`, or with fewer than `min_samples` samples, pass untouched apart from
`response` (their first sample) and null `agreement`/`consistency_votes`.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Filter, FilterOptions
from synth.filters import with_turn
from synth.filters.heuristic.answer_equivalence import answer_keys
from synth.filters.heuristic.answers import extract_answer, extract_raw_answer


class ConsistencyOptions(FilterOptions):
    responses_column: str = "responses"
    finish_reasons_column: str | None = "finish_reasons"
    response_column: str = Field("response", description="Written: the chosen response.")
    messages_column: str | None = Field(
        "messages", description="When present, its assistant turn is set to the chosen response."
    )
    min_agree: int = Field(2, ge=1, description="k: votes the winning answer needs.")
    min_fraction: float = Field(0.0, ge=0, le=1, description="...and at least this share of the samples drawn.")
    count_truncated: bool = Field(False, description="Let samples that hit max tokens vote.")
    last_number_fallback: bool = Field(
        True, description="Without an explicit answer marker, vote with the last number."
    )
    pick: Literal["first", "shortest"] = "first"
    equivalence: Literal["math_verify", "normalize"] = Field(
        "math_verify",
        description="math_verify: answers math-verify finds equal vote together (plain numbers and letters by the normaliser); normalize: equal normalised strings only.",
    )
    domain_column: str = "domain"
    domains: list[str] = Field(
        default_factory=list,
        description="Vote only in these domains (empty: all); other rows pass with their first sample.",
    )
    min_samples: int = Field(
        2, ge=1, description="Rows with fewer samples pass with their first sample (nothing to vote on)."
    )


class SelfConsistency(Filter):
    type = "consistency"
    Options = ConsistencyOptions

    def input_columns(self):
        return (self.options.responses_column,)

    def output_columns(self):
        return (self.options.response_column, "answer", "agreement", "consistency_votes")

    def column_types(self):
        return {
            self.options.response_column: pa.string(),
            "answer": pa.string(),
            "agreement": pa.float32(),
            "consistency_votes": pa.int32(),
        }

    def vote(
        self, samples: list[str | None], finishes: list[str | None] | None
    ) -> tuple[str | None, str | None, int, int]:
        """(chosen response, answer, votes, samples drawn); answer None = nothing extracted."""
        o = self.options
        raws = []
        for i, text in enumerate(samples):
            cut = finishes is not None and i < len(finishes) and finishes[i] == "length"
            raws.append(None if (cut and not o.count_truncated) else extract_raw_answer(text, o.last_number_fallback))
        answers = answer_keys(raws, o.equivalence)
        counts = Counter(a for a in answers if a is not None)
        if not counts:
            return (samples[0] if samples else None), None, 0, len(samples)
        ranked = counts.most_common()
        answer, votes = ranked[0]
        if len(ranked) > 1 and ranked[1][1] == votes:
            votes = -votes  # a tie: no answer wins (the sign marks it for decide)
        winners = [s for s, a in zip(samples, answers) if a == answer]
        chosen = min(winners, key=len) if o.pick == "shortest" else winners[0]
        return chosen, answer, votes, len(samples)

    def score(self, table, shard):
        o = self.options
        samples_col = table.column(o.responses_column).to_pylist()
        fcol = o.finish_reasons_column
        finishes = table.column(fcol).to_pylist() if fcol and fcol in table.column_names else [None] * table.num_rows
        domains = (
            table.column(o.domain_column).to_pylist()
            if o.domain_column in table.column_names
            else [None] * table.num_rows
        )
        chosen, answers, agreement, votes = [], [], [], []
        for samples, fins, domain in zip(samples_col, finishes, domains):
            samples = list(samples or [])
            if len(samples) < o.min_samples or (o.domains and domain not in o.domains):
                # Not voted on: consistency_votes stays null and decide() keeps the row.
                chosen.append(samples[0] if samples else None)
                answers.append(extract_answer(samples[0], o.last_number_fallback) if samples else None)
                votes.append(None)
                agreement.append(None)
                continue
            response, answer, k, n = self.vote(samples, fins)
            chosen.append(response)
            answers.append(answer)
            votes.append(k)
            agreement.append(abs(k) / n if n else 0.0)
        out = {o.response_column: chosen, "answer": answers, "agreement": agreement, "consistency_votes": votes}
        mcol = o.messages_column
        if mcol and mcol in table.column_names:
            msgs = table.column(mcol).to_pylist()
            updated = [with_turn(m, r) if r is not None else m for m, r in zip(msgs, chosen)]
            out[mcol] = pa.array(updated, type=table.schema.field(mcol).type)
        return out

    def decide(self, row):
        if row["consistency_votes"] is None:
            return None
        if row["answer"] is None:
            return "no_answer_extracted"
        k = row["consistency_votes"]
        if k < self.options.min_agree or row["agreement"] < self.options.min_fraction:
            return "no_majority"
        return None
