"""Query trees: the 14 structures of KG reasoning, their evaluation, and seeded sampling.

A query is a JSON tree (what `meta.query` stores):
  {"entity": NAME}
  {"relation": REL, "of": NODE}                   tails t of (h, REL, t) for h in NODE
  {"relation": REL, "of": NODE, "inverse": true}  heads h of (h, REL, t) for t in NODE
  {"and": [NODE, ...]}  {"or": [NODE, ...]}  {"not": NODE} (only inside an "and")

Sampling grounds a pattern's shape on the graph. Its spine (the first child at
every level, down to the first anchor) is a forward random walk from a random
anchor, so walks start from anchors; every other branch is grounded backwards
from the entity the spine reached, which guarantees the answer is non-empty.
A negated branch is grounded on an entity of the positive branches other than
the walk's target, so the negation always removes something and keeps something.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from kg.graph import KnowledgeGraph

# Shapes: ("e",), ("p", child), ("and", [children]), ("or", [children]), ("not", child)
E = ("e",)


def P(child):
    return ("p", child)


def AND(*children):
    return ("and", list(children))


def OR(*children):
    return ("or", list(children))


def NOT(child):
    return ("not", child)


PATTERN_SHAPES: dict[str, tuple] = {
    "1p": P(E),
    "2p": P(P(E)),
    "3p": P(P(P(E))),
    "2i": AND(P(E), P(E)),
    "3i": AND(P(E), P(E), P(E)),
    "ip": P(AND(P(E), P(E))),
    "pi": AND(P(P(E)), P(E)),
    "2u": OR(P(E), P(E)),
    "up": P(OR(P(E), P(E))),
    "2in": AND(P(E), NOT(P(E))),
    "3in": AND(P(E), P(E), NOT(P(E))),
    "inp": P(AND(P(E), NOT(P(E)))),
    "pin": AND(P(P(E)), NOT(P(E))),
    "pni": AND(P(E), NOT(P(P(E)))),
}
PATTERNS = tuple(PATTERN_SHAPES)


class QueryError(ValueError):
    """A query tree that is malformed or names something the graph does not have."""


# -- evaluation -------------------------------------------------------------------


class TooLarge(Exception):
    pass


def evaluate_ids(tree: dict, graph: KnowledgeGraph, limit: int | None = None, trace: dict | None = None) -> set[int]:
    """The answer set (entity ids). `limit` bounds every intermediate set (raises TooLarge);
    `trace` (id(node) -> set) receives every node's result, for the sampler's checks."""
    if "entity" in tree:
        i = graph.entity_index.get(tree["entity"])
        if i is None:
            raise QueryError(f"unknown entity {tree['entity']!r}")
        out = {i}
    elif "relation" in tree:
        r = graph.relation_index.get(tree["relation"])
        if r is None:
            raise QueryError(f"unknown relation {tree['relation']!r}")
        inner = evaluate_ids(tree["of"], graph, limit, trace)
        out = graph.project(inner, 2 * r + (1 if tree.get("inverse") else 0), limit)
        if out is None:
            raise TooLarge()
    elif "and" in tree:
        positives, negatives = [], []
        for child in tree["and"]:
            if "not" in child:
                negatives.append(evaluate_ids(child["not"], graph, limit, trace))
                if trace is not None:
                    trace[id(child)] = negatives[-1]
            else:
                positives.append(evaluate_ids(child, graph, limit, trace))
        if not positives:
            raise QueryError("an 'and' needs at least one positive branch")
        out = set.intersection(*positives)
        for neg in negatives:
            out -= neg
    elif "or" in tree:
        out = set().union(*(evaluate_ids(c, graph, limit, trace) for c in tree["or"]))
        if limit is not None and len(out) > limit:
            raise TooLarge()
    elif "not" in tree:
        raise QueryError("'not' is only allowed inside an 'and'")
    else:
        raise QueryError(f"unknown query node {sorted(tree)}")
    if trace is not None:
        trace[id(tree)] = out
    return out


def evaluate(tree: dict, graph: KnowledgeGraph) -> list[str]:
    """The sorted answer names of a query tree."""
    return sorted(graph.entities[i] for i in evaluate_ids(tree, graph))


def anchors_of(tree: dict) -> list[str]:
    if "entity" in tree:
        return [tree["entity"]]
    if "relation" in tree:
        return anchors_of(tree["of"])
    if "not" in tree:
        return anchors_of(tree["not"])
    return [a for c in tree.get("and", tree.get("or", [])) for a in anchors_of(c)]


def relations_of(tree: dict) -> list[tuple[str, bool]]:
    if "entity" in tree:
        return []
    if "relation" in tree:
        return [*relations_of(tree["of"]), (tree["relation"], bool(tree.get("inverse")))]
    if "not" in tree:
        return relations_of(tree["not"])
    return [x for c in tree.get("and", tree.get("or", [])) for x in relations_of(c)]


def returning_steps(graph: KnowledgeGraph, share: float = 0.8) -> frozenset[tuple[int, int]]:
    """Directed-relation pairs (first, then) that lead back to where they started.

    A step and its own inverse always do. So does a symmetric relation taken twice
    (WordNet's `_derivationally_related_form`), and two relations that are each other's
    inverse (`/people/person/spouse` both ways, `contains`/`contained_by`): a pair counts
    when at least `share` of the edges of both relations have their reverse in the other.
    Computed once per graph and kept on it.
    """
    cached = getattr(graph, "_returning_steps", None)
    if cached is not None and cached[0] == share:
        return cached[1]
    pairs = {(d, d ^ 1) for d in range(2 * len(graph.relations))}
    # Edges keyed by one int (h * n + t): no tuple per edge, which keeps this cheap on
    # large graphs; the few entity pairs joined by several relations go to `more`.
    n = graph.num_entities
    first: dict[int, int] = {}
    more: dict[int, list[int]] = {}
    for h, r, t in graph.triples:
        key = h * n + t
        if key in first:
            more.setdefault(key, []).append(r)
        else:
            first[key] = r
    reversed_in: Counter = Counter()
    for h, r, t in graph.triples:
        key = t * n + h
        r2 = first.get(key)
        if r2 is not None:
            reversed_in[r, r2] += 1
            for r3 in more.get(key, ()):
                reversed_in[r, r3] += 1
    sizes = graph.relation_counts
    for (r1, r2), count in reversed_in.items():
        if count >= share * sizes[r1] and count >= share * sizes[r2]:
            # h -r1-> t and t -r2-> h: r1 forward then r2 forward returns home, as do
            # r2 backward then r1 backward (and the same with the roles swapped).
            pairs.update({(2 * r1, 2 * r2), (2 * r2, 2 * r1), (2 * r1 + 1, 2 * r2 + 1), (2 * r2 + 1, 2 * r1 + 1)})
    result = frozenset(pairs)
    graph._returning_steps = (share, result)
    return result


def out_and_back(tree: dict, graph: KnowledgeGraph, pairs: frozenset[tuple[int, int]] | None = None) -> bool:
    """True when some step of the tree goes along a relation and straight back."""
    if pairs is None:
        pairs = returning_steps(graph)
    if "relation" in tree:
        inner = tree["of"]
        if "relation" in inner:
            first = graph.directed_relation(inner["relation"], bool(inner.get("inverse")))
            then = graph.directed_relation(tree["relation"], bool(tree.get("inverse")))
            if (first, then) in pairs:
                return True
        return out_and_back(inner, graph, pairs)
    if "not" in tree:
        return out_and_back(tree["not"], graph, pairs)
    return any(out_and_back(c, graph, pairs) for c in tree.get("and", tree.get("or", [])))


def all_branches_matter(sets: list[set[int]]) -> bool:
    """True when dropping any one set from the intersection would change it."""
    full = set.intersection(*sets)
    for k in range(len(sets)):
        rest = sets[:k] + sets[k + 1 :]
        if set.intersection(*rest) == full:
            return False
    return True


# -- sampling ---------------------------------------------------------------------


@dataclass
class SampledQuery:
    pattern: str
    tree: dict
    answer: list[str]
    anchors: list[str]


TRIVIAL_REASONS = ("trivial_anchor_in_answer", "trivial_out_and_back")


class _Fail(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class QuerySampler:
    """Grounds pattern shapes on a graph. All randomness comes from the rng passed in."""

    def __init__(
        self,
        graph: KnowledgeGraph,
        max_answers: int = 10,
        max_intermediate: int = 30,
        allow_inverse: bool = True,
        allow_trivial: bool = False,
        anchor_ok: list[bool] | None = None,
        banned_relations: frozenset[int] = frozenset(),
        required_relations: frozenset[int] = frozenset(),
    ):
        self.g = graph
        self.allow_trivial = allow_trivial
        self.returning = frozenset() if allow_trivial else returning_steps(graph)
        # Evaluation split: anchors only where anchor_ok, never a banned relation, and
        # (for held-out relations) at least one required relation in every query.
        self.anchor_ok = anchor_ok
        self.banned = banned_relations
        self.required = required_relations
        self.max_answers = max_answers
        self.max_intermediate = max_intermediate
        self.allow_inverse = allow_inverse
        self.branch_retries = 6
        # A spine step from one entity yields its whole neighbour set under that relation,
        # so steps into sets larger than any step may produce are never worth taking;
        # leaving them out up front saves most failed walks on hub-heavy graphs.
        limit = max(max_answers, max_intermediate)
        self.small_steps = [
            tuple(
                d
                for d in drs
                if (allow_inverse or not d & 1) and len(graph.neighbours[x][d]) <= limit and d >> 1 not in self.banned
            )
            for x, drs in enumerate(graph.directed_relations_of)
        ]
        # Walks start only where they can go on (and, in a split, from the split's anchors).
        self.walkable = [
            i for i in range(graph.num_entities) if self.small_steps[i] and (anchor_ok is None or anchor_ok[i])
        ]
        if not self.walkable:
            raise ValueError("graph has no edges to walk")

    def _node(self, dr: int, child: dict) -> dict:
        node = {"relation": self.g.relations[dr >> 1], "of": child}
        if dr & 1:
            node["inverse"] = True
        return node

    def sample(
        self, pattern: str, rng: random.Random, attempts: int = 50, failures: Counter | None = None
    ) -> tuple[SampledQuery | None, str]:
        """A query of `pattern`, or (None, reason of the last failure). Every failed
        grounding is re-sampled and, when `failures` is given, counted there by reason."""
        shape = PATTERN_SHAPES[pattern]
        reason = "no_attempt"
        for _ in range(attempts):
            try:
                tree = self._ground_pattern(shape, rng)
                answer_ids = self._check(tree)
            except _Fail as f:
                reason = f.reason
                if failures is not None:
                    failures[reason] += 1
                continue
            names = sorted(self.g.entities[i] for i in answer_ids)
            return SampledQuery(pattern, tree, names, anchors_of(tree)), "ok"
        return None, reason

    # spine: forward walk from a random anchor
    def _ground_pattern(self, shape: tuple, rng: random.Random) -> dict:
        # Spine projections top-down, and whether each feeds an "and" directly: such a
        # step must reach at least two entities, else the other branches are redundant.
        feeds_and: list[bool] = []
        node, parent = shape, None
        while node[0] != "e":
            if node[0] == "p":
                feeds_and.append(parent == "and")
                parent, node = "p", node[1]
            else:
                parent, node = node[0], node[1][0]
        depth = len(feeds_and)
        feeds_and.reverse()  # bottom-up, the order of the walk
        anchor = self.walkable[rng.randrange(len(self.walkable))]
        walk = [anchor]  # entities along the spine, bottom-up
        drs: list[int] = []
        x, prev = anchor, -1
        for j in range(depth):
            steps = self.small_steps[x]
            if feeds_and[j]:
                steps = [d for d in steps if len(self.g.neighbours[x][d]) >= 2]
            if not steps:
                raise _Fail("dead_end")
            dr = steps[rng.randrange(len(steps))]
            ys = self.g.follow(x, dr)
            y = ys[rng.randrange(len(ys))]
            if y == prev and len(ys) > 1:
                y = ys[rng.randrange(len(ys))]
            if y in (prev, x):
                raise _Fail("walk_backtracked")
            prev, x = x, y
            walk.append(y)
            drs.append(dr)
        # top-down, the spine's projections are consumed from the end of the walk
        self._spine = (walk, drs)
        self._spine_pos = depth
        return self._ground(shape, walk[-1], True, rng)

    def _ground(self, shape: tuple, target: int, on_spine: bool, rng: random.Random) -> dict:
        kind = shape[0]
        if kind == "e":
            return {"entity": self.g.entities[target]}
        if kind == "p":
            if on_spine:
                walk, drs = self._spine
                self._spine_pos -= 1
                dr, source = drs[self._spine_pos], walk[self._spine_pos]
            else:
                # backwards: an edge (source -dr-> target) is target -(dr^1)-> source
                back = self._steps_into(target)
                if not back:
                    raise _Fail("no_incoming_edge")
                # Prefer a source whose own neighbour set under the relation is small: a hub
                # source (a country "containing" thousands) would only fail the size check.
                anchoring = shape[1][0] == "e" and self.anchor_ok is not None
                source = -1
                for _ in range(6):
                    rdr = back[rng.randrange(len(back))]
                    sources = self.g.follow(target, rdr)
                    if anchoring:  # this source becomes an anchor: it must be one of the split's
                        sources = [x for x in sources if self.anchor_ok[x]]
                        if not sources:
                            continue
                    source, dr = sources[rng.randrange(len(sources))], rdr ^ 1
                    if len(self.g.neighbours[source][dr]) <= self.max_intermediate:
                        break
                if source < 0:
                    raise _Fail("no_anchor_in_split")
            return self._node(dr, self._ground(shape[1], source, on_spine, rng))
        if kind == "and":
            positives = [c for c in shape[1] if c[0] != "not"]
            negatives = [c for c in shape[1] if c[0] == "not"]
            children = [self._ground(positives[0], target, on_spine, rng)]
            sets = [self._eval(children[0])]
            if len(sets[0]) < 2:
                # {target} alone: every other positive branch would be redundant and a
                # negation would leave nothing. Fail now rather than after grounding them.
                raise _Fail("redundant_branch" if len(positives) > 1 else "nothing_to_negate")
            anchors = set(anchors_of(children[0]))
            for k, c in enumerate(positives[1:], start=2):
                # A branch that keeps every entity the others allow says nothing (nor does one
                # the others make pointless): try a few other groundings here, which is far
                # cheaper than restarting the whole walk.
                for _ in range(self.branch_retries):
                    child = self._ground(c, target, False, rng)
                    trial = [*sets, self._eval(child)]
                    fresh = not anchors.intersection(anchors_of(child))
                    # a branch still to come needs something left to remove
                    later = len(positives) - k + len(negatives)
                    room = not later or len(set.intersection(*trial)) >= 2
                    if fresh and room and all_branches_matter(trial):
                        break
                children.append(child)
                anchors.update(anchors_of(child))
                sets = trial
            pos = set.intersection(*sets)
            if negatives:
                others = sorted(pos - {target})
                if not others:
                    raise _Fail("nothing_to_negate")
                for neg in negatives:
                    excluded = others[rng.randrange(len(others))]
                    children.append({"not": self._ground(neg[1], excluded, False, rng)})
            return {"and": children}
        if kind == "or":
            children = [self._ground(shape[1][0], target, on_spine, rng)]
            for c in shape[1][1:]:
                other = self.walkable[rng.randrange(len(self.walkable))]
                children.append(self._ground(c, other, False, rng))
            return {"or": children}
        raise ValueError(f"bad shape {shape}")

    def _eval(self, tree: dict) -> set[int]:
        try:
            return evaluate_ids(tree, self.g, self.max_intermediate)
        except TooLarge:
            raise _Fail("too_many_intermediate") from None

    def _steps_into(self, target: int) -> tuple[int, ...]:
        # Relations by which something reaches `target`: the flips of target's own steps.
        drs = self.g.directed_relations_of[target]
        if self.banned:
            drs = tuple(d for d in drs if d >> 1 not in self.banned)
        if self.allow_inverse:
            return drs
        return tuple(d for d in drs if d & 1)  # target is a tail of a forward edge

    def _check(self, tree: dict) -> set[int]:
        trace: dict[int, set[int]] = {}
        try:
            answer = evaluate_ids(tree, self.g, self.max_intermediate, trace)
        except TooLarge:
            raise _Fail("too_many_intermediate") from None
        if not answer:
            raise _Fail("empty_answer")
        if len(answer) > self.max_answers:
            raise _Fail("too_many_answers")
        anchors = anchors_of(tree)
        if len(set(anchors)) != len(anchors):
            raise _Fail("repeated_anchor")
        anchor_ids = {self.g.entity_index[a] for a in anchors}
        if self.anchor_ok is not None and not all(self.anchor_ok[a] for a in anchor_ids):
            raise _Fail("anchor_in_other_split")
        if self.required and not any(self.g.relation_index[r] in self.required for r, _ in relations_of(tree)):
            raise _Fail("no_held_out_relation")
        if answer <= anchor_ids:
            raise _Fail("answer_is_anchor")
        self._check_branches(tree, trace)
        # Last, so that these counters measure how many otherwise good queries were trivial.
        if not self.allow_trivial:
            if answer & anchor_ids:
                raise _Fail("trivial_anchor_in_answer")
            if out_and_back(tree, self.g, self.returning):
                raise _Fail("trivial_out_and_back")
        return answer

    def _check_branches(self, node: dict, trace: dict[int, set[int]]) -> None:
        """Every branch of an and/or must matter, else the question says more than the query does."""
        if "relation" in node:
            self._check_branches(node["of"], trace)
        elif "not" in node:
            self._check_branches(node["not"], trace)
        elif "and" in node or "or" in node:
            children = node.get("and") or node.get("or")
            sets = [trace[id(c)] for c in children]
            full = trace[id(node)]
            for k, c in enumerate(children):
                rest = [s for j, s in enumerate(sets) if j != k]
                if "and" in node:
                    pos = [s for j, s in enumerate(rest) if "not" not in children[j if j < k else j + 1]]
                    neg = [s for j, s in enumerate(rest) if "not" in children[j if j < k else j + 1]]
                    if not pos:
                        continue  # removing the only positive branch is not a query
                    without = set.intersection(*pos)
                    for s in neg:
                        without = without - s
                else:
                    without = set().union(*rest)
                if without == full:
                    raise _Fail("redundant_branch")
                self._check_branches(c, trace)
