"""Renderings of canonical tool-use samples for common training stacks.

- `template_messages`: OpenAI messages made ready for `apply_chat_template`: tool-call
  `arguments` become objects (Qwen2.5, Hermes and Llama 3.1 templates `tojson` them,
  so a JSON string would be rendered as a quoted string) and null keys are removed.
- `to_sharegpt`: ShareGPT with function calls (LLaMA-Factory convention): roles
  human / gpt / function_call / observation, `system` and `tools` fields.
- `to_hermes`: Hermes function-calling (NousResearch convention): tools in the system
  prompt inside <tools></tools>, calls as <tool_call>{json}</tool_call> in gpt turns,
  results as <tool_response>{json}</tool_response> in tool turns.
- `to_mistral`: mistral-finetune's tool-use JSONL (messages + tools), with 9-character
  alphanumeric tool-call ids and no text beside a call (a self-correction's reflection
  is left out), the shape mistral-common's validator and tokenizer accept.
- `sequential_messages`: parallel calls serialised into one call per assistant turn, each
  followed by its result, for templates that refuse parallel calls (Llama 3.1). Any
  format can be exported this way (`synth kg export --sequential`).

Assistant messages may carry `weight` (0 marks a deliberately wrong call that a trainer
should not learn to produce): kept by the openai and mistral formats (mistral-finetune
reads it), dropped by the text formats, which have no place for it.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterator
from pathlib import Path

FORMATS = ("sharegpt", "hermes", "openai", "mistral")


def _load(value):
    return json.loads(value) if isinstance(value, str) else value


def template_messages(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        clean = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            clean["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": c["type"],
                    "function": {"name": c["function"]["name"], "arguments": _load(c["function"]["arguments"])},
                }
                for c in m["tool_calls"]
            ]
        if clean.get("role") == "assistant" and "content" not in clean:
            clean["content"] = ""
        out.append(clean)
    return out


def sequential_messages(messages: list[dict]) -> list[dict]:
    """One tool call per assistant message, each answered before the next is made.

    The parallel calls of a message are independent (their inputs were all known), so
    making them one after the other is still a correct conversation; text the message
    had goes with the first call.
    """
    out: list[dict] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        calls = m.get("tool_calls") or []
        if m.get("role") != "assistant" or len(calls) < 2:
            out.append(m)
            i += 1
            continue
        results = {r.get("tool_call_id"): r for r in messages[i + 1 : i + 1 + len(calls)] if r.get("role") == "tool"}
        if len(results) != len(calls):
            raise ValueError("parallel calls must be followed by one result each")
        for k, call in enumerate(calls):
            out.append({**m, "content": m.get("content") if k == 0 else None, "tool_calls": [call]})
            out.append(results[call["id"]])
        i += 1 + len(calls)
    return out


def _mistral_id(call_id: str, sample_id: str | None) -> str:
    # Mistral's tokenizers require [a-zA-Z0-9]{9}; a hash keeps ids distinct per sample.
    digest = hashlib.sha256(f"{sample_id}\x1f{call_id}".encode()).digest()
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[b % len(alphabet)] for b in digest[:9])


def to_mistral(sample: dict) -> dict:
    ids: dict[str, str] = {}
    out = []
    for m in sample["messages"]:
        role = m["role"]
        if role == "assistant":
            weight = {"weight": m["weight"]} if m.get("weight") is not None else {}
            calls = m.get("tool_calls") or []
            # Mistral's tokenizers refuse text and calls in one assistant turn (and merge
            # consecutive assistant turns before checking), so the short reflection that
            # precedes a corrected call is left out; the wrong call, its error and the fix stay.
            if calls:
                mapped = []
                for c in calls:
                    ids[c["id"]] = _mistral_id(c["id"], sample.get("id"))
                    args = c["function"]["arguments"]
                    mapped.append(
                        {
                            "id": ids[c["id"]],
                            "type": "function",
                            "function": {
                                "name": c["function"]["name"],
                                "arguments": args if isinstance(args, str) else json.dumps(args),
                            },
                        }
                    )
                out.append({"role": "assistant", "tool_calls": mapped, **weight})
            else:
                out.append({"role": "assistant", "content": m.get("content") or "", **weight})
        elif role == "tool":
            out.append(
                {
                    "role": "tool",
                    "content": m["content"],
                    "tool_call_id": ids[m["tool_call_id"]],
                    **({"name": m["name"]} if m.get("name") else {}),
                }
            )
        else:
            out.append({"role": role, "content": m["content"]})
    return {"id": sample.get("id"), "messages": out, "tools": _load(sample["tools"])}


def to_sharegpt(sample: dict) -> dict:
    conv = []
    system = None
    for m in sample["messages"]:
        role = m["role"]
        if role == "system":
            system = m["content"]
        elif role == "user":
            conv.append({"from": "human", "value": m["content"]})
        elif role == "assistant" and m.get("tool_calls"):
            # LLaMA-Factory wants human/observation and gpt/function_call turns to
            # alternate (else it skips the example), so text beside a call (the
            # reflection before a corrected call) cannot be a gpt turn of its own.
            calls = [
                {"name": c["function"]["name"], "arguments": _load(c["function"]["arguments"])} for c in m["tool_calls"]
            ]
            conv.append(
                {
                    "from": "function_call",
                    "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False),
                }
            )
        elif role == "assistant":
            conv.append({"from": "gpt", "value": m["content"]})
        elif role == "tool":
            conv.append({"from": "observation", "value": m["content"]})
    # LLaMA-Factory expects one observation turn per function_call turn: parallel
    # results are merged into one JSON list, in call order.
    merged: list[dict] = []
    pending: list[str] = []
    for turn in [*conv, None]:
        if turn is not None and turn["from"] == "observation":
            pending.append(turn["value"])
            continue
        if pending:
            value = (
                pending[0] if len(pending) == 1 else json.dumps([json.loads(v) for v in pending], ensure_ascii=False)
            )
            merged.append({"from": "observation", "value": value})
            pending = []
        if turn is not None:
            merged.append(turn)
    return {
        "id": sample.get("id"),
        "system": system,
        "tools": json.dumps(_load(sample["tools"]), ensure_ascii=False),
        "conversations": merged,
    }


def hermes_system(system: str | None, tools: list[dict]) -> str:
    from synth.prompts import load_prompt

    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return load_prompt("kg/hermes_system").template.format(system=(system + "\n\n") if system else "", tools=listing)


def to_hermes(sample: dict) -> dict:
    tools = _load(sample["tools"])
    conv = []
    for m in sample["messages"]:
        role = m["role"]
        if role == "system":
            conv.append({"from": "system", "value": hermes_system(m["content"], tools)})
        elif role == "user":
            conv.append({"from": "human", "value": m["content"]})
        elif role == "assistant":
            parts = [m["content"]] if m.get("content") else []
            for c in m.get("tool_calls") or []:
                call = {"name": c["function"]["name"], "arguments": _load(c["function"]["arguments"])}
                parts.append("<tool_call>\n" + json.dumps(call, ensure_ascii=False) + "\n</tool_call>")
            conv.append({"from": "gpt", "value": "\n".join(parts)})
        elif role == "tool":
            body = json.dumps({"name": m.get("name"), "content": _load(m["content"])}, ensure_ascii=False)
            response = "<tool_response>\n" + body + "\n</tool_response>"
            if conv and conv[-1]["from"] == "tool":  # parallel results share one turn
                conv[-1]["value"] += "\n" + response
            else:
                conv.append({"from": "tool", "value": response})
    return {"id": sample.get("id"), "conversations": conv, "tools": json.dumps(tools, ensure_ascii=False)}


def to_openai(sample: dict) -> dict:
    return {
        "id": sample.get("id"),
        "messages": template_messages(sample["messages"]),
        "tools": _load(sample["tools"]),
        "meta": _load(sample.get("meta")),
    }


def iter_samples(path: str | Path, split: str = "train") -> Iterator[dict]:
    """Rows of a run directory (RUN/output, or RUN/eval for split="eval"), a folder of
    shards, or one parquet file."""
    import pyarrow.parquet as pq

    p = Path(path)
    sub = "eval" if split == "eval" else "output"
    if p.is_dir():
        files = sorted((p / sub).glob("*.parquet")) if (p / sub).is_dir() else sorted(p.glob("*.parquet"))
    else:
        files = [p]
    if not files:
        if split == "eval" and p.is_dir():
            raise FileNotFoundError(f"{p / sub}: no evaluation split in this run (walk with --eval-split)")
        raise FileNotFoundError(f"no parquet shards in {p}")
    for f in files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()


def convert(sample: dict, fmt: str, sequential: bool = False) -> dict:
    """One sample in format `fmt`; `sequential` first splits parallel calls into turns."""
    if sequential:
        sample = {**sample, "messages": sequential_messages(sample["messages"])}
    if fmt != "openai" and fmt != "mistral":
        sample = {**sample, "messages": [{k: v for k, v in m.items() if k != "weight"} for m in sample["messages"]]}
    return {"sharegpt": to_sharegpt, "hermes": to_hermes, "openai": to_openai, "mistral": to_mistral}[fmt](sample)


def export(path: str | Path, fmt: str, out: str | Path, sequential: bool = False, split: str = "train") -> int:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for sample in iter_samples(path, split):
            f.write(json.dumps(convert(sample, fmt, sequential), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)  # readers never see a half-written export
    return n
