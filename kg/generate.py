"""The sample factory: seeds in, verified tool-use records (or drop reasons) out.

Each sample is a pure function of (graph, config, sample seed), so a shard can be
regenerated, and one sample can be reproduced from the `meta.seed` it carries.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from kg.config import WalkConfig
from kg.conversation import ConversationBuilder
from kg.graph import KnowledgeGraph
from kg.query import PATTERNS, QueryError, QuerySampler, evaluate_ids, relations_of
from kg.tools import Executor, ToolRegistry
from kg.verbalize import LLMVerbalizer, Pending, TemplateVerbalizer
from kg.verify import verify
from synth.core.records import content_id, derive_seed
from synth.prompts import load_prompt

# The kg wording files (under prompts/kg/), whose versions every sample records.
PROMPT_FILES = (
    "system_prompts",
    "question_grammar",
    "answers",
    "reflection",
    "irrelevance",
    "llm_question",
    "hermes_system",
    "llm_back_translate",
)


def prompt_versions() -> dict[str, int]:
    return {name: load_prompt(f"kg/{name}").version for name in PROMPT_FILES}


@dataclass
class Outcome:
    """One seed's result: a record, or a drop reason with what is known about the attempt."""

    seed: int
    record: dict | None = None
    reason: str | None = None
    info: dict = field(default_factory=dict)


SPLITS = ("train", "eval")


def split_members(graph: KnowledgeGraph, cfg: WalkConfig) -> tuple[list[bool] | None, frozenset[int]]:
    """Which entities (and relations) the evaluation split holds out, or (None, {}) without one.

    Membership is a hash of the name alone, so it does not depend on the run seed, the
    sharding or the sample count: every shard and every rerun agrees on it.
    """
    if cfg.eval_split <= 0:
        return None, frozenset()
    cut = int(cfg.eval_split * 2**64)
    anchors = [derive_seed(0, "kg_eval_anchor", name) < cut for name in graph.entities]
    relations: frozenset[int] = frozenset()
    if cfg.eval_relations > 0:
        rcut = int(cfg.eval_relations * 2**64)
        relations = frozenset(i for i, r in enumerate(graph.relations) if derive_seed(0, "kg_eval_relation", r) < rcut)
        if not relations:  # a small graph: hold out at least one relation when asked to
            relations = frozenset(
                {min(range(len(graph.relations)), key=lambda i: derive_seed(0, "kg_eval_relation", graph.relations[i]))}
            )
    return anchors, relations


