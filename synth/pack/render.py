"""Records -> tokens and a per-token loss mask.

Chat records go through the tokenizer's own chat template. Most templates have no
`{% generation %}` markers, so the mask is derived from character offsets: the text a
turn adds is what rendering the conversation up to and including that turn adds to
the rendering up to the turn before it (with the generation prompt, for assistant
turns, so the header `<|im_start|>assistant\\n` stays unmasked). The rendered text is
tokenised once with offsets, and a token counts when it starts inside a counted span.
A template whose renderings are not prefixes of each other cannot be masked this way:
such records are skipped and counted, never masked wrongly.
"""

from __future__ import annotations

import array
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = ("system", "user", "assistant", "tool")


class TokenizerError(ValueError):
    """--tokenizer is missing or not a tokenizer folder."""


class Skip(Exception):
    """A record that cannot be rendered: counted with its reason, never a traceback."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


_LOADED: dict[tuple, object] = {}


def load_tokenizer(path: str | Path):
    """A fast (Rust) tokenizer from a local folder; offsets need the fast one. Loaded
    once per process and folder state (loading takes about a second; a pack, its
    in-process workers and repeated packs share it; a changed file loads it again)."""
    p = Path(path)
    if p.is_dir():
        key = (
            str(p.resolve()),
            tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir()) if f.is_file()),
        )
        if key not in _LOADED:
            _LOADED.clear()  # one tokenizer kept: it is large
            _LOADED[key] = _load_tokenizer(p, path)
        return _LOADED[key]
    return _load_tokenizer(p, path)


def _load_tokenizer(p: Path, path: str | Path):
    if not p.exists():
        raise TokenizerError(f"--tokenizer {path}: no such folder")
    if not p.is_dir() or not any(
        (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    ):
        raise TokenizerError(f"--tokenizer {path}: not a tokenizer folder (no tokenizer.json or tokenizer_config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a broken folder
        raise TokenizerError(
            f"--tokenizer {path}: cannot load a tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(
            f"--tokenizer {path}: only fast (tokenizer.json) tokenizers give the offsets loss masks need"
        )
    return tok


def tokenizer_fingerprint(path: str | Path) -> str:
    """sha256 over the files that define the tokenisation (a changed file means re-tokenise)."""
    h = hashlib.sha256()
    p = Path(path)
    for name in sorted(os.listdir(p)):
        f = p / name
        if f.is_file() and (
            name.startswith("tokenizer")
            or name
            in ("vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja", "chat_template.json")
        ):
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@dataclass
class LossPolicy:
    """Which tokens count. `chat_roles`: roles whose turns count ("all" = every token of
    the rendered conversation); `text`: whether plain text records count."""

    chat_roles: tuple[str, ...] = ("assistant",)
    text: bool = True
    eod_in_text: bool = True

    @classmethod
    def parse(cls, chat: str = "assistant", text: str = "all") -> LossPolicy:
        roles = tuple(r.strip() for r in chat.split(",") if r.strip())
        bad = [r for r in roles if r not in (*ROLES, "all")]
        if bad or not roles:
            raise ValueError(
                f"--chat-loss: unknown role {bad[0] if bad else chat!r}; allowed: {', '.join(ROLES)}, all (comma-separated)"
            )
        if text not in ("all", "none"):
            raise ValueError(f"--text-loss must be all or none, not {text!r}")
        return cls(chat_roles=roles, text=text == "all")


@dataclass
class Rendered:
    tokens: np.ndarray  # int64 ids, end-of-document token included
    mask: np.ndarray  # uint8, 1 = trained on
    kind_hint: str = "text"
    extra: dict = field(default_factory=dict)


def check_attributes_once(chat_template: str | dict) -> None:
    """Makes the sandbox that renders `chat_template` check each attribute of a plain
    value once per (type, name) instead of at every access: whether `loop.first` or
    `message.items` is safe depends on nothing else, and the checks were a quarter of a
    render's time. The decisions are the sandbox's own; objects of other types are
    checked every time. The sandbox is the one `transformers` compiled (and caches) for
    the template; a `transformers` without it, or another sandbox, is left as it is."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:
        return
    templates = chat_template.values() if isinstance(chat_template, dict) else [chat_template]
    for template in templates:
        try:
            env = _compile_jinja_template(template).environment
        except Exception:  # noqa: BLE001 - a template that does not compile fails (and is counted) when used
            continue
        if type(env) is ImmutableSandboxedEnvironment:
            env.__class__ = _SandboxCheckingOnce


class _SandboxCheckingOnce(ImmutableSandboxedEnvironment):
    _PLAIN = frozenset({dict, list, tuple, str, int, float, bool, type(None), LoopContext})
    _decided: dict[tuple[type, str], bool] = {}

    def is_safe_attribute(self, obj, attr, value) -> bool:
        kind = type(obj)
        if kind not in self._PLAIN:
            return super().is_safe_attribute(obj, attr, value)
        safe = self._decided.get((kind, attr))
        if safe is None:
            safe = self._decided[kind, attr] = super().is_safe_attribute(obj, attr, value)
        return safe


