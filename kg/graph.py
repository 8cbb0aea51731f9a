"""Knowledge graphs in: parsing, indexing and the on-disk cache.

Entities and relations are interned to small integers; the index maps
(entity, directed relation) to the neighbour set, which is all that walking,
querying and executing tools need. A directed relation `dr` is `2 * rel` for the
relation as written and `2 * rel + 1` for its inverse, so flipping direction is
`dr ^ 1`. The networkx MultiDiGraph view is built on demand (stats, user code),
because building it costs more than everything else the sampler needs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CACHE_FORMAT = 3
# Header cells that mark the first row of a plain triple file as a header.
_HEADER_WORDS = {"head", "relation", "tail", "subject", "predicate", "object", "h", "r", "t", "source", "target", "rel"}
# Files inside a dataset folder that are not triples (Nations ships numeric literals).
_SKIPPED_FILE_WORDS = ("literal", "readme", "license", "entities", "relations", "entity2id", "relation2id")
_NT_TERM = re.compile(r'\s*(<[^>]*>|_:\S+|"(?:[^"\\]|\\.)*"(?:@[A-Za-z0-9-]+|\^\^<[^>]*>)?)')
_RDFS_LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"


@dataclass
class LoadReport:
    """What loading saw: row counts and the bad rows (counted, a few kept as examples)."""

    files: list[str] = field(default_factory=list)
    rows: int = 0
    triples: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    bad_examples: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, why)
    renamed_entities: int = 0  # names shared by several ids, disambiguated
    from_cache: bool = False
    seconds: float = 0.0

    def bad(self, file: str, line: int, why: str) -> None:
        self.bad_rows += 1
        if len(self.bad_examples) < 20:
            self.bad_examples.append((file, line, why))


class KnowledgeGraph:
    """A directed multigraph over named entities, indexed for walks and tool execution."""

    def __init__(
        self,
        name: str,
        entities: list[str],
        entity_ids: list[str | None],
        relations: list[str],
        triples: list[tuple[int, int, int]],
        report: LoadReport | None = None,
    ):
        self.name = name
        self.entities = entities  # display names, unique
        self.entity_ids = entity_ids  # source ids (Freebase mid, IRI) or None
        self.relations = relations  # exactly as in the input file
        self.triples = triples  # (head, rel, tail) ids, deduplicated
        self.report = report or LoadReport()
        self.entity_index = {n: i for i, n in enumerate(entities)}
        self.relation_index = {r: i for i, r in enumerate(relations)}
        self._build_index()
        self._nx = None

    # The index is pickled as is (loading it beats rebuilding it); the networkx view
    # and the name lookups are not, they are cheap to derive.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_nx"] = None
        state.pop("entity_index", None)
        state.pop("relation_index", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.entity_index = {n: i for i, n in enumerate(self.entities)}
        self.relation_index = {r: i for i, r in enumerate(self.relations)}

    def _build_index(self) -> None:
        # neighbours[x][dr] -> tuple of entity ids; steps[x] -> tuple of (dr, y) for uniform walk steps
        table: list[dict[int, list[int]]] = [dict() for _ in self.entities]
        for h, r, t in self.triples:
            table[h].setdefault(2 * r, []).append(t)
            table[t].setdefault(2 * r + 1, []).append(h)
        self.neighbours: list[dict[int, tuple[int, ...]]] = [
            {dr: tuple(sorted(ys)) for dr, ys in row.items()} for row in table
        ]
        self.directed_relations_of: list[tuple[int, ...]] = [tuple(sorted(row)) for row in self.neighbours]
        self.relation_counts = Counter(r for _, r, _ in self.triples)

    # -- queries used everywhere -------------------------------------------
    def follow(self, entity: int, dr: int) -> tuple[int, ...]:
        return self.neighbours[entity].get(dr, ())

    def project(self, entities, dr: int, limit: int | None = None) -> set[int] | None:
        """Union of neighbours under `dr`; None when it would exceed `limit` (sampling guard)."""
        out: set[int] = set()
        for x in entities:
            ys = self.neighbours[x].get(dr)
            if ys:
                out.update(ys)
                if limit is not None and len(out) > limit:
                    return None
        return out

    def directed_relation(self, relation: str, inverse: bool = False) -> int:
        return 2 * self.relation_index[relation] + (1 if inverse else 0)

    def describe_directed(self, dr: int) -> tuple[str, bool]:
        return self.relations[dr >> 1], bool(dr & 1)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_triples(self) -> int:
        return len(self.triples)

    @property
    def is_freebase(self) -> bool:
        return bool(self.relations) and all(r.startswith("/") for r in self.relations[:50])

    @property
    def nx(self):
        """The graph as a networkx MultiDiGraph (nodes: entity names; edge key: relation)."""
        if self._nx is None:
            import networkx as nx

            g = nx.MultiDiGraph(name=self.name)
            for i, name in enumerate(self.entities):
                g.add_node(name, id=self.entity_ids[i])
            ents, rels = self.entities, self.relations
            g.add_edges_from((ents[h], ents[t], rels[r]) for h, r, t in self.triples)
            self._nx = g
        return self._nx

    def stats(self) -> dict:
        degrees = [sum(len(v) for v in row.values()) for row in self.neighbours]
        sorted_deg = sorted(degrees)
        return {
            "name": self.name,
            "entities": self.num_entities,
            "relations": len(self.relations),
            "triples": self.num_triples,
            "bad_rows": self.report.bad_rows,
            "duplicate_triples": self.report.duplicates,
            "renamed_entities": self.report.renamed_entities,
            "isolated_entities": sum(1 for d in degrees if d == 0),
            "degree_median": sorted_deg[len(sorted_deg) // 2] if sorted_deg else 0,
            "degree_max": sorted_deg[-1] if sorted_deg else 0,
            "top_relations": [(self.relations[r], n) for r, n in self.relation_counts.most_common(10)],
        }


# -- parsing -------------------------------------------------------------------


def _open_text(path: Path):
    raw = path.open("rb")
    if path.suffix == ".gz":
        raw = gzip.open(raw)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _input_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = [
            p
            for p in sorted(path.iterdir())
            if p.is_file()
            and re.search(r"\.(tsv|txt|nt|csv)(\.gz)?$", p.name)
            and not any(w in p.name.lower() for w in _SKIPPED_FILE_WORDS)
        ]
        if not files:
            raise FileNotFoundError(f"no triple files in {path}")
        return files
    if not path.exists():
        raise FileNotFoundError(path)
    return [path]


class _Builder:
    """Interns names while parsing; resolves names shared by several ids at the end."""

    def __init__(self, report: LoadReport):
        self.report = report
        self.keys: dict[str, int] = {}  # entity key (id if known else name) -> index
        self.names: list[str] = []
        self.ids: list[str | None] = []
        self.rel_index: dict[str, int] = {}
        self.relations: list[str] = []
        self.seen: set[tuple[int, int, int]] = set()
        self.triples: list[tuple[int, int, int]] = []

    def entity(self, name: str, ident: str | None) -> int:
        key = ident if ident is not None else name
        idx = self.keys.get(key)
        if idx is None:
            idx = self.keys[key] = len(self.names)
            self.names.append(name)
            self.ids.append(ident)
        return idx

    def add(self, h: int, rel: str, t: int) -> None:
        r = self.rel_index.get(rel)
        if r is None:
            r = self.rel_index[rel] = len(self.relations)
            self.relations.append(rel)
        triple = (h, r, t)
        if triple in self.seen:
            self.report.duplicates += 1
            return
        self.seen.add(triple)
        self.triples.append(triple)

    def unique_names(self, freebase: bool) -> list[str]:
        """Names must be unique to be tool arguments; several ids sharing one name get a qualifier.

        The qualifier is the entity's type where the graph tells it (for Freebase, the
        type segment of the relations it is the head of: "Philadelphia (film)"), else its id.
        """
        by_name: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            by_name.setdefault(n, []).append(i)
        clashes = {n: idxs for n, idxs in by_name.items() if len(idxs) > 1}
        if not clashes:
            return self.names
        types: dict[int, Counter] = {}
        if freebase:
            wanted = {i for idxs in clashes.values() for i in idxs}
            for h, r, _ in self.triples:
                if h in wanted:
                    parts = self.relations[r].strip("/").split("/")
                    if len(parts) >= 2:
                        types.setdefault(h, Counter())[parts[1].replace("_", " ")] += 1
        names = list(self.names)
        taken = set(by_name)
        for n, idxs in clashes.items():
            labels = {i: (types[i].most_common(1)[0][0] if i in types else None) for i in idxs}
            counts = Counter(labels.values())
            for i in idxs:
                qual = labels[i] if labels[i] is not None and counts[labels[i]] == 1 else (self.ids[i] or str(i))
                candidate = f"{n} ({qual})"
                if candidate in taken:
                    candidate = f"{n} ({self.ids[i] or i})"
                names[i] = candidate
                taken.add(candidate)
                self.report.renamed_entities += 1
        return names


def _parse_tsv(path: Path, b: _Builder, report: LoadReport) -> None:
    label = str(path)
    with _open_text(path) as f:
        layout = None  # "labelled" (FB15k-237 with names) or "plain"
        cols: dict[str, int] = {}
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            cells = line.split("\t")
            if layout is None:
                lower = [c.strip().lower() for c in cells]
                if {"head_name", "tail_name", "relation"} <= set(lower):
                    layout, cols = "labelled", {c: i for i, c in enumerate(lower)}
                    continue
                layout = "plain"
                if len(cells) == 3 and all(c in _HEADER_WORDS for c in lower):
                    continue
            report.rows += 1
            if layout == "labelled":
                if len(cells) != len(cols):
                    report.bad(label, lineno, f"expected {len(cols)} columns, got {len(cells)}")
                    continue
                hn, rel, tn = (
                    cells[cols["head_name"]].strip(),
                    cells[cols["relation"]].strip(),
                    cells[cols["tail_name"]].strip(),
                )
                hid = cells[cols["head_mid"]].strip() if "head_mid" in cols else None
                tid = cells[cols["tail_mid"]].strip() if "tail_mid" in cols else None
                # A missing name falls back to the id: the triple is still true.
                hn, tn = hn or hid or "", tn or tid or ""
            else:
                if len(cells) != 3:
                    report.bad(label, lineno, f"expected 3 columns, got {len(cells)}")
                    continue
                hn, rel, tn = (c.strip() for c in cells)
                hid = tid = None
            if not hn or not rel or not tn:
                report.bad(label, lineno, "empty head, relation or tail")
                continue
            b.add(b.entity(hn, hid or None), rel, b.entity(tn, tid or None))


def _nt_local_name(term: str) -> str:
    if term.startswith("<"):
        iri = term[1:-1]
        tail = re.split(r"[#/]", iri.rstrip("/#"))[-1]
        return tail.replace("_", " ") or iri
    if term.startswith('"'):
        end = term.rfind('"')
        return bytes(term[1:end], "utf-8").decode("unicode_escape", errors="replace") if "\\" in term else term[1:end]
    return term  # blank node


def _parse_nt(path: Path, b: _Builder, report: LoadReport) -> None:
    label = str(path)
    rows: list[tuple[str, str, str]] = []
    labels: dict[str, str] = {}
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            report.rows += 1
            terms, pos = [], 0
            for _ in range(3):
                m = _NT_TERM.match(s, pos)
                if not m:
                    break
                terms.append(m.group(1))
                pos = m.end()
            if len(terms) != 3 or not s[pos:].strip().startswith(".") or terms[1][0] != "<":
                report.bad(label, lineno, "not an N-Triples statement")
                continue
            if terms[1] == _RDFS_LABEL and terms[2].startswith('"'):
                # Labels name entities; they are not edges to walk.
                lang = terms[2][terms[2].rfind('"') + 1 :]
                if terms[0] not in labels or lang in ("", "@en"):
                    labels[terms[0]] = _nt_local_name(terms[2])
                continue
            rows.append((terms[0], terms[1][1:-1], terms[2]))
    for s, p, o in rows:
        h = b.entity(labels.get(s) or _nt_local_name(s), s)
        t = b.entity(labels.get(o) or _nt_local_name(o), o)
        b.add(h, p, t)


def _file_digest(files: list[Path]) -> str:
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for p in files:
        h.update(str(p.name).encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def graph_digest(path: str | os.PathLike) -> str:
    """Content hash of a graph file or folder (what the cache is keyed by)."""
    return _file_digest(_input_files(Path(path)))


def cache_dir() -> Path:
    """Parsed graphs live under synth's cache root ($SYNTH_CACHE, else ~/.cache/synth) in kg/."""
    env = os.environ.get("SYNTH_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "synth") / "kg"


def load_graph(
    path: str | os.PathLike, use_cache: bool = True, name: str | None = None, cache: str | os.PathLike | None = None
) -> KnowledgeGraph:
    """Load a graph file or a folder of triple files; caches the parsed form by content hash
    (in `cache`, default `cache_dir()`)."""
    import time

    start = time.perf_counter()
    path = Path(path)
    files = _input_files(path)
    gname = name or re.sub(r"(\.(tsv|txt|nt|csv))?(\.gz)?$", "", path.name)
    cache_file = None
    if use_cache:
        cache_file = Path(cache or cache_dir()) / f"{gname}-{_file_digest(files)}.pkl"
        if cache_file.exists():
            try:
                with cache_file.open("rb") as f:
                    g = pickle.load(f)
                g.report.from_cache = True
                g.report.seconds = time.perf_counter() - start
                return g
            except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, never fatal
                pass
    report = LoadReport(files=[str(p) for p in files])
    b = _Builder(report)
    for p in files:
        base = p.name[:-3] if p.name.endswith(".gz") else p.name
        (_parse_nt if base.endswith(".nt") else _parse_tsv)(p, b, report)
    report.triples = len(b.triples)
    freebase = bool(b.relations) and all(r.startswith("/") for r in b.relations[:50])
    names = b.unique_names(freebase)
    g = KnowledgeGraph(gname, names, b.ids, b.relations, b.triples, report)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as f:
            pickle.dump(g, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache_file)  # atomic: concurrent loaders never see half a cache
    report.seconds = time.perf_counter() - start
    return g
