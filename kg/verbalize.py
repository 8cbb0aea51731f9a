"""Questions from query trees: a template verbaliser and an LLM verbaliser.

The template verbaliser composes a noun phrase for the answer set bottom-up from
wording pools (prompts/kg/question_grammar.yaml) and wraps it in a question frame.
The LLM verbaliser asks a model (through synth's LLM layer) to rewrite that literal
reading naturally; a question that does not name every anchor is retried with a
new key and finally dropped with a reason.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kg.prompts import load_prompt
from kg.tools import relation_parts


def plural(word: str) -> str:
    if word.endswith("s"):
        return word  # "games", "series": already plural or invariable
    if word.endswith(("x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def join_names(names: list[str], joiner: str = " and ") -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + joiner + names[-1]


class TemplateVerbalizer:
    name = "template"

    def __init__(self):
        self.grammar = load_prompt("question_grammar")["templates"]
        self._parts: dict[str, tuple[str | None, str]] = {}

    def _rel(self, relation: str) -> tuple[str | None, str]:
        got = self._parts.get(relation)
        if got is None:
            subject, phrase, _ = relation_parts(relation)
            got = self._parts[relation] = (subject, phrase)
        return got

    def noun_phrase(self, node: dict, rng: random.Random) -> str:
        g = self.grammar
        if "entity" in node:
            return node["entity"]
        if "relation" in node:
            inner = self.noun_phrase(node["of"], rng)
            subject, phrase = self._rel(node["relation"])
            if node.get("inverse"):
                subj = subject or "entity"
                pool = g["inverse"] if "entity" in node["of"] else g["inverse_set"]
                return rng.choice(pool).format(phrase=phrase, of=inner, subject=subj, subjects=plural(subj))
            pool = g["forward"] if "entity" in node["of"] else g["forward_set"]
            return rng.choice(pool).format(phrase=phrase, of=inner)
        if "or" in node:
            a, b = (self.noun_phrase(c, rng) for c in node["or"][:2])
            return rng.choice(g["or2"]).format(a=a, b=b)
        if "and" in node:
            pos = [self.noun_phrase(c, rng) for c in node["and"] if "not" not in c]
            neg = [self.noun_phrase(c["not"], rng) for c in node["and"] if "not" in c]
            if neg and len(pos) == 1:
                return rng.choice(g["and_not"]).format(a=pos[0], b=neg[0])
            if neg and len(pos) == 2:
                return rng.choice(g["and2_not"]).format(a=pos[0], b=pos[1], c=neg[0])
            if len(pos) == 2:
                return rng.choice(g["and2"]).format(a=pos[0], b=pos[1])
            if len(pos) == 3:
                return rng.choice(g["and3"]).format(a=pos[0], b=pos[1], c=pos[2])
            raise ValueError("unsupported 'and' arity")
        raise ValueError(f"cannot verbalise node {sorted(node)}")

    def question(self, tree: dict, rng: random.Random) -> str:
        q = self.noun_phrase(tree, rng)
        return rng.choice(self.grammar["questions"]).format(q=q)


def attempt_seed(key: str) -> int:
    """A stable 31-bit seed for one attempt of one request."""
    return zlib.crc32(key.encode("utf-8")) & 0x7FFFFFFF


def mentions_all(text: str, anchors: list[str]) -> list[str]:
    """The anchors `text` does not mention (case-insensitive, exact spelling otherwise)."""
    low = text.lower()
    return [a for a in anchors if a.lower() not in low]


@dataclass
class Pending:
    """One sample waiting for an LLM question."""

    key: str
    tree: dict
    anchors: list[str]
    draft: str
    relations: list[str] = field(default_factory=list)


class LLMVerbalizer:
    """Batch verbaliser over synth's LLM layer (`Engine.generate(list[ChatRequest])`).

    Works with any engine honouring that interface, including `synth.llm.FakeEngine`.
    """

    name = "llm"

    def __init__(self, engine: Any, retries: int = 2, temperature: float = 0.8, max_tokens: int = 128,
                 request_types: tuple | None = None,
                 back_translate: Callable[[dict, Any], bool] | None = None, relations: list[str] | None = None,
                 back_max_tokens: int = 256):
        self.engine = engine
        self.retries = retries
        self.prompt = load_prompt("llm_question")
        # back_translate(original tree, model's tree) -> same answer set? None: no check.
        self.back_translate = back_translate
        self.back_prompt = load_prompt("llm_back_translate")
        self.back_max_tokens = back_max_tokens
        # What happened to each paraphrase, read (and reset) by the stage for the ledger.
        self.stats: Counter = Counter()
        if request_types is None:
            from synth.llm import (  # imported late: optional dependency
                ChatRequest,
                SamplingParams,
            )

            request_types = (ChatRequest, SamplingParams)
        self.ChatRequest, self.SamplingParams = request_types
        self.temperature = temperature
        self.max_tokens = max_tokens

    def _request(self, item: Pending, attempt: int):
        text = self.prompt["template"].format(
            query=json.dumps(item.tree, ensure_ascii=False), draft=item.draft,
            anchors=", ".join(f'"{a}"' for a in item.anchors))
        # The attempt must be part of the request's identity, which is what the cache
        # hashes (model, messages, sampling), not `key`: a per-attempt seed makes a retry
        # a new draw instead of the rejected text read back (engines that ignore seeds
        # still get a cache miss and sample anew).
        key = f"{item.key}:q{attempt}"
        sampling = self.SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens,
                                       seed=attempt_seed(key))
        return self.ChatRequest(messages=[{"role": "user", "content": text}], sampling=sampling, key=key)

    def _back_request(self, item: Pending, question: str, attempt: int):
        text = self.back_prompt["template"].format(
            question=question, anchors=", ".join(f'"{a}"' for a in item.anchors),
            relations=", ".join(f'"{r}"' for r in item.relations))
        # Greedy: the check should not depend on luck; the paraphrase is what varies.
        sampling = self.SamplingParams(temperature=0.0, max_tokens=self.back_max_tokens)
        return self.ChatRequest(messages=[{"role": "user", "content": text}], sampling=sampling,
                                key=f"{item.key}:b{attempt}")

    def _check_back(self, items: list[Pending], candidates: dict[int, str], attempt: int,
                    out: list, again: list[int]) -> None:
        """Keep a paraphrase only when the model's own query tree for it has the same answers."""
        order = sorted(candidates)
        results = self.engine.generate([self._back_request(items[i], candidates[i], attempt) for i in order])
        for i, res in zip(order, results):
            texts = getattr(res, "texts", None) or []
            tree = parse_tree(texts[0]) if texts and not getattr(res, "error", None) else None
            if tree is None:
                reason = "llm_back_translation_unparsable"
            elif not self.back_translate(items[i].tree, tree):
                reason = "llm_back_translation_mismatch"
            else:
                out[i] = (candidates[i], None)
                self.stats["back_translation.accepted"] += 1
                continue
            self.stats[f"back_translation.{reason.removeprefix('llm_back_translation_')}"] += 1
            out[i] = (None, reason)
            again.append(i)

    def verbalize(self, items: list[Pending]) -> list[tuple[str | None, str | None]]:
        """(question, None) or (None, drop reason) per item, in order."""
        out: list[tuple[str | None, str | None]] = [(None, "llm_missing_anchor")] * len(items)
        todo = list(range(len(items)))
        for attempt in range(self.retries + 1):
            if not todo:
                break
            results = self.engine.generate([self._request(items[i], attempt) for i in todo])
            again = []
            candidates: dict[int, str] = {}
            for i, res in zip(todo, results):
                if getattr(res, "error", None):
                    out[i] = (None, "llm_error")
                    again.append(i)
                    continue
                texts = getattr(res, "texts", None) or []
                text = clean_question(texts[0]) if texts else ""
                if not text:
                    out[i] = (None, "llm_empty")
                    again.append(i)
                elif mentions_all(text, items[i].anchors):
                    out[i] = (None, "llm_missing_anchor")
                    again.append(i)
                elif (problem := question_problem(text, items[i].draft)) is not None:
                    out[i] = (None, problem)
                    again.append(i)
                elif self.back_translate is not None:
                    candidates[i] = text
                else:
                    out[i] = (text, None)
            if candidates:
                self._check_back(items, candidates, attempt, out, again)
            todo = sorted(again)
        for question, _ in out:
            self.stats["questions.accepted" if question is not None else "questions.rejected"] += 1
        return out


_LABEL = re.compile(r"^\s*(?:rewritten\s+)?question\s*:\s*", re.I)
# Signs that the model echoed the prompt or talked about it instead of asking.
_ECHO = re.compile(r"[{}]|\bjson\b|\brewrit|\bquery\b|relation path", re.I)


def clean_question(text: str) -> str:
    """First non-empty line, without quotes or a 'Question:' label the model may add."""
    for line in text.strip().splitlines():
        line = _LABEL.sub("", line.strip()).strip().strip('"').strip()
        if line:
            return line
    return ""


def question_problem(text: str, draft: str) -> str | None:
    """Why an LLM question is unusable (besides missing anchors), or None."""
    if _ECHO.search(text):
        return "llm_echoed_prompt"
    if len(text) > max(400, 3 * len(draft)):
        return "llm_too_long"
    return None


def parse_tree(text: str) -> dict | None:
    """The first JSON object in a model's answer (code fences and chatter around it allowed)."""
    start = text.find("{")
    while start >= 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None
