"""The pack of a fixed small corpus is pinned by sha256: speed work on render, tokenise,
pack or write must not change one byte of the output (digests taken before that work)."""

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from synth.pack.run import PackOptions, pack
from tests.pack.helpers import chat, default_tokenizer_dir, text, write_jsonl

NATIVE_FILES = ("tokens.bin", "loss_mask.bin", "documents.bin", "sequence_index.bin")


def pinned_corpus(d):
    tool = {
        "id": "tool-0",
        "domain": "kg",
        "kind": "tool_use",
        "tools": json.dumps(
            [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "description": "Look up a fact.",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                    },
                }
            ]
        ),
        "messages": [
            {"role": "user", "content": "Capital of France?"},
            {
                "role": "assistant",
                "content": "",
                "weight": 0,
                "tool_calls": [
                    {"id": "c0", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "Frnace"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c0", "content": "no such entity"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "France"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
            {"role": "assistant", "content": "Paris."},
        ],
    }
    bad = [{"id": "bad-0", "text": ""}, {"id": "bad-1", "messages": [{"role": "robot", "content": "hi"}]}]
    web = write_jsonl(
        d / "web.jsonl",
        [text(i, 15 + 29 * (i % 13), domain=("general", "science")[i % 2]) for i in range(90)]
        + [text(5000, 900)]
        + bad,
    )
    chats = write_jsonl(d / "chats.jsonl", [chat(i, domain=("math", "code")[i % 2]) for i in range(50)] + [tool])
    mix = d / "mix.yaml"
    mix.write_text("by: source\nweights:\n  web: 0.8\n  chats: 0.2\nbudget_tokens: 20000\nmax_repeats: 2\n")
    return web, chats, mix


def content_digest(out):
    files = [p for p in sorted(out.rglob("*")) if p.suffix in (".bin", ".idx") and ".work" not in p.parts]
    digest = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    # packing.parquet by content: its bytes also carry the writer's pyarrow version
    rows = pq.read_table(out / "packing.parquet").to_pylist()
    digest["packing.parquet"] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return digest


# Taken with the code before the pack speed work (commit bb57c51).
PINNED = {
    "native": {
        "tokens.bin": "74054dab8934d956e7e9705d5a80efd9c8ad988d7490127987ef1a3a0b96bae4",
        "loss_mask.bin": "3e01e81a544c7730576b8be0b75903a90ac49d9ffc78e11729bfdddf39391c89",
        "documents.bin": "a57c5f7db0ca4faf25f27a2f6721c6cea4fec6debdafdb377b7b748f9a1a84c8",
        "sequence_index.bin": "852cb9d973026678a89497bcee9f1f295baa8f309d20099190ab549dd905f677",
        "packing.parquet": "352f7af3039ea53643f482446b303b24375eef36919f9fc53cebe71229c77c45",
    },
    "megatron": {
        "megatron/chats_text_document.bin": "b792901283c7d7873de3d1cb9a5be6871817acbac4849fa1bfd909298736fc27",
        "megatron/chats_text_document.idx": "9f4ca986a71499868848e9986c908a3253ceeb36399e5df6ea9c31fff62e25e3",
        "megatron/web_text_document.bin": "04b7bc3f0773315d4b768a6275c4fb864ec7fe596c38ca9b77feb379db98ee44",
        "megatron/web_text_document.idx": "0b9a0eb45623ce4ed146c1e390fca5358807f442434d2fb46e1e657eeab41369",
        "packing.parquet": "af5c064b990d338fb496fd7a67efa088518c5ef51ee981772f26eea240849398",
    },
}

# Without a mix (packed while later input is still being tokenised), taken before that
# change (commit e536c79 plus the column-wise text reader, itself pinned above).
PINNED_NO_MIX = {
    "native": {
        "documents.bin": "c10bd1b6a886b8e855a46353f1258b8fb7512dda5882fb4a60d3bab16280dc94",
        "loss_mask.bin": "578a6429b58650caf5345ed291ecfa58481dc267ac57720af3aad87160dc4e7e",
        "sequence_index.bin": "18dd12a2755360a3b3df320a2c1f877112220b85653c37e890cd1b48d0c770f4",
        "tokens.bin": "4a82b57619f598a07aa001f9157f5350b4569e42a4884b990e15fb297ae67534",
        "packing.parquet": "2d07d29b074386a3a4039b0f9a69d1490404b4ad807f25a01094608b00a1ae42",
    },
    "megatron": {
        "megatron/chats_text_document.bin": "833cf1ef4f8b2d97e76d1253674955fac640c6e1f60e7ab1ff3f9c2620c241e6",
        "megatron/chats_text_document.idx": "779928deb3ae67556c733df441c24f4ecf9807eb6d84fe76659a009b9351db21",
        "megatron/web_text_document.bin": "f601fa4ee2ddf01970936f247852246c93f6c24b6f1fe21b4546081f3d69a5cd",
        "megatron/web_text_document.idx": "11c4bd9ffac5ea5c3f43c11786e005d0d45a6aa88e7c4622ccf0d597e5af4f00",
        "packing.parquet": "7043d3b245a599583edd60fb930819dbf79c5297171a5d7b6087cc6c0185a800",
    },
}


@pytest.mark.parametrize("fmt", ["native", "megatron"])
def test_pack_of_a_fixed_corpus_is_byte_identical_to_the_pinned_one(tmp_path, fmt):
    web, chats, mix = pinned_corpus(tmp_path)
    out = tmp_path / "out"
    res = pack(
        PackOptions(
            [str(web), str(chats)],
            str(default_tokenizer_dir()),
            256,
            str(out),
            format=fmt,
            mix=str(mix),
            seed=7,
            window=32,
        )
    )
    counts = res.manifest["counts"]
    assert counts["repeats"] > 0 and counts["not_sampled"] > 0 and sum(counts["skipped"].values()) == 2
    assert counts["split"] > 0 or fmt == "megatron"
    assert content_digest(out) == PINNED[fmt]


@pytest.mark.parametrize("block_tokens", [1 << 22, 3 * 256, 1])
def test_batch_boundaries_do_not_change_the_pack(tmp_path, monkeypatch, block_tokens):
    """Many small encode batches (text and conversations interleaved across them, encoded
    in the background thread) give the pinned bytes too; so do sequences written in
    blocks of one or three rather than a whole window's at once."""
    from synth.pack import formats, tokenize

    monkeypatch.setattr(tokenize, "BATCH_ROWS", 5)
    monkeypatch.setattr(formats, "BLOCK_TOKENS", block_tokens)
    web, chats, mix = pinned_corpus(tmp_path)
    out = tmp_path / "out"
    pack(
        PackOptions(
            [str(web), str(chats)], str(default_tokenizer_dir()), 256, str(out), mix=str(mix), seed=7, window=32
        )
    )
    assert content_digest(out) == PINNED["native"]


@pytest.mark.parametrize("fmt", ["native", "megatron"])
@pytest.mark.parametrize(
    "batch_rows, batch_bytes, encoders, min_piece, read_ahead",
    [
        (4096, 1 << 20, 1, 64, 16_000_000),
        (7, 1 << 20, 1, 64, 16_000_000),
        (7, 1 << 20, 3, 64, 16_000_000),
        (11, 1 << 20, 3, 2, 1),
        (4096, 1 << 20, 2, 3, 16_000_000),
        (4096, 600, 2, 3, 16_000_000),
    ],
)
def test_pack_without_a_mix_is_byte_identical_to_the_pinned_one(
    tmp_path, fmt, batch_rows, batch_bytes, encoders, min_piece, read_ahead, monkeypatch
):
    """Packed while batches are still being encoded, by one or several encoder threads,
    each batch's encode split between them or not, read far ahead or not at all, batches
    cut by records or by bytes."""
    from synth.pack import run, tokenize

    monkeypatch.setattr(tokenize, "BATCH_ROWS", batch_rows)
    monkeypatch.setattr(tokenize, "BATCH_BYTES", batch_bytes)
    monkeypatch.setattr(tokenize, "MIN_PIECE", min_piece)
    monkeypatch.setattr(tokenize, "READ_AHEAD_CHARS", read_ahead)
    monkeypatch.setattr(run, "encoder_threads", lambda workers: encoders)
    web, chats, _ = pinned_corpus(tmp_path)
    out = tmp_path / "out"
    pack(PackOptions([str(web), str(chats)], str(default_tokenizer_dir()), 256, str(out), format=fmt, window=32))
    assert content_digest(out) == PINNED_NO_MIX[fmt]
