"""Stage `evolve`: Evol-Instruct rounds with its elimination rules (step 2).

Each round draws one operator per instruction (weights in config, seeded by the
record id and round), asks for a rewrite, and eliminates the rewrite when:
  (d) it copies prompt scaffolding ("given prompt", "#Rewritten Prompt#"...),
      or grows by more words than allowed,
  (b) its trial response contains "sorry" and is under 80 words,
  (c) its trial response is only punctuation and stop words,
  (a) a judge finds no information gain over the parent ("Equal").
An eliminated rewrite is noted (counted and sampled in the ledger) and its
parent returns to the pool for the next round, as in the paper. The stage is
one record in, one record out: the last surviving generation, with the list of
operators applied.
"""

from __future__ import annotations

import re
import string

import pyarrow as pa
from pydantic import Field, field_validator

from synth.core.records import content_id
from synth.core.stage import Shard
from synth.llm.stage import LLMStage, LLMStageOptions, SamplingOptions, error_reason
from synth.llm.types import ChatRequest, SamplingParams
from synth.prompts import load_prompt

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "you",
        "your",
        "we",
        "they",
        "he",
        "she",
        "not",
        "no",
        "yes",
        "ok",
    ]
)


class EvolveOptions(LLMStageOptions):
    prompt: str = "evolve/rewrite"
    equality_prompt: str = "evolve/equality"
    response_prompt: str = "respond/answer"
    operators: dict[str, float] = Field(
        default_factory=lambda: {
            "add_constraints": 1,
            "deepen": 1,
            "concretize": 1,
            "increase_reasoning": 1,
            "complicate_input": 1,
            "breadth": 1,
            "clarify": 1,
            "harder": 1,
        },
        description="Operators (defined in the prompt file's data.operators) and their weights.",
    )
    rounds: int = Field(1, ge=1, le=10)
    max_added_words: int = Field(
        20, ge=1, description="A depth rewrite may add at most this many words (the paper: 10-20)."
    )
    added_words_slack: int = Field(
        10, ge=0, description="Tolerance over max_added_words before a rewrite is eliminated."
    )
    scaffolding_phrases: list[str] = Field(
        default_factory=lambda: [
            "given prompt",
            "rewritten prompt",
            "#rewritten prompt#",
            "#given prompt#",
            "given task",
            "rewritten task",
            "original task",
            "how to rewrite",
        ]
    )
    judge_equality: bool = True
    check_response: bool = Field(True, description="Eliminate by a trial response (rules b and c).")
    trial_max_tokens: int = Field(160, ge=16)
    sampling: SamplingOptions = Field(default_factory=lambda: SamplingOptions(temperature=0.7, max_tokens=200))

    @field_validator("operators")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or sum(v.values()) <= 0 or any(w < 0 for w in v.values()):
            raise ValueError("operators needs at least one operator with a positive weight")
        return v


def only_punctuation_and_stop_words(text: str) -> bool:
    tokens = [t.strip(string.punctuation) for t in text.lower().split()]
    return all(not t or t in STOP_WORDS for t in tokens)


def is_sorry_and_short(text: str) -> bool:
    return "sorry" in text.lower() and len(text.split()) < 80


