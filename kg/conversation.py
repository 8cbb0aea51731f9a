"""Conversations from queries: system prompt, question, step-by-step tool calls, final answer.

The query tree compiles to tool calls: a projection is a relation-tool call on the
names its child produced, an "and" is `intersect_sets` (then `set_difference` for
its "not"), an "or" is `union_sets`. Calls whose inputs are all known at the same
time (the branches of 2i, 3i, 2u...) go in one assistant message as parallel calls.
Every result comes from the executor, so the conversation is true of the graph by
construction; `kg.verify` checks it again independently.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from kg.graph import KnowledgeGraph
from kg.query import SampledQuery, relations_of
from kg.tools import DIFFERENCE, INTERSECT, LOOKUP, UNION, Executor, ToolRegistry, dump
from kg.verbalize import join_names
from synth.prompts import load_prompt

ERROR_KINDS = ("unknown_entity", "wrong_type", "unexpected_argument", "missing_argument", "unknown_tool")


@dataclass
class Step:
    name: str
    args: dict
    result: dict
    level: int

    @property
    def names(self) -> list[str]:
        return self.result.get("entities", [])


def call_id(rng: random.Random) -> str:
    return f"call_{rng.getrandbits(48):012x}"


def tool_call(cid: str, name: str, args: dict | str) -> dict:
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def msg(
    role: str,
    content: str | None = None,
    tool_calls: list | None = None,
    tool_call_id: str | None = None,
    name: str | None = None,
    weight: int | None = None,
) -> dict:
    # Every message has every key so the Parquet column has one struct type.
    # weight=0 (OpenAI fine-tuning convention): a turn kept for context but never trained on.
    return {
        "role": role,
        "content": content,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
        "name": name,
        "weight": weight,
    }


def domain_of(graph: KnowledgeGraph, relation: str | None) -> str:
    if relation and relation.startswith("/"):
        return relation.strip("/").split("/")[0]
    return graph.name


class ConversationBuilder:
    def __init__(self, graph: KnowledgeGraph, registry: ToolRegistry, executor: Executor, config):
        self.g = graph
        self.reg = registry
        self.ex = executor
        self.cfg = config
        self.system_prompts = load_prompt("kg/system_prompts").templates
        self.answers = load_prompt("kg/answers").templates
        self.reflection = load_prompt("kg/reflection").templates
        self.irrelevance = load_prompt("kg/irrelevance").templates
        self.relation_tool_names = sorted(registry.by_name)
        by_domain: dict[str, list[str]] = {}
        for t in registry.by_name.values():
            by_domain.setdefault(domain_of(graph, t.relation), []).append(t.name)
        self.tools_by_domain = {d: sorted(v) for d, v in by_domain.items()}

    # -- plan ------------------------------------------------------------------
    def plan(self, tree: dict) -> list[Step]:
        steps: list[Step] = []
        self._compile(tree, steps)
        return steps

    def _run(self, steps: list[Step], name: str, args: dict, level: int) -> tuple[list[str], int]:
        step = Step(name, args, self.ex.call(name, args), level)
        steps.append(step)
        return step.names, level

    def _compile(self, node: dict, steps: list[Step]) -> tuple[list[str], int]:
        if "entity" in node:
            return [node["entity"]], 0
        if "relation" in node:
            names, level = self._compile(node["of"], steps)
            dr = self.g.directed_relation(node["relation"], bool(node.get("inverse")))
            return self._run(steps, self.reg.by_dr[dr].name, {"entities": names}, level + 1)
        if "or" in node:
            parts = [self._compile(c, steps) for c in node["or"]]
            return self._run(steps, UNION, {"sets": [p[0] for p in parts]}, max(p[1] for p in parts) + 1)
        if "and" in node:
            pos = [self._compile(c, steps) for c in node["and"] if "not" not in c]
            neg = [self._compile(c["not"], steps) for c in node["and"] if "not" in c]
            if len(pos) > 1:
                base = self._run(steps, INTERSECT, {"sets": [p[0] for p in pos]}, max(p[1] for p in pos) + 1)
            else:
                base = pos[0]
            for names, level in neg:
                base = self._run(steps, DIFFERENCE, {"base": base[0], "exclude": names}, max(base[1], level) + 1)
            return base
        raise ValueError(f"cannot compile node {sorted(node)}")

    # -- tools offered ------------------------------------------------------------
    def offered_tools(
        self, needed: list[str], rng: random.Random, exclude: set[str] = frozenset(), domain: str | None = None
    ) -> list[str]:
        lo, hi = self.cfg.distractors
        k = rng.randint(lo, hi)
        chosen = list(dict.fromkeys(needed))
        taken = set(chosen) | set(exclude)
        # Half the distractors from the same domain: near misses teach tool choice.
        near = [n for n in self.tools_by_domain.get(domain or "", []) if n not in taken]
        for _ in range(k // 2):
            if not near:
                break
            pick = near.pop(rng.randrange(len(near)))
            chosen.append(pick)
            taken.add(pick)
        pool = self.relation_tool_names
        tries = 0
        while len(chosen) < len(set(needed)) + k and tries < 4 * k + 10:
            tries += 1
            pick = (
                pool[rng.randrange(len(pool))]
                if rng.random() < 0.85
                else rng.choice([INTERSECT, UNION, DIFFERENCE, LOOKUP])
            )
            if pick not in taken:
                chosen.append(pick)
                taken.add(pick)
        rng.shuffle(chosen)
        return chosen

    # -- conversations -----------------------------------------------------------
    def build(self, sq: SampledQuery, question: str, rng: random.Random) -> tuple[list[dict], list[str], dict]:
        """(messages, offered tool names, extra meta) for an answerable query."""
        steps = self.plan(sq.tree)
        messages = [msg("system", rng.choice(self.system_prompts)), msg("user", question)]
        extra: dict = {"variant": "plain"}
        needed = [s.name for s in steps]
        if rng.random() < self.cfg.lookup_share:
            lookups = [Step(LOOKUP, {"name": a}, self.ex.call(LOOKUP, {"name": a}), 0) for a in sq.anchors]
            steps = lookups + steps
            needed.append(LOOKUP)
            extra["lookup"] = True
        levels: dict[int, list[Step]] = {}
        for s in steps:
            levels.setdefault(s.level, []).append(s)
        wrong_at = None
        if rng.random() < self.cfg.error_share:
            order = sorted(levels)
            wrong_at = order[rng.randrange(len(order))]
        wrong_name = None
        for level in sorted(levels):
            group = levels[level]
            corrupt = None
            if level == wrong_at:
                i = rng.randrange(len(group))
                corrupt = self._corrupt(group[i], sq, rng)
            calls, results = [], []
            fix = None
            for s in group:
                cid = call_id(rng)
                if corrupt is not None and s is corrupt["step"]:
                    calls.append(tool_call(cid, corrupt["name"], corrupt["args"]))
                    results.append(msg("tool", dump(corrupt["result"]), tool_call_id=cid, name=corrupt["name"]))
                    fix = s
                else:
                    calls.append(tool_call(cid, s.name, s.args))
                    results.append(msg("tool", dump(s.result), tool_call_id=cid, name=s.name))
            # The deliberately wrong call is context for the recovery, not something to learn.
            messages.append(msg("assistant", None, tool_calls=calls, weight=0 if fix is not None else None))
            messages.extend(results)
            if fix is not None:
                note = rng.choice(self.reflection[corrupt["kind"]]).format(
                    tool=fix.name, bad=corrupt["bad"], good=corrupt["good"]
                )
                cid = call_id(rng)
                messages.append(msg("assistant", note, tool_calls=[tool_call(cid, fix.name, fix.args)]))
                messages.append(msg("tool", dump(fix.result), tool_call_id=cid, name=fix.name))
                extra["variant"] = "self_correction"
                extra["error_kind"] = corrupt["kind"]
                wrong_name = corrupt["name"] if corrupt["kind"] == "unknown_tool" else None
        messages.append(msg("assistant", self.final_answer(sq.answer, rng)))
        rels = relations_of(sq.tree)
        domain = domain_of(self.g, rels[0][0] if rels else None)
        tools = self.offered_tools(needed, rng, exclude={wrong_name} if wrong_name else set(), domain=domain)
        extra["domain"] = domain
        extra["tool_calls"] = sum(len(m["tool_calls"] or []) for m in messages)
        return messages, tools, extra

    def final_answer(self, answer: list[str], rng: random.Random) -> str:
        pool = self.answers["one"] if len(answer) == 1 else self.answers["many"]
        return rng.choice(pool).format(answers=join_names(answer, self.answers.get("joiner", " and ")), n=len(answer))

    def _corrupt(self, step: Step, sq: SampledQuery, rng: random.Random) -> dict | None:
        """A plausible wrong version of `step`'s call; its result is the executor's error."""
        kinds = list(ERROR_KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            made = self._corruption(kind, step, rng)
            if made is None:
                continue
            name, args, bad, good = made
            result = self.ex.call(name, args)
            if "error" not in result:
                continue
            if kind == "unknown_entity" and good not in result["error"].get("suggestions", []):
                continue  # the fix must be something the error pointed to
            return {"step": step, "kind": kind, "name": name, "args": args, "bad": bad, "good": good, "result": result}
        return None

    def _corruption(self, kind: str, step: Step, rng: random.Random):
        relation_tool = step.name in self.reg.by_name
        if kind == "unknown_entity":
            key = "entities" if relation_tool else ("name" if step.name == LOOKUP else None)
            if key is None:
                return None
            good = step.args[key][0] if key == "entities" else step.args[key]
            bad = misspell(good, rng)
            if bad is None or bad in self.g.entity_index:
                return None
            args = dict(step.args)
            args[key] = [bad, *step.args[key][1:]] if key == "entities" else bad
            return step.name, args, bad, good
        if kind == "wrong_type":
            if not relation_tool or len(step.args["entities"]) != 1:
                return None
            return step.name, {"entities": step.args["entities"][0]}, step.args["entities"][0], "entities"
        if kind == "unexpected_argument":
            if not relation_tool:
                return None
            return step.name, {"entity": step.args["entities"]}, "entity", "entities"
        if kind == "missing_argument":
            if step.name != DIFFERENCE:
                return None
            return step.name, {"base": step.args["base"]}, "exclude", "exclude"
        if kind == "unknown_tool":
            if not relation_tool:
                return None
            bad = wrong_tool_name(step.name, rng)
            if bad in self.reg.by_name or bad == step.name:
                return None
            return bad, step.args, bad, step.name
        return None

    def build_irrelevant(self, rng: random.Random, sampler, verbalizer) -> tuple[list[dict], list[str], dict] | None:
        """A request no offered tool serves, answered without a call."""
        messages = [msg("system", rng.choice(self.system_prompts))]
        if rng.random() < 0.5:
            sq, _ = sampler.sample("1p", rng, attempts=20)
            if sq is None:
                return None
            relation, inverse = relations_of(sq.tree)[0]
            r = self.g.relation_index[relation]
            hidden = {self.reg.by_dr[2 * r].name, self.reg.by_dr[2 * r + 1].name}
            question = verbalizer.question(sq.tree, rng)
            phrase = self.reg.by_dr[2 * r].phrase
            reply = rng.choice(self.irrelevance["missing_relation_replies"]).format(phrase=phrase)
            domain = domain_of(self.g, relation)
            extra = {
                "variant": "irrelevance",
                "unavailable_relation": relation,
                "anchors": sq.anchors,
                "domain": domain,
            }
            tools = self.offered_tools([], rng, exclude=hidden, domain=domain)
        else:
            entity = self.g.entities[sampler.walkable[rng.randrange(len(sampler.walkable))]]
            question = rng.choice(self.irrelevance["off_domain_requests"]).format(entity=entity)
            reply = rng.choice(self.irrelevance["off_domain_replies"])
            extra = {"variant": "irrelevance", "unavailable_relation": None, "anchors": [entity], "domain": self.g.name}
            tools = self.offered_tools([], rng)
        if not tools:
            tools = [LOOKUP]
        messages += [msg("user", question), msg("assistant", reply)]
        extra["tool_calls"] = 0
        return messages, tools, extra


def misspell(name: str, rng: random.Random) -> str | None:
    """A typo a model could make: a dropped, doubled or swapped letter, or lost capitals."""
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    if len(letters) < 4:
        return None
    op = rng.randrange(4)
    i = letters[rng.randrange(1, len(letters) - 1)]
    if op == 0:
        out = name[:i] + name[i + 1 :]
    elif op == 1:
        out = name[:i] + name[i] + name[i:]
    elif op == 2 and i + 1 < len(name) and name[i + 1] != name[i]:
        out = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    else:
        out = name.lower() if name.lower() != name else name[:i] + name[i + 1 :]
    return out if out != name else None


def wrong_tool_name(name: str, rng: random.Random) -> str:
    parts = name.split("_")
    if rng.random() < 0.5 and len(parts) > 2:
        return "_".join(parts[:-1])  # a shortened name
    if name.startswith("get_"):
        return "fetch_" + name[4:]
    if name.startswith("find_"):
        return "search_" + name[5:]
    return name + "_tool"