def probe_patterns(
    sampler: QuerySampler, patterns: list[str], attempts: int, batch: int
) -> dict[str, tuple[str, Counter]]:
    """The patterns this sampler cannot ground within `attempts` tries: {pattern: (reason, failures)}.

    Seeded by the pattern's name only, so every worker reaches the same verdict.
    """
    missing = {}
    for pattern in patterns:
        rng = random.Random(f"kg_probe:{pattern}")
        failures: Counter = Counter()
        found = False
        for _ in range(max(1, attempts // batch)):
            sq, _ = sampler.sample(pattern, rng, batch, failures)
            if sq is not None:
                found = True
                break
        if not found:
            missing[pattern] = (failures.most_common(1)[0][0] if failures else "no_attempt", failures)
    return missing


def sample_seeds(seed: int, start: int, count: int) -> list[int]:
    return [derive_seed(seed, "kg_sample", i) for i in range(start, start + count)]


class SampleFactory:
    def __init__(self, graph: KnowledgeGraph, config: WalkConfig | None = None, engine=None):
        self.graph = graph
        self.cfg = config or WalkConfig()
        self.registry = ToolRegistry(graph)
        self.executor = Executor(self.registry)
        self.held_out_anchors, self.held_out_relations = split_members(graph, self.cfg)
        self.samplers = {split: self._sampler(split) for split in (SPLITS if self.cfg.eval_split > 0 else SPLITS[:1])}
        self.sampler = self.samplers["train"]
        self.templates = TemplateVerbalizer()
        self.builder = ConversationBuilder(graph, self.registry, self.executor, self.cfg)
        self.llm = None
        if self.cfg.verbalizer == "llm":
            if engine is None:
                raise ValueError("the llm verbaliser needs an engine (see synth.llm.open_engine)")
            check = self._same_answers if self.cfg.back_translate else None
            self.llm = LLMVerbalizer(engine, retries=self.cfg.llm_retries, back_translate=check)
        # Patterns the graph cannot produce are found once, up front, and their share goes
        # to the others: unavailable[split][pattern] = (main failure reason, failures).
        self.unavailable: dict[str, dict[str, tuple[str, Counter]]] = {}
        self._choices: dict[str, tuple[list[str], list[float]]] = {}
        requested = [p for p in PATTERNS if self.cfg.patterns.get(p, 0) > 0]
        for split, sampler in self.samplers.items():
            missing = probe_patterns(sampler, requested, self.cfg.probe_attempts, self.cfg.query_attempts)
            self.unavailable[split] = missing
            names = [p for p in requested if p not in missing]
            self._choices[split] = (names, [self.cfg.patterns[p] for p in names])
        if not self._choices["train"][0]:
            why = "; ".join(f"{p}: {r}" for p, (r, _) in self.unavailable["train"].items())
            raise ValueError(f"graph {graph.name} cannot produce any requested pattern ({why})")
        self._versions = prompt_versions()

    def _sampler(self, split: str) -> QuerySampler:
        held = self.held_out_anchors
        kwargs: dict = {}
        if held is not None:
            kwargs["anchor_ok"] = held if split == "eval" else [not h for h in held]
            key = "required_relations" if split == "eval" else "banned_relations"
            kwargs[key] = self.held_out_relations
        try:
            return QuerySampler(
                self.graph,
                self.cfg.max_answers,
                self.cfg.max_intermediate,
                self.cfg.allow_inverse,
                allow_trivial=self.cfg.allow_trivial,
                **kwargs,
            )
        except ValueError:
            if split != "eval":
                raise
            raise ValueError(
                f"graph {self.graph.name}: no held-out entity can start a walk; "
                f"raise eval_split (now {self.cfg.eval_split})"
            ) from None

    def _same_answers(self, original: dict, candidate) -> bool:
        """Back-translation check: does the model's tree give the original's answer set?"""
        try:
            return evaluate_ids(candidate, self.graph) == evaluate_ids(original, self.graph)
        except (QueryError, KeyError, TypeError, AttributeError, RecursionError):
            return False

    def _draft(self, seed: int) -> Outcome:
        rng = random.Random(seed)
        # Drawn only with a split, so a run without one keeps its samples.
        split = "eval" if self.cfg.eval_split > 0 and rng.random() < self.cfg.eval_split else "train"
        sampler = self.samplers[split]
        split_meta = {"split": split} if self.cfg.eval_split > 0 else {}
        if rng.random() < self.cfg.irrelevance_share:
            built = self.builder.build_irrelevant(rng, sampler, self.templates)
            info = {"pattern": "irrelevance", "split": split}
            if built is None:
                return Outcome(seed, reason="no_query_irrelevance", info=info)
            messages, tools, extra = built
            meta = {
                "query": None,
                "answer": [],
                "pattern": "irrelevance",
                "anchors": extra.pop("anchors"),
                **split_meta,
            }
            return Outcome(seed, self._record(seed, messages, tools, meta, extra), info=info)
        names, weights = self._choices[split]
        if not names:
            return Outcome(seed, reason="no_pattern_available", info={"pattern": "none", "split": split})
        pattern = rng.choices(names, weights)[0]
        failures: Counter = Counter()
        sq, why = sampler.sample(pattern, rng, self.cfg.query_attempts, failures)
        info = {"pattern": pattern, "split": split, "failures": dict(failures)}
        if sq is None:
            return Outcome(seed, reason=f"no_query_{pattern}", info={**info, "last_failure": why})
        question = self.templates.question(sq.tree, rng)
        messages, tools, extra = self.builder.build(sq, question, rng)
        meta = {"query": sq.tree, "answer": sq.answer, "pattern": pattern, "anchors": sq.anchors, **split_meta}
        return Outcome(seed, self._record(seed, messages, tools, meta, extra), info=info)

    def _record(self, seed: int, messages: list[dict], tools: list[str], meta: dict, extra: dict) -> dict:
        domain = extra.pop("domain")
        meta = {
            **meta,
            "seed": seed,
            "graph": self.graph.name,
            "verbalizer": "template",
            "prompt_versions": self._versions,
            **extra,
        }
        return {
            "kind": "tool_use",
            "domain": domain,
            "messages": messages,
            "tools": self.registry.tools_json(tools),
            "meta": meta,
        }

    def _finish(self, out: Outcome) -> Outcome:
        rec = out.record
        reason = verify(rec, self.executor)
        if reason is not None:
            return Outcome(out.seed, reason=f"verify_{reason}", info={**out.info, "record": rec})
        rec["meta"] = json.dumps(rec["meta"], ensure_ascii=False, sort_keys=True)
        # The meta (query, answer, seed, variant), the wording and the offered tools fix
        # the whole conversation, so hashing them is hashing the content, more cheaply.
        rec["id"] = content_id(
            "kg_tool_use", rec["meta"], rec["messages"][0]["content"], rec["messages"][1]["content"], rec["tools"]
        )
        return Outcome(out.seed, {"id": rec.pop("id"), **rec}, info=out.info)

    def make(self, seeds: Iterable[int]) -> list[Outcome]:
        """Outcomes for `seeds`, in order. The LLM verbaliser runs once per call, batched."""
        drafts = [self._draft(s) for s in seeds]
        if self.llm is not None:
            todo = [o for o in drafts if o.record is not None and o.record["meta"]["pattern"] != "irrelevance"]
            pending = [
                Pending(
                    key=f"{self.graph.name}:{o.seed}",
                    tree=o.record["meta"]["query"] or {},
                    relations=sorted({r for r, _ in relations_of(o.record["meta"]["query"] or {})}),
                    anchors=o.record["meta"]["anchors"],
                    draft=o.record["messages"][1]["content"],
                )
                for o in todo
            ]
            for o, (question, why) in zip(todo, self.llm.verbalize(pending)):
                if question is None:
                    o.reason, o.info = why, {**o.info, "record": o.record}
                    o.record = None
                    continue
                o.record["meta"]["template_question"] = o.record["messages"][1]["content"]
                o.record["messages"][1]["content"] = question
                o.record["meta"]["verbalizer"] = "llm"
        return [self._finish(o) if o.record is not None else o for o in drafts]

    def iter_records(self, n: int, seed: int = 0, start: int = 0, batch: int = 256):
        """Convenience for scripts: yields outcomes for n consecutive sample seeds."""
        for lo in range(start, start + n, batch):
            yield from self.make(sample_seeds(seed, lo, min(batch, start + n - lo)))
