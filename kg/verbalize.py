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

from kg.tools import relation_parts
from synth.llm.stage import LLM_ERROR
from synth.prompts import load_prompt


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


_PREPOSITIONS = {"of", "with", "in", "by", "to", "for", "from", "on", "at", "into"}


def _third_person(word: str) -> bool:
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "ies", "us", "is"))


def verb_reading(phrase: str, verbs: set[str], freebase: bool) -> str | None:
    """The label as a verb phrase ("affects", "is the result of", "interacts with"), or
    None when it reads as a noun ("derivationally related form", "profession")."""
    words = phrase.split()
    if not words:
        return None
    if words[0] in ("is", "are", "was"):
        return phrase
    if len(words) == 1:
        return phrase if phrase in verbs else None
    if freebase:  # Freebase property paths are nouns ("award nominations nominated for")
        return None
    if words[-1] in _PREPOSITIONS and len(words) <= 4:
        if any(_third_person(w) for w in words[:-1]):
            return phrase  # "interacts with", "co occurs with", "assesses effect of"
        if words[0].endswith("ed"):
            return f"is {phrase}"  # "associated with"
        return f"is the {phrase}"  # "result of", "location of"
    if _third_person(words[0]):
        return phrase  # "exports books"
    return None


class TemplateVerbalizer:
    """Questions from query trees, by a small grammar.

    A flat query (every branch one step from an anchor) is one sentence. A query whose
    sets nest is read as steps, each naming the set the next one starts from ("First
    find the films Sofia Coppola directed. Then find what those were nominated for."),
    which a person can follow where one sentence of nested clauses cannot be.
    """

    name = "template"

    def __init__(self):
        self.grammar = load_prompt("kg/question_grammar").templates
        self._overrides = {str(k): str(v) for k, v in (self.grammar.get("phrases") or {}).items()}
        self._verbs = set(self.grammar.get("verbs") or ())
        self._parts: dict[str, tuple[str | None, str, str | None]] = {}

    def _rel(self, relation: str) -> tuple[str | None, str, str | None]:
        """(subject type, noun phrase, verb phrase or None) of a relation label."""
        got = self._parts.get(relation)
        if got is None:
            subject, phrase, _ = relation_parts(relation)
            phrase = self._overrides.get(phrase, phrase)
            verb = verb_reading(phrase, self._verbs, relation.startswith("/"))
            got = self._parts[relation] = (subject, phrase, verb)
        return got

    # -- one step's noun phrase; nested sets become earlier steps ---------------------
    def _phrase(self, node: dict, rng: random.Random, steps: list[str] | None) -> str:
        g = self.grammar
        if "entity" in node:
            return node["entity"]
        if "relation" in node:
            inner = node["of"]
            single = "entity" in inner
            if single:
                of = inner["entity"]
            elif steps is not None:
                of = self._step(inner, rng, steps)
            else:
                of = self._phrase(inner, rng, None)
            subject, phrase, verb = self._rel(node["relation"])
            inverse = bool(node.get("inverse"))
            if verb is not None:
                pool = ("verb_inverse" if inverse else "verb_forward") + ("" if single else "_set")
                return rng.choice(g[pool]).format(verb=verb, of=of)
            subj = subject or "entity"
            pool = ("inverse" if inverse else "forward") + ("" if single else "_set")
            return rng.choice(g[pool]).format(phrase=phrase, of=of, subject=subj, subjects=plural(subj))
        if "or" in node:
            a, b = (self._phrase(c, rng, steps) for c in node["or"][:2])
            return rng.choice(g["or2"]).format(a=a, b=b)
        if "and" in node:
            pos = [self._phrase(c, rng, steps) for c in node["and"] if "not" not in c]
            neg = [self._phrase(c["not"], rng, steps) for c in node["and"] if "not" in c]
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

    def _step(self, node: dict, rng: random.Random, steps: list[str]) -> str:
        """Make `node` a step of its own and return how the next phrase refers to it."""
        steps.append(self._phrase(node, rng, steps))
        n = len(steps)
        # Read at once by the phrase being built, so "those" is unambiguous; the marker is
        # resolved when the phrase is done (a later step in between gets a number).
        return f"\x00{n}\x00"

    def noun_phrase(self, node: dict, rng: random.Random) -> str:
        """The whole query as one noun phrase (nested clauses and all)."""
        return self._phrase(node, rng, None)

    def steps(self, tree: dict, rng: random.Random) -> list[str]:
        """The query as noun phrases, one per step; the last is what is asked for."""
        steps: list[str] = []
        steps.append(self._phrase(tree, rng, steps))
        out = []
        for k, text in enumerate(steps, start=1):

            def ref(m, k=k):
                n = int(m.group(1))
                return rng.choice(self.grammar["ref"]) if n == k - 1 else self.grammar["ref_far"].format(n=n)

            out.append(re.sub("\x00(\\d+)\x00", ref, text))
        return out

    def question(self, tree: dict, rng: random.Random) -> str:
        parts = self.steps(tree, rng)
        g = self.grammar
        if len(parts) == 1:
            return rng.choice(g["questions"]).format(q=parts[0])
        lines = [_capital(rng.choice(g["first_step"]).format(q=parts[0]))]
        lines += [rng.choice(g["next_step"]).format(q=p) for p in parts[1:-1]]
        lines.append(rng.choice(g["last_step"]).format(q=parts[-1]))
        return " ".join(lines)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


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

    def __init__(
        self,
        engine: Any,
        retries: int = 2,
        temperature: float = 0.8,
        max_tokens: int = 128,
        request_types: tuple | None = None,
        back_translate: Callable[[dict, Any], bool] | None = None,
        back_max_tokens: int = 256,
    ):
        self.engine = engine
        self.retries = retries
        self.prompt = load_prompt("kg/llm_question")
        # back_translate(original tree, model's tree) -> same answer set? None: no check.
        self.back_translate = back_translate
        self.back_prompt = load_prompt("kg/llm_back_translate")
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
        text = self.prompt.template.format(
            query=json.dumps(item.tree, ensure_ascii=False),
            draft=item.draft,
            anchors=", ".join(f'"{a}"' for a in item.anchors),
        )
        # The attempt must be part of the request's identity, which is what the cache
        # hashes (model, messages, sampling), not `key`: a per-attempt seed makes a retry
        # a new draw instead of the rejected text read back (engines that ignore seeds
        # still get a cache miss and sample anew).
        key = f"{item.key}:q{attempt}"
        sampling = self.SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=attempt_seed(key))
        return self.ChatRequest(messages=[{"role": "user", "content": text}], sampling=sampling, key=key)

    def _back_request(self, item: Pending, question: str, attempt: int):
        text = self.back_prompt.template.format(
            question=question,
            anchors=", ".join(f'"{a}"' for a in item.anchors),
            relations=", ".join(f'"{r}"' for r in item.relations),
        )
        # Greedy: the check should not depend on luck; the paraphrase is what varies.
        sampling = self.SamplingParams(temperature=0.0, max_tokens=self.back_max_tokens)
        return self.ChatRequest(
            messages=[{"role": "user", "content": text}], sampling=sampling, key=f"{item.key}:b{attempt}"
        )

    def _check_back(
        self, items: list[Pending], candidates: dict[int, str], attempt: int, out: list, again: list[int]
    ) -> None:
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
                    out[i] = (None, LLM_ERROR)
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
