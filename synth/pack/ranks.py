"""Build a Hugging Face tokenizer folder from a byte-level BPE rank file, offline.

A rank file lists token byte strings by merge priority: tiktoken's `.tiktoken` format
(`base64 rank` per line) or Mistral's tekken JSON (`vocab: [{rank, token_bytes}]`,
shipped inside the PyPI package `mistral_common`, which vLLM installs: its
tekken_240911.json has 131,072 ids). A BPE model needs merges, which rank files leave
implicit: the merge that makes a token is found by running BPE on its bytes with the
ranks below it until two parts remain.

    python -m synth.pack.ranks OUT_DIR [--rank-file PATH] [--limit N]
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")


def default_rank_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package mistral_common is not installed (pip install mistral-common)")
    path = Path(spec.submodule_search_locations[0]) / "data" / "tekken_240911.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in mistral_common")
    return path


def read_ranks(path: Path, limit: int | None = None) -> tuple[list[bytes], str | None, int]:
    """Token byte strings in rank order, the pre-tokenizer regex if the file has one,
    and the number of special ids the file reserves in front of the ranks."""
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        cfg = data.get("config", {})
        n = cfg.get("default_vocab_size", len(data["vocab"])) - cfg.get("default_num_special_tokens", 0)
        vocab = sorted(data["vocab"], key=lambda v: v["rank"])[:n]
        tokens = [base64.b64decode(v["token_bytes"]) for v in vocab]
        pattern, reserved = cfg.get("pattern"), cfg.get("default_num_special_tokens", 0)
    else:
        tokens, pattern, reserved = [], None, 0
        for line in path.read_text().splitlines():
            if line.strip():
                tok, rank = line.split()
                assert int(rank) == len(tokens), f"{path}: ranks must be 0..n-1 in order"
                tokens.append(base64.b64decode(tok))
    return (tokens[:limit] if limit else tokens), pattern, reserved


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, (chr(c) for c in chars)))


def _merge_of(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes] | None:
    rank = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, at = r, i
        if best is None:
            return None
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def build_tokenizer(out_dir: str | Path, rank_file: str | Path | None = None, limit: int | None = None) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    path = Path(rank_file) if rank_file else default_rank_file()
    tokens, pattern, _ = read_ranks(path, limit)
    b2u = _bytes_to_unicode()
    ranks = {t: i for i, t in enumerate(tokens)}
    enc = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for t in tokens:
        vocab.setdefault(enc(t), len(vocab))
    merges = []
    for t in sorted(tokens, key=ranks.__getitem__):
        if len(t) > 1:
            m = _merge_of(t, ranks)
            if m is not None:
                merges.append((enc(m[0]), enc(m[1])))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    pre = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    if pattern:
        pre.insert(0, pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tk.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Build a tokenizer folder from a BPE rank file (default: mistral_common's tekken, 131K)."
    )
    ap.add_argument("out_dir")
    ap.add_argument("--rank-file", default=None)
    ap.add_argument("--limit", type=int, default=None, help="keep only the first N ranks")
    a = ap.parse_args()
    out = build_tokenizer(a.out_dir, a.rank_file, a.limit)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
