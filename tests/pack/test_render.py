"""Loss masks from character offsets, on real chat templates (shipped in trl)."""

import json

import pytest

from synth.pack.render import LossPolicy, Renderer, Skip, load_tokenizer
from tests.pack.helpers import default_tokenizer_dir, tokenizer_with_template

TEMPLATES = {"qwen2_5.jinja": "<|im_end|>", "llama3_1.jinja": "<|eot_id|>"}


@pytest.fixture(scope="module", params=list(TEMPLATES))
def templated(request, tmp_path_factory):
    folder = tokenizer_with_template(
        default_tokenizer_dir(), tmp_path_factory.mktemp("tok") / request.param, request.param
    )
    return load_tokenizer(folder), TEMPLATES[request.param]


def masked_text(tok, rendered) -> str:
    ids = rendered.tokens[rendered.mask.astype(bool)]
    return tok.decode(ids.tolist(), skip_special_tokens=False)


def test_plain_chat_mask_is_exactly_the_assistant_turn(templated):
    tok, end = templated
    r = Renderer(tok, LossPolicy())
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 8 plus 8?"},
        {"role": "assistant", "content": "8 plus 8 is 16."},
        {"role": "user", "content": "And 2 plus 2?"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
    ]
    out = r.render_chat(msgs, None)
    assert masked_text(tok, out) == f"8 plus 8 is 16.{end}2 plus 2 is 4.{end}"
    assert out.tokens[-1] == r.eod_id and out.mask[-1] == 0
    # the whole conversation decodes back to the template's rendering
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(out.tokens[:-1].tolist(), skip_special_tokens=False) == full


def tool_conversation(wrong_weight):
    def call(name, args):
        return {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("get_capital", {"country": "Atlantis"})],
            "weight": wrong_weight,
        },
        {
            "role": "tool",
            "content": '{"error": "unknown entity Atlantis"}',
            "tool_call_id": "c1",
            "name": "get_capital",
        },
        {
            "role": "assistant",
            "content": "Let me fix that.",
            "tool_calls": [call("get_capital", {"country": "France"})],
        },
        {"role": "tool", "content": '{"result": "tool-output-Paris"}', "tool_call_id": "c1", "name": "get_capital"},
        {"role": "assistant", "content": "The capital is Paris."},
    ]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_capital",
            "description": "Capital of a country",
            "parameters": {"type": "object", "properties": {"country": {"type": "string"}}},
        },
    }
]


def test_weight_zero_turn_and_tool_results_are_not_trained(templated):
    tok, end = templated
    r = Renderer(tok, LossPolicy())
    trained = masked_text(tok, r.render_chat(tool_conversation(0), TOOLS))
    assert "Atlantis" not in trained  # the deliberately wrong call
    assert "France" in trained and "get_capital" in trained  # the recovery call
    assert trained.endswith(f"The capital is Paris.{end}")
    assert trained.count(end) == 2  # two trained assistant turns, each with its end token
    for never in ("You are terse", "capital of France?", "tool-output-Paris", "unknown entity"):
        assert never not in trained
    # without weight 0 the wrong call is trained on too
    assert "Atlantis" in masked_text(tok, r.render_chat(tool_conversation(None), TOOLS))


def test_other_roles_count_only_when_asked(templated):
    tok, _ = templated
    msgs = tool_conversation(0)
    with_tools = masked_text(tok, Renderer(tok, LossPolicy.parse("assistant,tool")).render_chat(msgs, TOOLS))
    assert "tool-output-Paris" in with_tools and "capital of France?" not in with_tools
    everything = Renderer(tok, LossPolicy.parse("all")).render_chat(msgs, TOOLS)
    assert everything.mask[:-1].all()


def test_bad_chat_records_are_skips_with_reasons():
    tok = load_tokenizer(default_tokenizer_dir())
    r = Renderer(tok, LossPolicy())
    bad_args = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
        },
    ]
    cases = {
        "unknown_role": [{"role": "wizard", "content": "x"}],
        "tool_arguments_not_json": bad_args,
        "empty_messages": [],
    }
    for reason, msgs in cases.items():
        with pytest.raises(Skip) as exc:
            r.render_chat(msgs, None)
        assert exc.value.reason == reason


