"""The LLM verbaliser against real vLLM with synth's embedded default model (marked `vllm`).

The default model is tiny (SmolLM2-135M), so this checks the wiring and the contract
(questions that name every anchor are kept and verify; others are dropped with a
reason), not the wording quality.
"""

import json

import pytest

from kg.config import WalkConfig
from kg.generate import SampleFactory, sample_seeds
from kg.verify import verify

pytestmark = pytest.mark.vllm


def test_llm_verbaliser_on_real_engine(nations):
    from synth.llm import open_engine

    engine = open_engine(None)
    try:
        cfg = WalkConfig(verbalizer="llm", llm_retries=2, irrelevance_share=0.0, patterns={"1p": 1, "2i": 1})
        factory = SampleFactory(nations, cfg, engine=engine)
        outcomes = factory.make(sample_seeds(0, 0, 12))
    finally:
        engine.close()
    kept = [o.record for o in outcomes if o.record]
    assert kept, [o.reason for o in outcomes]  # SmolLM2-135M kept 10/12 when this was written
    for o in outcomes:
        assert o.record is not None or o.reason in ("llm_missing_anchor", "llm_empty", "llm_error")
    for rec in kept:
        meta = json.loads(rec["meta"])
        assert meta["verbalizer"] == "llm"
        question = rec["messages"][1]["content"].lower()
        assert all(a.lower() in question for a in meta["anchors"])
        assert verify(rec, factory.executor) is None
    print(f"llm verbaliser kept {len(kept)}/{len(outcomes)}:",
          [rec["messages"][1]["content"] for rec in kept[:3]])