class EvolveInstructions(LLMStage):
    """On the LLMStage base with its own shard loop (`process`): each round sends the
    rewrites, then the trial responses, then the judge's verdicts, each as one batch
    through `call` (usage counted, prompts measured), because a round needs the
    previous round's survivors. It never drops: a failed rewrite is noted and the
    parent goes on."""

    type = "evolve"
    Options = EvolveOptions
    reads = ("id", "instruction")
    outputs = {
        "evolution": pa.list_(pa.string()),
        "evolution_parent": pa.string(),
        "provenance": pa.string(),
        "instruction": pa.string(),
    }

    def setup(self) -> None:
        self.prompt = load_prompt(self.options.prompt)
        self.equality = load_prompt(self.options.equality_prompt)
        self.trial = load_prompt(self.options.response_prompt)
        defined = self.prompt.data.get("operators", {})
        unknown = [op for op in self.options.operators if op not in defined]
        if unknown:
            raise ValueError(
                f"evolve: operators {unknown} are not defined in {self.prompt.path}; defined: {sorted(defined)}"
            )
        self.operator_specs = defined
        self.scaffolding = re.compile("|".join(re.escape(p) for p in self.options.scaffolding_phrases), re.IGNORECASE)

    def _operator(self, shard: Shard, record_id: str, round_no: int) -> str:
        names = [k for k, w in self.options.operators.items() if w > 0]
        return shard.rng(record_id, "operator", round_no).choices(names, [self.options.operators[k] for k in names])[0]

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        rows = table.to_pylist()
        for row in rows:
            row.setdefault("evolution", None)
            row["evolution"] = list(row.get("evolution") or [])
            row["evolution_parent"] = row.get("evolution_parent") or row["instruction"]
        for round_no in range(self.options.rounds):
            ops = [self._operator(shard, r["id"], round_no) for r in rows]
            rewrite_reqs = [
                ChatRequest(
                    self.prompt.render(
                        instruction=r["instruction"],
                        guidance=self.operator_specs[op]["guidance"],
                        max_added_words=self.options.max_added_words,
                    ),
                    self.sampling(shard, {"id": f"{r['id']}:{round_no}:{op}"}),
                    key=f"{r['id']}:r{round_no}",
                )
                for r, op in zip(rows, ops)
            ]
            rewrites = self.call(rewrite_reqs, shard)
            candidates: dict[int, str] = {}
            for i, (r, op, res) in enumerate(zip(rows, ops, rewrites)):
                reason = self._static_check(r, op, res)
                if reason:
                    shard.note({"id": r["id"], "operator": op, "parent": r["instruction"], "rewrite": res.text}, reason)
                else:
                    candidates[i] = res.text.strip()
            if self.options.check_response and candidates:
                candidates = self._check_trial_responses(rows, ops, candidates, shard, round_no)
            if self.options.judge_equality and candidates:
                candidates = self._judge(rows, ops, candidates, shard, round_no)
            for i, text in candidates.items():
                r = rows[i]
                r["evolution"] = r["evolution"] + [ops[i]]
                r["provenance"] = self.provenance(r, rewrites[i], round=round_no, operator=ops[i])
                r["instruction"] = text
                shard.count(f"evolve.accepted.{ops[i]}")
        for r in rows:
            if r["evolution"]:
                r["id"] = content_id("evolved", r["id"], r["instruction"])
        return pa.Table.from_pylist(rows, schema=self.output_schema(table.schema))

    def _static_check(self, row: dict, op: str, res) -> str | None:
        if res.error is not None:
            return error_reason(res)
        text = res.text.strip()
        if not text:
            return "empty_rewrite"
        if self.scaffolding.search(text):
            return "copies_scaffolding"
        if self.operator_specs[op].get("kind") == "depth":
            added = len(text.split()) - len(row["instruction"].split())
            if added > self.options.max_added_words + self.options.added_words_slack:
                return "too_many_added_words"
        if text.lower() == row["instruction"].strip().lower():
            return "unchanged"
        return None

    def _check_trial_responses(
        self, rows, ops, candidates: dict[int, str], shard: Shard, round_no: int
    ) -> dict[int, str]:
        idx = list(candidates)
        trial = SamplingParams(temperature=0.0, max_tokens=self.options.trial_max_tokens)
        reqs = [
            ChatRequest(
                self.trial.render(instruction=candidates[i], domain=rows[i].get("domain") or "general"),
                trial,
                key=f"{rows[i]['id']}:trial{round_no}",
            )
            for i in idx
        ]
        kept = {}
        for i, res in zip(idx, self.call(reqs, shard)):
            reason = None
            if res.error is not None:
                reason = error_reason(res)
            elif is_sorry_and_short(res.text):
                reason = "response_sorry_short"
            elif only_punctuation_and_stop_words(res.text):
                reason = "response_only_stop_words"
            if reason:
                shard.note(
                    {"id": rows[i]["id"], "operator": ops[i], "rewrite": candidates[i], "trial_response": res.text},
                    reason,
                )
            else:
                kept[i] = candidates[i]
        return kept

    def _judge(self, rows, ops, candidates: dict[int, str], shard: Shard, round_no: int) -> dict[int, str]:
        idx = list(candidates)
        greedy = SamplingParams(temperature=0.0, max_tokens=4)
        reqs = [
            ChatRequest(
                self.equality.render(first=rows[i]["instruction"], second=candidates[i]),
                greedy,
                key=f"{rows[i]['id']}:eq{round_no}",
            )
            for i in idx
        ]
        kept = {}
        for i, res in zip(idx, self.call(reqs, shard)):
            verdict = (res.text or "").strip().lower()
            if res.error is not None:
                shard.note({"id": rows[i]["id"], "rewrite": candidates[i]}, error_reason(res))
            elif verdict.startswith("equal"):
                shard.note(
                    {
                        "id": rows[i]["id"],
                        "operator": ops[i],
                        "parent": rows[i]["instruction"],
                        "rewrite": candidates[i],
                    },
                    "no_information_gain",
                )
            else:
                kept[i] = candidates[i]
        return kept