def clean_messages(messages) -> list[dict]:
    """Validate and normalise OpenAI-style messages for a chat template: known roles,
    tool-call arguments as objects (templates `tojson` them), null keys removed."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            raise Skip("messages_not_json") from None
    if not isinstance(messages, (list, tuple)) or not messages:
        raise Skip("empty_messages")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise Skip("bad_message", f"message is {type(m).__name__}, not an object")
        role = m.get("role")
        if role not in ROLES:
            raise Skip("unknown_role", f"role {role!r}")
        clean = {k: v for k, v in m.items() if v is not None}
        calls = m.get("tool_calls")
        if calls:
            fixed = []
            for c in calls:
                fn = dict((c or {}).get("function") or {})
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        fn["arguments"] = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise Skip("tool_arguments_not_json", f"arguments of {fn.get('name')!r} are not JSON") from None
                fixed.append({**{k: v for k, v in c.items() if v is not None}, "function": fn})
            clean["tool_calls"] = fixed
        if role == "assistant" and clean.get("content") is None:
            clean["content"] = ""
        out.append(clean)
    return out


def parse_tools(tools):
    if tools is None:
        return None
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            tools = json.loads(tools)
        except ValueError:
            raise Skip("tools_not_json") from None
    return list(tools) or None


class Renderer:
    """Renders and tokenises records with one tokenizer and one loss policy."""

    def __init__(self, tokenizer, policy: LossPolicy, eod_token: str | None = None):
        self.tok = tokenizer
        self.backend = tokenizer.backend_tokenizer
        self.policy = policy
        eod = eod_token or tokenizer.eos_token
        if eod is None:
            raise TokenizerError("the tokenizer has no end-of-sequence token: give --eod-token")
        eod_id = tokenizer.convert_tokens_to_ids(eod)
        if eod_id is None or (
            tokenizer.unk_token_id is not None and eod_id == tokenizer.unk_token_id and eod != tokenizer.unk_token
        ):
            raise TokenizerError(f"--eod-token {eod!r} is not a token of this tokenizer")
        self.eod_id = int(eod_id)
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.has_template:
            check_attributes_once(tokenizer.chat_template)

    # -- chat ------------------------------------------------------------------
    def _template(self, messages, tools, generation_prompt=False) -> str:
        try:
            return self.tok.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:  # noqa: BLE001 - jinja raise_exception, TemplateError, TypeError on odd data
            raise Skip(
                "chat_template_error", str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            ) from None

    def chat_text_and_spans(self, messages, tools) -> tuple[str, list[tuple[int, int]]]:
        if not self.has_template:
            raise Skip("no_chat_template", "the tokenizer has no chat template")
        msgs = clean_messages(messages)
        tools = parse_tools(tools)
        full = self._template(msgs, tools)
        roles = self.policy.chat_roles
        if "all" in roles:
            return full, [(0, len(full))]
        # Renderings of the first k messages (with or without the generation prompt), each
        # made once: the last turn's rendering is the whole conversation's.
        prefixes = {(len(msgs), False): full, (0, False): "", (0, True): ""}

        def prefix(k: int, generation_prompt: bool = False) -> str:
            if (k, generation_prompt) not in prefixes:
                prefixes[k, generation_prompt] = self._template(msgs[:k], tools, generation_prompt=generation_prompt)
            return prefixes[k, generation_prompt]

        spans = []
        for i, m in enumerate(msgs):
            if m["role"] not in roles or m.get("weight", 1) == 0:
                continue
            before = prefix(i, m["role"] == "assistant")
            upto = prefix(i + 1)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise Skip(
                    "chat_template_not_incremental", "renderings of the conversation's prefixes are not prefixes of it"
                )
            start, end = len(before), len(before) + len(upto[len(before) :].rstrip())
            if end > start:
                spans.append((start, end))
        return full, spans

    def render_chat(self, messages, tools) -> Rendered:
        text, spans = self.chat_text_and_spans(messages, tools)
        return self.masked_chat(self.backend.encode(text, add_special_tokens=False), spans)

    def encode_chats(self, rendered: list[tuple[str, list[tuple[int, int]]]]) -> list[Rendered]:
        """Rendered conversations (text, trained spans) in one batched encode with offsets."""
        encodings = self.backend.encode_batch([text for text, _ in rendered], add_special_tokens=False)
        return [self.masked_chat(enc, spans) for enc, (_, spans) in zip(encodings, rendered)]

    def masked_chat(self, enc, spans: list[tuple[int, int]]) -> Rendered:
        """Tokens and mask of one encoded conversation: a token is trained when it starts
        inside a trained span."""
        ids = np.asarray(enc.ids, dtype=np.int64)
        starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(ids))
        mask = np.zeros(len(ids) + 1, dtype=np.uint8)
        for s, e in spans:
            mask[:-1][(starts >= s) & (starts < e)] = 1
        return Rendered(np.append(ids, self.eod_id), mask, "chat")

    # -- text ------------------------------------------------------------------
    def text_masks(self, ids_list: list[list[int]]) -> list[Rendered]:
        on = 1 if self.policy.text else 0
        out = []
        for ids in ids_list:
            arr = np.empty(len(ids) + 1, dtype=np.int64)
            arr[:-1] = ids
            arr[-1] = self.eod_id
            mask = np.full(len(arr), on, dtype=np.uint8)
            out.append(Rendered(arr, mask, "text"))
        return out

    def encode_text_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Plain-text records in one batched encode: all their tokens, each document
        followed by the end-of-document token, as one flat int32 array, and the end
        offset of each document in it (no per-record arrays: this is the hot path)."""
        ids = self.encode_texts(texts)
        flat = array.array("i")  # C int: 32 bits wherever numpy's int32 is
        for doc in ids:
            flat.fromlist(doc)
            flat.append(self.eod_id)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        return np.frombuffer(flat, dtype=np.int32), np.cumsum(lengths + 1)

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        # Plain text needs no offsets: the fast path skips computing them.
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]
