"""Renderings of canonical tool-use samples for common training stacks.

- `template_messages`: OpenAI messages made ready for `apply_chat_template`: tool-call
  `arguments` become objects (Qwen2.5, Hermes and Llama 3.1 templates `tojson` them,
  so a JSON string would be rendered as a quoted string) and null keys are removed.
- `to_sharegpt`: ShareGPT with function calls (LLaMA-Factory convention): roles
  human / gpt / function_call / observation, `system` and `tools` fields.
- `to_hermes`: Hermes function-calling (NousResearch convention): tools in the system
  prompt inside <tools></tools>, calls as <tool_call>{json}</tool_call> in gpt turns,
  results as <tool_response>{json}</tool_response> in tool turns.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

FORMATS = ("sharegpt", "hermes", "openai")


def _load(value):
    return json.loads(value) if isinstance(value, str) else value


def template_messages(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        clean = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            clean["tool_calls"] = [
                {"id": c["id"], "type": c["type"],
                 "function": {"name": c["function"]["name"], "arguments": _load(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ]
        if clean.get("role") == "assistant" and "content" not in clean:
            clean["content"] = ""
        out.append(clean)
    return out


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
            if m.get("content"):
                conv.append({"from": "gpt", "value": m["content"]})
            calls = [{"name": c["function"]["name"], "arguments": _load(c["function"]["arguments"])}
                     for c in m["tool_calls"]]
            conv.append({"from": "function_call",
                         "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)})
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
            value = pending[0] if len(pending) == 1 else json.dumps([json.loads(v) for v in pending], ensure_ascii=False)
            merged.append({"from": "observation", "value": value})
            pending = []
        if turn is not None:
            merged.append(turn)
    return {"id": sample.get("id"), "system": system, "tools": json.dumps(_load(sample["tools"]), ensure_ascii=False),
            "conversations": merged}


def hermes_system(system: str | None, tools: list[dict]) -> str:
    from kg.prompts import load_prompt

    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return load_prompt("hermes_system")["template"].format(system=(system + "\n\n") if system else "", tools=listing)


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
    return {"id": sample.get("id"), "messages": template_messages(sample["messages"]),
            "tools": _load(sample["tools"]), "meta": _load(sample.get("meta"))}


def iter_samples(path: str | Path) -> Iterator[dict]:
    """Rows of a run directory (RUN/output), a folder of shards, or one parquet file."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        files = sorted((p / "output").glob("*.parquet")) if (p / "output").is_dir() else sorted(p.glob("*.parquet"))
    else:
        files = [p]
    if not files:
        raise FileNotFoundError(f"no parquet shards in {p}")
    for f in files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=1024):
            yield from batch.to_pylist()


def export(path: str | Path, fmt: str, out: str | Path) -> int:
    convert = {"sharegpt": to_sharegpt, "hermes": to_hermes, "openai": to_openai}[fmt]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for sample in iter_samples(path):
            f.write(json.dumps(convert(sample), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(out)  # readers never see a half-written export
    return n
