"""Stage `url_filter`: drop pages by their URL before any text work, as FineWeb does.

Three rules, each its own drop reason, in this order:
1. the team's own lists in config: `allow` (always kept, overrides everything)
   and `block` (`url_team_block`); entries are domains (their subdomains match
   too) or URL prefixes (`host/path`);
2. category blocklists (adult, gambling, phishing, malware): the UT1 lists
   installed by `synth blocklists update`, else a small built-in fallback
   (`url_blocklist_<category>`);
3. banned words: a URL whose words (split at non-alphanumerics) include a banned
   word, or whose host contains a banned subword (`url_banned_word`).

Scores kept: `url_domain`, `url_blocklist` (category hit), `url_banned_word`,
`url_team` (allow/block). Records without a URL (books) pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import xxhash
from pydantic import Field

from synth.core.stage import Filter, FilterOptions, Shard, files_digest
from synth.ingest import blocklists

# Written for synth: words that name adult or gambling content in URLs, in English
# and in the pinyin common on Chinese spam domains. Whole URL words only.
DEFAULT_BANNED_WORDS = [
    "porn", "porno", "pornhub", "xxx", "sex", "sexy", "nude", "nudes", "hentai", "milf", "camgirl", "camgirls",
    "escort", "escorts", "erotic", "fetish", "bdsm", "casino", "casinos", "baccarat", "roulette", "sportsbook",
    "lottery", "seqing", "huangse", "chengren", "caipiao", "liuhecai", "bocai", "duchang",
]  # fmt: skip
# Substrings of the host that are banned even inside longer words (freeporn.example).
DEFAULT_BANNED_SUBWORDS = ["porn", "xxx", "hentai", "casino"]

Category = Literal["adult", "gambling", "phishing", "malware"]
_URL_WORD = re.compile(r"[a-z0-9]+")


def host_of(url: str) -> str:
    try:
        host = urlsplit(url if "//" in url else "//" + url).hostname or ""
    except ValueError:
        return ""
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def parent_domains(host: str) -> list[str]:
    """host and each parent: a.b.example.com, b.example.com, example.com, com."""
    parts = host.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def _hash(s: str) -> int:
    return xxhash.xxh64_intdigest(s.encode("utf-8", "surrogatepass"))


class _HashSet:
    """A set of strings as a sorted array of 64-bit hashes: UT1's adult list has
    millions of domains, ~8 bytes each here against ~70 in a Python set."""

    def __init__(self, items):
        self.keys = np.unique(np.fromiter((_hash(s) for s in items), dtype=np.uint64))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, s: str) -> bool:
        if not len(self.keys):
            return False
        h = np.uint64(_hash(s))
        i = int(np.searchsorted(self.keys, h))
        return i < len(self.keys) and self.keys[i] == h


def _prefix_match(host: str, path: str, prefixes: _HashSet) -> bool:
    """host/path starts with a listed `domain/path` prefix (at a '/' boundary)."""
    full = host + path
    cut = full.find("/")
    while cut != -1:
        if full[:cut] in prefixes:
            return True
        cut = full.find("/", cut + 1)
    return full.rstrip("/") in prefixes


class URLFilterOptions(FilterOptions):
    url_column: str = "url"
    categories: list[Category] = Field(default_factory=lambda: list(blocklists.CATEGORIES))
    # An unpacked UT1 tree (<category>/domains, <category>/urls); default: the copy
    # `synth blocklists update` cached, else the built-in fallback.
    blocklist_dir: str | None = None
    banned_words: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_WORDS))
    banned_subwords: list[str] = Field(default_factory=lambda: list(DEFAULT_BANNED_SUBWORDS))
    allow: list[str] = Field(default_factory=list, description="Domains or host/path prefixes always kept.")
    block: list[str] = Field(default_factory=list, description="Domains or host/path prefixes always dropped.")
    allow_file: str | None = Field(None, description="More allow entries, one a line.")
    block_file: str | None = Field(None, description="More block entries, one a line.")


class URLFilter(Filter):
    type = "url_filter"
    Options = URLFilterOptions
    options: URLFilterOptions
    _SCORES: ClassVar[dict[str, pa.DataType]] = {
        "url_domain": pa.string(),
        "url_blocklist": pa.string(),
        "url_banned_word": pa.string(),
        "url_team": pa.string(),
    }

    def input_columns(self):
        return (self.options.url_column,)

    def output_columns(self):
        return tuple(self._SCORES)

    def column_types(self):
        return dict(self._SCORES)

    def setup(self) -> None:
        o = self.options
        lists = blocklists.load(list(o.categories), o.blocklist_dir)
        self.source = lists.source
        self.domains = {c: _HashSet(d) for c, d in lists.domains.items()}
        self.prefixes = {c: _HashSet(p) for c, p in lists.url_prefixes.items()}
        self.allow = _HashSet(_team_entries(o.allow, o.allow_file, self.pipeline))
        self.block = _HashSet(_team_entries(o.block, o.block_file, self.pipeline))
        self.banned = frozenset(w.lower() for w in o.banned_words)
        self.subwords = tuple(w.lower() for w in o.banned_subwords)

    def external_state(self) -> str:
        """The lists' contents: updating them (`synth blocklists update`) re-filters a resumed run."""
        o = self.options
        folder = Path(o.blocklist_dir).expanduser() if o.blocklist_dir else blocklists.default_dir()
        files = [folder / c / name for c in o.categories for name in ("domains", "urls")]
        files += [blocklists.BUILTIN_DIR / f"{c}.txt" for c in o.categories]
        files += [_team_file(f, self.pipeline) for f in (o.allow_file, o.block_file) if f]
        return files_digest(files, names_only=True)

    def _team(self, hosts: list[str], host: str, path: str) -> str | None:
        if any(h in self.allow for h in hosts) or _prefix_match(host, path, self.allow):
            return "allow"
        if any(h in self.block for h in hosts) or _prefix_match(host, path, self.block):
            return "block"
        return None

    def score(self, table: pa.Table, shard: Shard) -> dict:
        if self.source == "built-in":
            shard.count("url_filter.builtin_blocklists")
        cols: dict[str, list] = {k: [] for k in self._SCORES}
        for url in table.column(self.options.url_column).to_pylist():
            if not url:
                for k in cols:
                    cols[k].append(None)
                continue
            host = host_of(url)
            try:
                path = urlsplit(url).path or "/"
            except ValueError:
                path = "/"
            hosts = parent_domains(host) if host else []
            cols["url_domain"].append(host or None)
            cols["url_team"].append(self._team(hosts, host, path))
            category = None
            for c in self.options.categories:
                if any(h in self.domains[c] for h in hosts) or (
                    len(self.prefixes[c]) and _prefix_match(host, path, self.prefixes[c])
                ):
                    category = c
                    break
            cols["url_blocklist"].append(category)
            cols["url_banned_word"].append(self._banned_word(url.lower(), host))
        return cols

    def _banned_word(self, url: str, host: str) -> str | None:
        for word in _URL_WORD.findall(url):
            if word in self.banned:
                return word
        for sub in self.subwords:
            if sub in host:
                return sub
        return None

    def decide(self, row: dict) -> str | None:
        team = row["url_team"]
        if team == "allow":
            return None
        if team == "block":
            return "url_team_block"
        if row["url_blocklist"]:
            return f"url_blocklist_{row['url_blocklist']}"
        if row["url_banned_word"]:
            return "url_banned_word"
        return None


def _team_file(file: str, pipeline) -> Path:
    """A team list's path: relative to the pipeline file when it is there, else as given."""
    path = Path(file).expanduser()
    config_path = getattr(pipeline, "config_path", None) if pipeline is not None else None
    if not path.is_absolute() and config_path is not None and (Path(config_path).parent / path).exists():
        path = Path(config_path).parent / path
    return path


def _team_entries(entries: list[str], file: str | None, pipeline) -> list[str]:
    out = [
        e.strip().lower().removeprefix("http://").removeprefix("https://").removeprefix("www.")
        for e in entries
        if e.strip()
    ]
    if file:
        path = _team_file(file, pipeline)
        if not path.is_file():
            raise ValueError(f"url_filter: {file}: no such file")
        out += _team_entries(blocklists._entries(path), None, None)
    return [e.rstrip("/") for e in out]
