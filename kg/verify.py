"""Independent re-execution of a conversation against the graph.

Nothing the builder knew is trusted: the tool calls are read back from the
messages, executed again, and every recorded result must match byte for byte;
the query tree in `meta` is evaluated again and must give `meta.answer`; the last
successful result must be that answer, and the final message must name it.
"""

from __future__ import annotations

import json

from kg.query import QueryError, anchors_of, evaluate
from kg.tools import Executor, dump


def _load(value):
    return json.loads(value) if isinstance(value, str) else value


def verify(sample: dict, executor: Executor) -> str | None:
    """None when the sample verifies, else the reason it does not (a short snake_case code)."""
    graph = executor.graph
    try:
        messages = sample["messages"]
        tools = _load(sample["tools"])
        meta = _load(sample["meta"])
    except (KeyError, TypeError, json.JSONDecodeError):
        return "malformed_sample"
    if sample.get("kind") != "tool_use":
        return "wrong_kind"
    if len(messages) < 3 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return "bad_message_order"
    try:
        offered = {t["function"]["name"] for t in tools if t.get("type") == "function"}
    except (KeyError, TypeError):
        return "malformed_tools"
    if len(offered) != len(tools):
        return "malformed_tools"
    pending: dict[str, tuple[str, str]] = {}
    seen_ids: set[str] = set()
    last_result = None
    calls = 0
    final = None
    for k, m in enumerate(messages[2:], start=2):
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            if pending:
                return "call_before_results"  # results of the previous calls must come first
            for call in m["tool_calls"]:
                cid = call.get("id")
                fn = call.get("function") or {}
                if not cid or cid in seen_ids or call.get("type") != "function":
                    return "bad_tool_call_id"
                name, arguments = fn.get("name"), fn.get("arguments")
                if not isinstance(name, str) or not isinstance(arguments, str):
                    return "bad_tool_call_format"
                if name in executor.registry.known_names and name not in offered:
                    return "call_to_unoffered_tool"
                seen_ids.add(cid)
                pending[cid] = (name, arguments)
                calls += 1
        elif role == "tool":
            cid = m.get("tool_call_id")
            if cid not in pending:
                return "orphan_tool_result"
            name, arguments = pending.pop(cid)
            result = executor.call(name, arguments)
            if dump(result) != m.get("content"):
                return "tool_result_mismatch"
            if "error" not in result:
                last_result = result
        elif role == "assistant":
            if k != len(messages) - 1:
                return "final_answer_not_last"
            final = m.get("content") or ""
        else:
            return "bad_role"
    if pending:
        return "unanswered_tool_call"
    if final is None:
        return "no_final_answer"

    if meta.get("variant") == "irrelevance":
        if calls:
            return "irrelevance_with_calls"
        if meta.get("answer"):
            return "irrelevance_with_answer"
        relation = meta.get("unavailable_relation")
        if relation is not None:
            r = graph.relation_index.get(relation)
            if r is None:
                return "unknown_relation"
            served = {executor.registry.by_dr[2 * r].name, executor.registry.by_dr[2 * r + 1].name}
            if served & offered:
                return "irrelevance_tool_offered"
        return None

    answer = meta.get("answer")
    try:
        if evaluate(meta["query"], graph) != answer:
            return "query_answer_mismatch"
        if anchors_of(meta["query"]) != meta.get("anchors"):
            return "anchors_mismatch"
    except (QueryError, KeyError, TypeError):
        return "bad_query"
    if last_result is None or last_result.get("entities") != answer:
        return "final_result_mismatch"
    low = final.lower()
    if any(a.lower() not in low for a in answer):
        return "final_answer_incomplete"
    return None
