"""Megatron output read back by megatron-core's own IndexedDataset (CPU), for a 49K
vocabulary (uint16) and a 130K one (int32, built offline from mistral_common's tekken
rank file)."""

import json
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from synth.cli import app
from tests.pack.helpers import chat, default_tokenizer_dir, text, write_jsonl


@pytest.fixture(scope="session")
def large_tokenizer(tmp_path_factory):
    pytest.importorskip("mistral_common")
    from synth.pack.ranks import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok") / "tekken-131k")


def indexed_dataset(prefix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    return mod.IndexedDataset(str(prefix))


@pytest.mark.parametrize("which, dtype", [("small", np.uint16), ("large", np.int32)])
def test_megatron_files_read_back_with_megatron_core(which, dtype, tmp_path, request):
    from transformers import AutoTokenizer

    tok_dir = default_tokenizer_dir() if which == "small" else request.getfixturevalue("large_tokenizer")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    web = [text(i, 30 + i, domain="general") for i in range(25)] + [{"id": "unicode", "text": "Grüße 漢字 – ünïcödé ✓"}]
    docs = write_jsonl(tmp_path / "web.jsonl", web)
    chats = write_jsonl(tmp_path / "chats.jsonl", [chat(i) for i in range(5)] if which == "small" else [])
    inputs = [docs] + ([chats] if which == "small" else [])
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "pack",
            *map(str, inputs),
            "--tokenizer",
            str(tok_dir),
            "--seq-len",
            "64",
            "--output",
            str(out),
            "--format",
            "megatron",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["dtype"] == np.dtype(dtype).name
    assert (m["tokenizer"]["vocab_size"] >= 65500) == (which == "large")
    rows = [r for r in pq.read_table(out / "packing.parquet").to_pylist() if r["status"] == "packed"]
    by_id = {r["id"]: r for r in web}
    eod = m["tokenizer"]["eod_id"]
    for prefix_name in {r["output"] for r in rows}:
        ds = indexed_dataset(out / "megatron" / prefix_name)
        mine = [r for r in rows if r["output"] == prefix_name]
        assert len(ds) == len(mine)
        assert list(ds.document_indices) == list(range(len(mine) + 1))
        assert ds.index.dtype == dtype
        for r in mine:
            got = np.asarray(ds[r["sequence"]])
            assert got.dtype == dtype and len(got) == r["tokens"] and got[-1] == eod
            if r["record_id"] in by_id:
                expected = tok(by_id[r["record_id"]]["text"], add_special_tokens=False)["input_ids"] + [eod]
                assert got.tolist() == expected
    if which == "large":
        # ids above uint16's range are really there and survive the round trip
        ds = indexed_dataset(out / "megatron" / "web_text_document")
        assert max(int(np.asarray(ds[i]).max()) for i in range(len(ds))) > 65535
    # the header, byte by byte: magic, version 1 <Q, dtype code <B, sequence and document counts <Q
    import struct

    from synth.pack.formats import read_megatron_index

    idx = next((out / "megatron").glob("*.idx"))
    raw = idx.read_bytes()
    code = 8 if dtype == np.uint16 else 4
    n = len(read_megatron_index(idx)["lengths"])
    assert raw[:34] == b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, n, n + 1)
    assert len(raw) == 34 + 4 * n + 8 * n + 8 * (n + 1)
    blend = (out / "megatron" / "blend.txt").read_text().split()
    weights, prefixes = [float(w) for w in blend[0::2]], blend[1::2]
    assert abs(sum(weights) - 1) < 1e-4 and all(p.endswith("_text_document") for p in prefixes)
    assert len(prefixes) == len(inputs)