def test_a_template_that_raises_is_a_skip(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_tokenizer_dir()))
    tok.chat_template = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}{{ m.content }}{% endfor %}"
    tok.save_pretrained(str(tmp_path))
    r = Renderer(load_tokenizer(tmp_path), LossPolicy())
    with pytest.raises(Skip) as exc:
        r.render_chat(tool_conversation(0), TOOLS)
    assert exc.value.reason == "chat_template_error" and "no tools here" in exc.value.detail


@pytest.mark.parametrize(
    "body",
    [
        "{{ messages[0].__class__.__mro__ }}",
        "{% set _ = messages.append(messages[0]) %}",
        "{% for m in messages %}{{ loop.__init__.__globals__ }}{% endfor %}",
        "{{ messages[0].content.__class__.__base__ }}",
    ],
)
def test_the_sandbox_checking_once_still_refuses_what_it_refused(tmp_path, body):
    """Safe attributes of plain values are decided once per (type, name); unsafe ones
    stay refused, also after the safe ones of the same types were decided."""
    from transformers import AutoTokenizer
    from transformers.utils.chat_template_utils import _compile_jinja_template

    safe = "{% for m in messages %}{% if loop.first %}[{% endif %}{{ m.content.upper() }}{% endfor %}"
    renderers = {}
    for name, template in (("safe", safe), ("unsafe", safe + body)):
        tok = AutoTokenizer.from_pretrained(str(default_tokenizer_dir()))
        tok.chat_template = template
        tok.save_pretrained(str(tmp_path / name))
        renderers[name] = Renderer(load_tokenizer(tmp_path / name), LossPolicy())
        env = _compile_jinja_template(renderers[name].tok.chat_template).environment
        assert type(env).__name__ == "_SandboxCheckingOnce"
    # the safe part renders first: the attributes it uses, of the same types, are decided
    assert renderers["safe"].chat_text_and_spans([{"role": "user", "content": "hi"}], None)[0] == "[HI"
    r = renderers["unsafe"]
    with pytest.raises(Skip) as exc:
        r.render_chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], None)
    assert exc.value.reason == "chat_template_error"


def test_text_records_train_on_every_token_and_end_with_eod():
    tok = load_tokenizer(default_tokenizer_dir())
    r = Renderer(tok, LossPolicy())
    [out] = r.text_masks(r.encode_texts(["Hello there, world."]))
    assert out.mask.all() and out.tokens[-1] == r.eod_id
    assert tok.decode(out.tokens[:-1].tolist()) == "Hello there, world."
    [none] = Renderer(tok, LossPolicy.parse(text="none")).text_masks([[1, 2]])
    assert not none.mask.any()


def test_kg_self_correction_wrong_call_is_not_trained(shared_data, tmp_path):
    from kg.config import WalkConfig
    from kg.generate import SampleFactory, sample_seeds
    from kg.graph import load_graph

    graph = load_graph(shared_data / "kg" / "nations", cache=tmp_path / "cache")
    records = [
        o.record for o in SampleFactory(graph, WalkConfig(error_share=1.0)).make(sample_seeds(30, 0, 60)) if o.record
    ]
    folder = tokenizer_with_template(default_tokenizer_dir(), tmp_path / "tok", "qwen2_5.jinja")
    tok = load_tokenizer(folder)
    r = Renderer(tok, LossPolicy())
    checked = 0
    for rec in records:
        meta = json.loads(rec["meta"]) if isinstance(rec["meta"], str) else rec["meta"]
        if meta.get("variant") != "self_correction":
            continue
        msgs = rec["messages"]
        [wrong] = [i for i, m in enumerate(msgs) if m.get("weight") == 0]
        assert msgs[wrong]["role"] == "assistant" and msgs[wrong]["tool_calls"]
        # the recovery is the next assistant turn after the error result
        fix = next(m for m in msgs[wrong + 1 :] if m["role"] == "assistant")
        out = r.render_chat(msgs, rec["tools"])
        trained = masked_text(tok, out)
        assert fix["content"] in trained
        untrained = Renderer(tok, LossPolicy()).render_chat([{**m, "weight": None} for m in msgs], rec["tools"])
        assert out.mask.sum() < untrained.mask.sum()  # the wrong call's tokens are what weight 0 removes
        checked += 1
    assert checked >= 3
