"""A retried LLM question must be a new request, not a cache hit.

Behind synth's persistent cache (which keys on model, messages and sampling), a retry
that only changed `ChatRequest.key` had the same identity as the rejected attempt, so
the engine was called once and every retry returned the same rejected text.
"""

import pytest

from kg.config import WalkConfig
from kg.generate import SampleFactory, sample_seeds

llm = pytest.importorskip("synth.llm")


@pytest.fixture(scope="module")
def nations(shared_data, tmp_path_factory):
    from kg.graph import load_graph

    return load_graph(shared_data / "kg" / "nations", cache=tmp_path_factory.mktemp("kg-cache"))


def _draws_anew(request, index, seen: dict):
    """A model whose first draw for a prompt forgets the anchors and whose later draws do not."""
    prompt = request.messages[-1]["content"]
    seen[prompt] = seen.get(prompt, 0) + 1
    if seen[prompt] == 1:
        return "What links those two countries?"
    line = next(t for t in prompt.splitlines() if "exactly as written" in t)
    names = line.split("exactly as written:", 1)[1].split(". Do not")[0]
    return "Which countries link " + names.replace('"', "") + "?"


def test_retry_behind_the_cache_reaches_the_engine(nations, tmp_path):
    seen: dict = {}
    fake = llm.FakeEngine(lambda req, i: _draws_anew(req, i, seen))
    engine = llm.CachedEngine(fake, llm.RequestCache(tmp_path / "cache.sqlite"))
    cfg = WalkConfig(
        verbalizer="llm", llm_retries=2, irrelevance_share=0.0, patterns={"1p": 1, "2i": 1}, back_translate=False
    )
    out = SampleFactory(nations, cfg, engine=engine).make(sample_seeds(5, 0, 8))
    # the first attempt is rejected for every sample; the retry must be generated, not read back
    assert fake.calls == 2
    assert all(o.record is not None for o in out), [o.reason for o in out]


def test_rerun_reads_every_attempt_from_the_cache(nations, tmp_path):
    seen: dict = {}
    cfg = WalkConfig(verbalizer="llm", llm_retries=2, irrelevance_share=0.0, patterns={"1p": 1}, back_translate=False)
    cache = tmp_path / "cache.sqlite"
    first_fake = llm.FakeEngine(lambda req, i: _draws_anew(req, i, seen))
    first = SampleFactory(nations, cfg, engine=llm.CachedEngine(first_fake, llm.RequestCache(cache)))
    a = [o.record["messages"][1]["content"] for o in first.make(sample_seeds(6, 0, 6))]
    # same command again: both attempts come from the cache, the engine is never called
    second_fake = llm.FakeEngine(lambda req, i: pytest.fail("cache miss on a rerun"))
    second = SampleFactory(nations, cfg, engine=llm.CachedEngine(second_fake, llm.RequestCache(cache)))
    b = [o.record["messages"][1]["content"] for o in second.make(sample_seeds(6, 0, 6))]
    assert a == b and second_fake.calls == 0
