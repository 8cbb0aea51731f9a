"""The sample factory: seeds in, verified tool-use records (or drop reasons) out.

Each sample is a pure function of (graph, config, sample seed), so a shard can be
regenerated, and one sample can be reproduced from the `meta.seed` it carries.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from kg.config import WalkConfig
from kg.conversation import ConversationBuilder
from kg.graph import KnowledgeGraph
from kg.prompts import prompt_versions
from kg.query import PATTERNS, QuerySampler
from kg.tools import Executor, ToolRegistry
from kg.verbalize import LLMVerbalizer, Pending, TemplateVerbalizer
from kg.verify import verify
from synth.core.records import content_id, derive_seed


@dataclass
class Outcome:
    """One seed's result: a record, or a drop reason with what is known about the attempt."""

    seed: int
    record: dict | None = None
    reason: str | None = None
    info: dict = field(default_factory=dict)


def sample_seeds(seed: int, start: int, count: int) -> list[int]:
    return [derive_seed(seed, "kg_sample", i) for i in range(start, start + count)]


class SampleFactory:
    def __init__(self, graph: KnowledgeGraph, config: WalkConfig | None = None, engine=None):
        self.graph = graph
        self.cfg = config or WalkConfig()
        self.registry = ToolRegistry(graph)
        self.executor = Executor(self.registry)
        self.sampler = QuerySampler(graph, self.cfg.max_answers, self.cfg.max_intermediate, self.cfg.allow_inverse)
        self.templates = TemplateVerbalizer()
        self.builder = ConversationBuilder(graph, self.registry, self.executor, self.cfg)
        self.llm = None
        if self.cfg.verbalizer == "llm":
            if engine is None:
                raise ValueError("the llm verbaliser needs an engine (see synth.llm.open_engine)")
            self.llm = LLMVerbalizer(engine, retries=self.cfg.llm_retries)
        names = [p for p in PATTERNS if self.cfg.patterns.get(p, 0) > 0]
        self._patterns = names
        self._weights = [self.cfg.patterns[p] for p in names]
        self._versions = prompt_versions()

    def _draft(self, seed: int) -> Outcome:
        rng = random.Random(seed)
        if rng.random() < self.cfg.irrelevance_share:
            built = self.builder.build_irrelevant(rng, self.sampler, self.templates)
            if built is None:
                return Outcome(seed, reason="no_query_irrelevance", info={"pattern": "irrelevance"})
            messages, tools, extra = built
            meta = {"query": None, "answer": [], "pattern": "irrelevance", "anchors": extra.pop("anchors")}
            return Outcome(seed, self._record(seed, messages, tools, meta, extra), info={"pattern": "irrelevance"})
        pattern = rng.choices(self._patterns, self._weights)[0]
        sq, why = self.sampler.sample(pattern, rng, self.cfg.query_attempts)
        if sq is None:
            return Outcome(seed, reason=f"no_query_{pattern}", info={"pattern": pattern, "last_failure": why})
        question = self.templates.question(sq.tree, rng)
        messages, tools, extra = self.builder.build(sq, question, rng)
        meta = {"query": sq.tree, "answer": sq.answer, "pattern": pattern, "anchors": sq.anchors}
        return Outcome(seed, self._record(seed, messages, tools, meta, extra), info={"pattern": pattern})

    def _record(self, seed: int, messages: list[dict], tools: list[str], meta: dict, extra: dict) -> dict:
        domain = extra.pop("domain")
        meta = {**meta, "seed": seed, "graph": self.graph.name, "verbalizer": "template",
                "prompt_versions": self._versions, **extra}
        return {"kind": "tool_use", "domain": domain, "messages": messages,
                "tools": self.registry.tools_json(tools), "meta": meta}

    def _finish(self, out: Outcome) -> Outcome:
        rec = out.record
        reason = verify(rec, self.executor)
        if reason is not None:
            return Outcome(out.seed, reason=f"verify_{reason}", info={**out.info, "record": rec})
        rec["meta"] = json.dumps(rec["meta"], ensure_ascii=False, sort_keys=True)
        # The meta (query, answer, seed, variant), the wording and the offered tools fix
        # the whole conversation, so hashing them is hashing the content, more cheaply.
        rec["id"] = content_id("kg_tool_use", rec["meta"], rec["messages"][0]["content"],
                               rec["messages"][1]["content"], rec["tools"])
        return Outcome(out.seed, {"id": rec.pop("id"), **rec}, info=out.info)

    def make(self, seeds: Iterable[int]) -> list[Outcome]:
        """Outcomes for `seeds`, in order. The LLM verbaliser runs once per call, batched."""
        drafts = [self._draft(s) for s in seeds]
        if self.llm is not None:
            todo = [o for o in drafts if o.record is not None and o.record["meta"]["pattern"] != "irrelevance"]
            pending = [Pending(key=f"{self.graph.name}:{o.seed}", tree=o.record["meta"]["query"] or {},
                               anchors=o.record["meta"]["anchors"], draft=o.record["messages"][1]["content"])
                       for o in todo]
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
