"""Token counts with the reading model's own fast tokenizer (`tokenizers`, Rust).

Used to size passages in tokens (`split_passages max_tokens`) and to measure every
LLM request before it is sent (`PromptBudget`): a prompt that cannot fit the
model's context together with its `max_tokens` is shortened where the stage
allows (the passage part) or dropped as `prompt_too_long`, without a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

PROMPT_TOO_LONG = "prompt_too_long"


class TokenizerNotFound(RuntimeError):
    pass


def tokenizer_file(ref: str) -> Path:
    """tokenizer.json for `ref`: "default" (the embedded model), a tokenizer.json,
    a model folder, or a hub id already in the local Hugging Face cache."""
    if ref == "default":
        from synth.llm.default_model import default_model_dir, is_prepared, prepare_default_model

        folder = default_model_dir()
        if not is_prepared(folder):
            folder = prepare_default_model()
        return folder / "tokenizer.json"
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "tokenizer.json")
        if isinstance(cached, str):
            return Path(cached)
    except Exception:  # noqa: BLE001 - not a hub id, or no huggingface_hub
        pass
    raise TokenizerNotFound(
        f"no tokenizer.json for {ref!r}: give a tokenizer.json, a model folder, or a hub id in the local cache"
    )


@lru_cache(maxsize=8)
def load_tokenizer(ref: str = "default"):
    from tokenizers import Tokenizer

    path = tokenizer_file(ref)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types for a bad file
        raise TokenizerNotFound(f"{path}: not a fast tokenizer file ({e})") from None


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def char_end_of_tokens(tokenizer, text: str, n_tokens: int) -> int:
    """Characters of `text` covered by its first `n_tokens` tokens."""
    if n_tokens <= 0:
        return 0
    enc = tokenizer.encode(text, add_special_tokens=False)
    if n_tokens >= len(enc.ids):
        return len(text)
    return enc.offsets[n_tokens - 1][1]


def model_context(folder: Path) -> int | None:
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("max_position_embeddings")


@dataclass
class PromptBudget:
    """Measures chat requests against a model's context.

    A prompt's size is its messages' tokens plus a per-message allowance for the
    chat template's markers (and a system prompt some templates add), measured
    conservatively rather than by rendering each template.
    """

    tokenizer: object
    context: int
    per_message: int = 8
    margin: int = 32
    # A passage is not cut below this many tokens: a stub is no grounding.
    min_kept_tokens: int = 64

    def prompt_tokens(self, messages: list[dict]) -> int:
        contents = [str(m.get("content") or "") for m in messages]
        return sum(count_tokens(self.tokenizer, contents)) + self.per_message * len(messages) + self.margin

    def limit(self, max_tokens: int) -> int:
        return self.context - max_tokens

    def fit(self, request):
        """(request to send or None, prompt tokens, shortened?)."""
        limit = self.limit(request.sampling.max_tokens)
        size = self.prompt_tokens(request.messages)
        if size <= limit:
            return request, size, False
        part = getattr(request, "shortenable", "") or ""
        if not part:
            return None, size, False
        part_tokens = count_tokens(self.tokenizer, [part])[0]
        keep = part_tokens - (size - limit) - 4  # 4: a cut may merge tokens differently
        if keep < self.min_kept_tokens:
            return None, size, False
        cut = _nice_cut(part, char_end_of_tokens(self.tokenizer, part, keep))
        short = part[:cut].rstrip()
        messages = [
            dict(m, content=m["content"].replace(part, short, 1)) if part in str(m.get("content") or "") else m
            for m in request.messages
        ]
        shortened = replace(request, messages=messages, shortenable=short)
        new_size = self.prompt_tokens(messages)
        if new_size > limit:
            return None, size, False
        return shortened, new_size, True


def _nice_cut(text: str, end: int) -> int:
    """Back `end` up to a paragraph, sentence or word end within its last fifth."""
    floor = int(end * 0.8)
    for marks in (("\n\n",), ("。", "！", "？", ". ", "! ", "? ", "\n"), (" ", "，", "、")):
        best = max(text.rfind(m, floor, end) for m in marks)
        if best > 0:
            return best + 1
    return end
