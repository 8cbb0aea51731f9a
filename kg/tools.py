"""Relations as callable tools, and the executor that answers tool calls against the graph.

Every relation gives two tools: the forward one (from a head, the tails) and the
inverse one (from a tail, the heads). Relation tools take a list of entity names
and return the union of their neighbours, so a multi-hop question is one call
per hop instead of one call per intermediate entity. Set tools combine results;
`lookup_entity` resolves a name (and suggests close names when it does not exist).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass

from kg.graph import KnowledgeGraph

MAX_TOOL_NAME = 64  # OpenAI and most serving stacks reject longer function names
INTERSECT, UNION, DIFFERENCE, LOOKUP = "intersect_sets", "union_sets", "set_difference", "lookup_entity"


@dataclass(frozen=True)
class RelationTool:
    name: str
    relation: str
    inverse: bool
    dr: int  # directed relation id in the graph index
    description: str
    subject: str  # what the argument entities are ("film"), for prompts
    phrase: str  # noun phrase for questions: "directed by"
    schema: dict


def _words(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return re.sub(r"[^A-Za-z0-9]+", " ", text).strip().lower()


def _ident(text: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", _words(text))).strip("_") or "relation"


def relation_parts(relation: str) -> tuple[str | None, str, str | None]:
    """(subject type, property phrase, object type hint) read from a relation name.

    Freebase paths are `/domain/type/property`, and mediated ones chain two paths
    with `.` (`/award/award_winner/awards_won./award/award_honor/award_winner`):
    the head's type is the first path's type, the property is what the last path
    points at, qualified by the first property when they differ.
    """
    if relation.startswith("/"):
        hops = [h.strip("/").split("/") for h in relation.split("./")]
        first = hops[0]
        subject = first[1] if len(first) >= 2 else None
        props = [h[-1] for h in hops if h]
        if len(props) > 1 and props[-1] != props[0]:
            phrase = f"{_words(props[0])} {_words(props[-1])}"
        else:
            phrase = _words(props[-1])
        return (_words(subject) if subject else None), phrase, None
    if relation.startswith("http") or "#" in relation:
        local = re.split(r"[#/]", relation.rstrip("/#"))[-1]
        return None, _words(local), None
    return None, _words(relation), None


def _entities_schema(about: str) -> dict:
    return {
        "type": "object",
        "properties": {
            "entities": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "description": f"Exact names of the {about} to start from (as given by the user or returned by another tool).",
            }
        },
        "required": ["entities"],
        "additionalProperties": False,
    }


def _unique(name: str, taken: set[str]) -> str:
    name = name[:MAX_TOOL_NAME]
    base, k = name, 2
    while name in taken:
        suffix = f"_{k}"
        name = base[: MAX_TOOL_NAME - len(suffix)] + suffix
        k += 1
    taken.add(name)
    return name


def _sets_tool(name: str, description: str) -> dict:
    """The schema of a tool over two or more lists of entity names (intersection, union)."""
    sets = {
        "type": "array",
        "minItems": 2,
        "items": {"type": "array", "items": {"type": "string"}},
        "description": "Two or more lists of entity names.",
    }
    parameters = {"type": "object", "properties": {"sets": sets}, "required": ["sets"], "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


class ToolRegistry:
    """All tools of one graph: relation tools by directed relation, plus the fixed tools."""

    def __init__(self, graph: KnowledgeGraph):
        self.graph = graph
        taken = {INTERSECT, UNION, DIFFERENCE, LOOKUP}
        self.by_dr: dict[int, RelationTool] = {}
        for r, relation in enumerate(graph.relations):
            subject, phrase, _ = relation_parts(relation)
            ident = _ident(phrase)
            subj_ident = _ident(subject) if subject else None
            # forward: from heads to tails
            fname = _unique(f"get_{subj_ident}_{ident}" if subj_ident else f"get_{ident}", taken)
            about = f"{subject} entities" if subject else "entities"
            fdesc = (
                f"Given one or more {about}, return their '{phrase}' (relation {relation}): "
                f"every entity X such that ({'the ' + subject if subject else 'the entity'}, {relation}, X) holds."
            )
            self.by_dr[2 * r] = RelationTool(
                fname, relation, False, 2 * r, fdesc, subject or "entity", phrase, self._schema(fname, fdesc, about)
            )
            # inverse: from tails to heads
            iname = _unique(f"find_{subj_ident}_by_{ident}" if subj_ident else f"find_by_{ident}", taken)
            what = subject or "entity"
            idesc = (
                f"Inverse of {fname}: given one or more entities, return every {what} "
                f"whose '{phrase}' includes one of them: every X such that (X, {relation}, the entity) holds."
            )
            self.by_dr[2 * r + 1] = RelationTool(
                iname, relation, True, 2 * r + 1, idesc, "entity", phrase, self._schema(iname, idesc, "entities")
            )
        self.by_name: dict[str, RelationTool] = {t.name: t for t in self.by_dr.values()}
        self.fixed: dict[str, dict] = {
            INTERSECT: _sets_tool(
                INTERSECT, "Return the entities that appear in every one of the given lists (set intersection)."
            ),
            UNION: _sets_tool(UNION, "Return the entities that appear in at least one of the given lists (set union)."),
            DIFFERENCE: {
                "type": "function",
                "function": {
                    "name": DIFFERENCE,
                    "description": "Return the entities of `base` that are not in `exclude` (set difference).",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "base": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "Entities to keep from.",
                            },
                            "exclude": {
                                "type": "array",
                                "items": {"type": "string"},
                                "description": "Entities to remove.",
                            },
                        },
                        "required": ["base", "exclude"],
                        "additionalProperties": False,
                    },
                },
            },
            LOOKUP: {
                "type": "function",
                "function": {
                    "name": LOOKUP,
                    "description": "Check that an entity exists in the knowledge graph and return its exact name and id; "
                    "suggests close matches when it does not.",
                    "parameters": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "description": "The entity name to look up."}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                },
            },
        }
        self.known_names = frozenset(self.all_names())
        self._schema_json: dict[str, str] = {}
        self._lower_names: dict[str, list[str]] | None = None

    @staticmethod
    def _schema(name: str, description: str, about: str) -> dict:
        return {
            "type": "function",
            "function": {"name": name, "description": description, "parameters": _entities_schema(about)},
        }

    def schema_json(self, name: str) -> str:
        """One tool's schema as JSON, encoded once: every sample lists several tools."""
        cached = self._schema_json.get(name)
        if cached is None:
            cached = self._schema_json[name] = json.dumps(self.schema(name), ensure_ascii=False)
        return cached

    def tools_json(self, names: list[str]) -> str:
        return "[" + ", ".join(self.schema_json(n) for n in names) + "]"

    def schema(self, name: str) -> dict:
        if name in self.fixed:
            return self.fixed[name]
        return self.by_name[name].schema

    def all_names(self) -> list[str]:
        return [*self.by_name, *self.fixed]

    # -- execution -------------------------------------------------------------
    def suggestions(self, name: str, n: int = 3) -> list[str]:
        """Entity names close to `name`: same letters ignoring case, else within two edits.

        difflib over every name costs tens of milliseconds on FB15k-237, so candidates come
        from a single-deletion index (a name and each of its one-letter deletions point
        back to the name), which finds every name one insertion, deletion, substitution or
        swap away; difflib then only ranks those few.
        """
        if self._lower_names is None:
            low: dict[str, list[str]] = {}
            deletions: dict[str, set[str]] = {}
            for e in self.graph.entities:
                key = e.lower()
                low.setdefault(key, []).append(e)
                for variant in _deletions(key):
                    deletions.setdefault(variant, set()).add(key)
            self._lower_names, self._deletions = low, deletions
        key = name.strip().lower()
        exact = self._lower_names.get(key)
        if exact:
            return exact[:n]
        pool: set[str] = set()
        for variant in (key, *_deletions(key)):
            pool |= self._deletions.get(variant, set())
        ranked = sorted(pool, key=lambda c: (-difflib.SequenceMatcher(None, key, c).ratio(), c))
        return [self._lower_names[c][0] for c in ranked[:n]]

    def tool_suggestions(self, name: str, n: int = 3) -> list[str]:
        """Tools a wrong tool name probably meant: same name after the verb, or a longer form."""
        tail = name.split("_", 1)[-1]
        hits = [t for t in sorted(self.known_names) if t.startswith(name) or t.split("_", 1)[-1] == tail]
        return hits[:n]


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))} if len(word) > 1 else set()


