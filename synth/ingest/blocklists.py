"""URL blocklists by category (adult, gambling, phishing, malware), as FineWeb uses them.

The maintained source is the UT1 blacklists of Université Toulouse Capitole
(CC BY-SA 4.0), the lists FineWeb filters with. No PyPI package ships them, so
`synth blocklists update` downloads the archive once, keeps the chosen
categories' `domains` and `urls` files under `<cache>/blocklists/ut1/`, and writes
`SOURCE.json` beside them (source URL, licence, download date, entries per
category). Offline, `--archive FILE` installs from a tarball fetched elsewhere.
Without a cached copy, a small built-in list per category applies
(`data/blocklists/<category>.txt`), and the stage says so in the ledger.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from synth.llm.default_model import cache_root

UT1_URL = "https://dsi.ut-capitole.fr/blacklists/download/blacklists.tar.gz"
UT1_LICENCE = "CC BY-SA 4.0 (UT1 blacklists, Université Toulouse Capitole)"
CATEGORIES = ("adult", "gambling", "phishing", "malware")
BUILTIN_DIR = Path(__file__).parent / "data" / "blocklists"


class BlocklistError(RuntimeError):
    """A one-line, user-facing failure of `synth blocklists`."""


def default_dir() -> Path:
    return cache_root() / "blocklists" / "ut1"


def _entries(path: Path) -> list[str]:
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            entry = line.strip().lower()
            if entry and not entry.startswith("#"):
                out.append(entry)
    return out


@dataclass
class Blocklists:
    """Domains and URL prefixes per category, and where they came from."""

    domains: dict[str, set[str]] = field(default_factory=dict)
    url_prefixes: dict[str, set[str]] = field(default_factory=dict)
    source: str = "built-in"

    def size(self) -> int:
        return sum(map(len, self.domains.values())) + sum(map(len, self.url_prefixes.values()))


def load(categories: list[str], folder: Path | str | None = None) -> Blocklists:
    """The lists of `categories` from `folder` (an unpacked UT1 tree: <cat>/domains,
    <cat>/urls), else the cached download, else the built-in fallback."""
    explicit = folder is not None
    folder = Path(folder).expanduser() if folder else default_dir()
    if explicit and not any((folder / c / "domains").is_file() for c in categories):
        raise BlocklistError(f"blocklist_dir {folder}: no <category>/domains file for {', '.join(categories)}")
    if any((folder / c / "domains").is_file() for c in categories):
        lists = Blocklists(source=str(folder))
        for c in categories:
            lists.domains[c] = set(_entries(folder / c / "domains"))
            lists.url_prefixes[c] = set(_entries(folder / c / "urls"))
        return lists
    lists = Blocklists(source="built-in")
    for c in categories:
        lists.domains[c] = set(_entries(BUILTIN_DIR / f"{c}.txt"))
        lists.url_prefixes[c] = set()
    return lists


def install_archive(archive: Path, categories: list[str], dest: Path, source: str) -> dict:
    """Unpack the categories' files of a UT1 tarball into `dest`; return SOURCE.json."""
    if not archive.is_file():
        raise BlocklistError(f"{archive}: no such file")
    counts: dict[str, int] = {}
    tmp = Path(tempfile.mkdtemp(prefix="synth-blocklists-", dir=dest.parent if dest.parent.exists() else None))
    try:
        try:
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts
                    # blacklists/<category>/<domains|urls>; symlinked categories are skipped
                    if (
                        len(parts) < 3
                        or parts[-2] not in categories
                        or parts[-1] not in ("domains", "urls")
                        or not member.isfile()
                    ):
                        continue
                    src = tar.extractfile(member)
                    if src is None:
                        continue
                    out = tmp / parts[-2] / parts[-1]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with open(out, "wb") as f:
                        shutil.copyfileobj(src, f)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BlocklistError(f"{archive}: not a readable blocklist archive ({e})") from None
        found = [c for c in categories if (tmp / c / "domains").is_file()]
        if not found:
            raise BlocklistError(
                f"{archive}: none of the categories {categories} in it (expected blacklists/<category>/domains)"
            )
        for c in found:
            counts[c] = len(_entries(tmp / c / "domains")) + len(_entries(tmp / c / "urls"))
        meta = {
            "source": source,
            "licence": UT1_LICENCE,
            "downloaded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "categories": counts,
            "missing": [c for c in categories if c not in found],
        }
        (tmp / "SOURCE.json").write_text(json.dumps(meta, indent=2) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(dest)
        return meta
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def update(
    categories: list[str],
    dest: Path | None = None,
    url: str = UT1_URL,
    archive: Path | None = None,
    timeout: float = 120.0,
) -> dict:
    """Download (or take `archive`) and install the lists; the previous copy stays
    in place until the new one is complete."""
    dest = Path(dest).expanduser() if dest else default_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        return install_archive(Path(archive), categories, dest, source=str(archive))
    import httpx

    fd, tmp_name = tempfile.mkstemp(prefix="ut1-", suffix=".tar.gz", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as f, httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r:
            if r.status_code != 200:
                raise BlocklistError(f"{url}: HTTP {r.status_code}")
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
        return install_archive(tmp, categories, dest, source=url)
    except httpx.HTTPError as e:
        raise BlocklistError(f"cannot download {url}: {e} (offline? pass --archive FILE)") from None
    finally:
        tmp.unlink(missing_ok=True)


def describe(folder: Path | None = None) -> dict:
    folder = Path(folder).expanduser() if folder else default_dir()
    meta_path = folder / "SOURCE.json"
    if meta_path.is_file():
        return {"folder": str(folder), **json.loads(meta_path.read_text())}
    return {
        "folder": None,
        "source": "built-in fallback",
        "categories": {c: len(_entries(BUILTIN_DIR / f"{c}.txt")) for c in CATEGORIES},
    }