def error(kind: str, message: str, **extra) -> dict:
    return {"error": {"type": kind, "message": message, **extra}}


class Executor:
    """Answers tool calls against the graph. Results and errors are plain JSON-able dicts."""

    def __init__(self, registry: ToolRegistry):
        self.registry = registry
        self.graph = registry.graph

    def call(self, name: str, arguments: str | dict | None) -> dict:
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return error("invalid_json", f"arguments are not valid JSON: {exc.msg}")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return error("invalid_arguments", "arguments must be a JSON object")
        tool = self.registry.by_name.get(name)
        if tool is not None:
            return self._relation(tool, arguments)
        if name in (INTERSECT, UNION):
            return self._combine(name, arguments)
        if name == DIFFERENCE:
            return self._difference(arguments)
        if name == LOOKUP:
            return self._lookup(arguments)
        return error("unknown_tool", f"no tool named '{name}'", suggestions=self.registry.tool_suggestions(name))

    def result_text(self, name: str, arguments: str | dict | None) -> str:
        return dump(self.call(name, arguments))

    # -- argument checks ---------------------------------------------------------
    def _names(self, arguments: dict, key: str, allowed: set[str]) -> tuple[list[int] | None, dict | None]:
        extra = sorted(set(arguments) - allowed)
        if extra:
            return None, error("unexpected_argument", f"unexpected argument(s): {', '.join(extra)}", arguments=extra)
        if key not in arguments:
            return None, error("missing_argument", f"missing required argument '{key}'", argument=key)
        value = arguments[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None, error(
                "wrong_type",
                f"argument '{key}' must be an array of entity names (strings), got {type(value).__name__}",
                argument=key,
            )
        return self._resolve(value, key)

    def _resolve(self, names: list[str], key: str) -> tuple[list[int] | None, dict | None]:
        index = self.graph.entity_index
        ids, unknown = [], []
        for n in names:
            i = index.get(n)
            if i is None:
                unknown.append(n)
            else:
                ids.append(i)
        if unknown:
            return None, error(
                "unknown_entity",
                f"unknown entity: {unknown[0]!r}",
                argument=key,
                entities=unknown,
                suggestions=self.registry.suggestions(unknown[0]),
            )
        return ids, None

    def _relation(self, tool: RelationTool, arguments: dict) -> dict:
        ids, err = self._names(arguments, "entities", {"entities"})
        if err:
            return err
        if not ids:
            return error("wrong_type", "argument 'entities' must not be empty", argument="entities")
        return entity_result(self.graph, self.graph.project(ids, tool.dr))

    def _sets(self, arguments: dict) -> tuple[list[set[int]] | None, dict | None]:
        extra = sorted(set(arguments) - {"sets"})
        if extra:
            return None, error("unexpected_argument", f"unexpected argument(s): {', '.join(extra)}", arguments=extra)
        if "sets" not in arguments:
            return None, error("missing_argument", "missing required argument 'sets'", argument="sets")
        sets = arguments["sets"]
        if (
            not isinstance(sets, list)
            or len(sets) < 2
            or not all(isinstance(s, list) and all(isinstance(v, str) for v in s) for s in sets)
        ):
            return None, error(
                "wrong_type", "argument 'sets' must be an array of at least two arrays of entity names", argument="sets"
            )
        out = []
        for s in sets:
            ids, err = self._resolve(s, "sets")
            if err:
                return None, err
            out.append(set(ids))
        return out, None

    def _combine(self, name: str, arguments: dict) -> dict:
        sets, err = self._sets(arguments)
        if err:
            return err
        result = set.intersection(*sets) if name == INTERSECT else set.union(*sets)
        return entity_result(self.graph, result)

    def _difference(self, arguments: dict) -> dict:
        extra = sorted(set(arguments) - {"base", "exclude"})
        if extra:
            return error("unexpected_argument", f"unexpected argument(s): {', '.join(extra)}", arguments=extra)
        parts = []
        for key in ("base", "exclude"):
            if key not in arguments:
                return error("missing_argument", f"missing required argument '{key}'", argument=key)
            value = arguments[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return error("wrong_type", f"argument '{key}' must be an array of entity names", argument=key)
            ids, err = self._resolve(value, key)
            if err:
                return err
            parts.append(set(ids))
        return entity_result(self.graph, parts[0] - parts[1])

    def _lookup(self, arguments: dict) -> dict:
        extra = sorted(set(arguments) - {"name"})
        if extra:
            return error("unexpected_argument", f"unexpected argument(s): {', '.join(extra)}", arguments=extra)
        if "name" not in arguments:
            return error("missing_argument", "missing required argument 'name'", argument="name")
        name = arguments["name"]
        if not isinstance(name, str):
            return error("wrong_type", f"argument 'name' must be a string, got {type(name).__name__}", argument="name")
        i = self.graph.entity_index.get(name)
        if i is None:
            return error(
                "unknown_entity",
                f"unknown entity: {name!r}",
                argument="name",
                entities=[name],
                suggestions=self.registry.suggestions(name),
            )
        out = {"entity": name, "found": True}
        if self.graph.entity_ids[i]:
            out["id"] = self.graph.entity_ids[i]
        return out


def entity_result(graph: KnowledgeGraph, ids) -> dict:
    names = sorted(graph.entities[i] for i in ids)
    return {"entities": names, "count": len(names)}


def dump(obj) -> str:
    """The one JSON rendering of tool results, so re-execution compares byte for byte."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
