"""KG sample quality: no trivial samples, every requested pattern or a reason, and an evaluation split."""

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from kg.config import WalkConfig
from kg.generate import SampleFactory, sample_seeds
from kg.graph import load_graph
from kg.query import QuerySampler, anchors_of, evaluate_ids, out_and_back, returning_steps
from synth.core.config import build_pipeline
from synth.core.executor import LocalExecutor, PipelineSource, run_pipeline


def _graph(tmp_path, rows, name="g.tsv"):
    path = tmp_path / name
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return load_graph(path, use_cache=False)


def _trivial(meta, graph):
    anchors = {graph.entity_index[a] for a in meta["anchors"]}
    answer = evaluate_ids(meta["query"], graph)
    return bool(answer & anchors) or out_and_back(meta["query"], graph)


@pytest.mark.parametrize("name", ["nations", "umls", "fb15k"])
def test_no_sample_is_trivial_on_real_graphs(name, request):
    graph = request.getfixturevalue(name)
    factory = SampleFactory(graph, WalkConfig(irrelevance_share=0.0))
    outs = factory.make(sample_seeds(21, 0, 150))
    metas = [json.loads(o.record["meta"]) for o in outs if o.record]
    assert len(metas) > 100
    assert not [m for m in metas if _trivial(m, graph)]
    rejected = Counter(r for o in outs for r, n in o.info.get("failures", {}).items() for _ in range(n))
    if name == "nations":  # a dense graph of 14 countries: many walks come home
        assert rejected["trivial_anchor_in_answer"] > 0


def test_allowing_trivial_samples_brings_them_back(nations):
    factory = SampleFactory(nations, WalkConfig(irrelevance_share=0.0, allow_trivial=True))
    metas = [json.loads(o.record["meta"]) for o in factory.make(sample_seeds(21, 0, 150)) if o.record]
    assert sum(_trivial(m, nations) for m in metas) > 10


def test_star_graph_only_walks_back_to_its_anchor(tmp_path):
    # Every 2-step walk from a leaf goes to the hub and back to the leaves: the answer
    # always holds the anchor, so 2p is impossible unless trivial samples are allowed.
    g = _graph(tmp_path, [(f"leaf{i}", "part_of", "hub") for i in range(5)])
    strict = SampleFactory(g, WalkConfig(patterns={"2p": 1, "1p": 1}, irrelevance_share=0.0, probe_attempts=300))
    assert strict.unavailable["train"]["2p"][0] == "trivial_anchor_in_answer"
    assert strict._choices["train"][0] == ["1p"]  # its share went to 1p
    loose = SampleFactory(g, WalkConfig(patterns={"2p": 1}, irrelevance_share=0.0, allow_trivial=True))
    out = [o for o in loose.make(sample_seeds(1, 0, 5)) if o.record]
    assert out and all(json.loads(o.record["meta"])["pattern"] == "2p" for o in out)


def test_out_and_back_through_an_inverse_relation_pair(tmp_path):
    # `parent_of` and `child_of` are each other's inverse: parent_of then child_of comes home.
    rows = [
        ("ann", "parent_of", "bo"),
        ("bo", "child_of", "ann"),
        ("cy", "parent_of", "bo"),
        ("bo", "child_of", "cy"),
        ("cy", "parent_of", "di"),
        ("di", "child_of", "cy"),
        ("bo", "likes", "tea"),
        ("di", "likes", "tea"),
    ]
    g = _graph(tmp_path, rows)
    pairs = returning_steps(g)
    p, c = g.relation_index["parent_of"], g.relation_index["child_of"]
    assert (2 * p, 2 * c) in pairs and (2 * c, 2 * p) in pairs and (2 * p, 2 * p + 1) in pairs
    back = {"relation": "child_of", "of": {"relation": "parent_of", "of": {"entity": "ann"}}}
    inverse = {"relation": "parent_of", "inverse": True, "of": {"relation": "parent_of", "of": {"entity": "ann"}}}
    onward = {"relation": "likes", "of": {"relation": "parent_of", "of": {"entity": "ann"}}}
    assert out_and_back(back, g) and out_and_back(inverse, g) and not out_and_back(onward, g)
    # nested inside a branch, not only at the top
    assert out_and_back({"and": [onward, {"not": back}]}, g)


def test_sampler_rejects_out_and_back_branches(tmp_path):
    # pi = AND(2p, 1p): its 2p branch can only go x -r-> hub -r^-1-> leaves, so without
    # trivial queries the sampler must say so rather than emit one.
    rows = [(f"leaf{i}", "part_of", "hub") for i in range(4)] + [("leaf1", "near", "leaf2"), ("leaf0", "near", "leaf2")]
    g = _graph(tmp_path, rows)
    import random

    failures = Counter()
    strict = QuerySampler(g, max_answers=10, max_intermediate=10)
    sq, _ = strict.sample("2p", random.Random(0), 200, failures)
    assert sq is None or not out_and_back(sq.tree, g)
    assert failures["trivial_anchor_in_answer"] + failures["trivial_out_and_back"] > 0


def _walk(graph, out, **extra):
    raw = {
        "name": "kg",
        "seed": 5,
        "stages": [
            {
                "type": "kg_walk",
                "graph": str(graph),
                "samples": 200,
                "samples_per_shard": 100,
                "irrelevance_share": 0.0,
                **extra,
            }
        ],
    }
    pipe = build_pipeline(raw, seed=5)
    result = run_pipeline(pipe, PipelineSource(raw=raw, path=None, seed=5), out, inputs=[], executor=LocalExecutor(1))
    return pipe, result


def _counters(run, pipe):
    from synth.core.ledger import stage_totals
    from synth.core.rundir import RunDir

    return stage_totals(RunDir(run), pipe.stages[0].label, "kg_walk")["counters"]


def test_impossible_pattern_is_reported_once_and_its_share_redistributed(tmp_path):
    # A chain has no entity with three incoming relations: 3i cannot be grounded.
    rows = [(f"n{i}", "next", f"n{i + 1}") for i in range(30)] + [(f"n{i}", "skip", f"n{i + 2}") for i in range(29)]
    path = tmp_path / "chain.tsv"
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    pipe, result = _walk(path, tmp_path / "run", patterns={"1p": 1, "3i": 1}, probe_attempts=500)
    counters = _counters(result.run_dir, pipe)
    unavailable = [k for k in counters if k.startswith("pattern_unavailable.3i.")]
    assert len(unavailable) == 1 and counters[unavailable[0]] == 1  # once per run, not per shard
    assert counters.get("pattern_requested.3i", 0) == 0 and counters["pattern.1p"] > 150
    from kg.cli import pattern_report

    rows_, sentences = pattern_report(counters)
    assert len(sentences) == 1 and "3i" in sentences[0] and "share went to the other patterns" in sentences[0]
    assert [r[0] for r in rows_] == ["1p"] and rows_[0][1] == 200


def test_ledger_counts_requested_produced_and_failures_per_pattern(nations, kg_data, tmp_path):
    pipe, result = _walk(kg_data / "nations", tmp_path / "run", patterns={"2p": 1, "pi": 1})
    c = _counters(result.run_dir, pipe)
    assert c["pattern_requested.2p"] + c["pattern_requested.pi"] == 200
    assert c["pattern.2p"] <= c["pattern_requested.2p"]
    fails = {k: v for k, v in c.items() if k.startswith("pattern_failed.2p.")}
    assert fails and sum(fails.values()) == sum(v for k, v in c.items() if k.startswith("query_rejected.")) - sum(
        v for k, v in c.items() if k.startswith("pattern_failed.pi.")
    )


def test_eval_split_shares_no_anchor_with_training(kg_data, tmp_path):
    pipe, result = _walk(kg_data / "umls", tmp_path / "run", eval_split=0.2)
    train = [r for p in sorted((result.run_dir / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    held = [r for p in sorted((result.run_dir / "eval").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(held) > 10 and len(train) > 100
    anchors = lambda rows: {a for r in rows for a in json.loads(r["meta"])["anchors"]}  # noqa: E731
    assert anchors(train) and anchors(held) and not anchors(train) & anchors(held)
    assert {json.loads(r["meta"])["split"] for r in held} == {"eval"}
    assert {json.loads(r["meta"])["split"] for r in train} == {"train"}
    c = _counters(result.run_dir, pipe)
    assert c["split.eval"] == len(held) and c["split.train"] == len(train)
    # a rerun resumes to the same split
    _, again = _walk(kg_data / "umls", tmp_path / "run", eval_split=0.2)
    held2 = [r for p in sorted((again.run_dir / "eval").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert [r["id"] for r in held2] == [r["id"] for r in held]


def test_eval_split_can_hold_out_relations(nations):
    factory = SampleFactory(nations, WalkConfig(eval_split=0.3, eval_relations=0.2, irrelevance_share=0.0))
    held = {nations.relations[i] for i in factory.held_out_relations}
    assert held
    metas = [json.loads(o.record["meta"]) for o in factory.make(sample_seeds(8, 0, 300)) if o.record]
    rels = lambda m: {r for r in _relations(m["query"])}  # noqa: E731
    train = [m for m in metas if m["split"] == "train"]
    evals = [m for m in metas if m["split"] == "eval"]
    assert train and evals
    assert all(not rels(m) & held for m in train)
    assert all(rels(m) & held for m in evals)
    assert not {a for m in train for a in m["anchors"]} & {a for m in evals for a in m["anchors"]}


def _relations(tree):
    from kg.query import relations_of

    return [r for r, _ in relations_of(tree)]


def test_anchors_of_is_what_the_split_checks():
    tree = {"and": [{"relation": "r", "of": {"entity": "a"}}, {"not": {"relation": "s", "of": {"entity": "b"}}}]}
    assert anchors_of(tree) == ["a", "b"]


def test_cli_says_once_what_was_not_produced_and_audit_shows_it(tmp_path):
    from typer.testing import CliRunner

    from kg.cli import kg_app
    from synth.cli import app

    rows = [(f"n{i}", "next", f"n{i + 1}") for i in range(30)] + [(f"n{i}", "skip", f"n{i + 2}") for i in range(29)]
    path = tmp_path / "chain.tsv"
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    run = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(
        kg_app,
        [
            "walk",
            str(path),
            "--output",
            str(run),
            "--samples",
            "60",
            "--patterns",
            "1p,3i",
            "--samples-per-shard",
            "20",
            "--workers",
            "1",
            "--eval-split",
            "0.2",
        ],
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    # three shards, one sentence per split (the eval split is probed on its own anchors)
    assert flat.count("pattern 3i was not produced: the graph") == 1
    assert flat.count("pattern 3i was not produced in the eval split") == 1
    assert "share went to the other patterns" in flat and "evaluation split" in flat
    train = [r for p in sorted((run / "output").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    held = [r for p in sorted((run / "eval").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert f"done: {len(train)} verified samples" in flat and f"evaluation split: {len(held)} samples" in flat
    audit = runner.invoke(app, ["audit", str(run)])
    assert audit.exit_code == 0, audit.output
    assert "samples per pattern" in audit.output and "pattern 3i was not produced" in " ".join(audit.output.split())
    for fmt in ("mistral", "openai"):
        out = tmp_path / f"{fmt}.jsonl"
        res = runner.invoke(
            kg_app, ["export", str(run), "--format", fmt, "--sequential", "--split", "eval", "--output", str(out)]
        )
        assert res.exit_code == 0, res.output
        held = [r for p in sorted((run / "eval").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
        assert len(out.read_text().splitlines()) == len(held) > 0


def test_eval_split_keeps_irrelevance_samples_on_their_side(umls):
    factory = SampleFactory(umls, WalkConfig(eval_split=0.3, irrelevance_share=0.4))
    metas = [json.loads(o.record["meta"]) for o in factory.make(sample_seeds(4, 0, 200)) if o.record]
    side = {"train": set(), "eval": set()}
    for m in metas:
        side[m["split"]].update(m["anchors"])
    assert {m["pattern"] for m in metas if m["split"] == "eval"} >= {"irrelevance"}
    assert side["train"] and side["eval"] and not side["train"] & side["eval"]


def test_export_of_a_missing_eval_split_says_what_to_do(tmp_path):
    from kg.export import export

    (tmp_path / "run" / "output").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="--eval-split"):
        export(tmp_path / "run", "openai", tmp_path / "x.jsonl", split="eval")


def test_wordnet_symmetric_relation_twice_is_out_and_back(tmp_path):
    # WN18RR's case: "the derivationally related form of the derivationally related form of X"
    words = ["run", "runner", "running", "walk", "walker"]
    rows = [
        (a, "_derivationally_related_form", b) for a, b in [("run", "runner"), ("run", "running"), ("walk", "walker")]
    ]
    rows += [(b, r, a) for a, r, b in rows] + [(w, "_hypernym", "motion") for w in words]
    g = _graph(tmp_path, rows)
    d = g.relation_index["_derivationally_related_form"]
    assert (2 * d, 2 * d) in returning_steps(g)
    twice = {
        "relation": "_derivationally_related_form",
        "of": {"relation": "_derivationally_related_form", "of": {"entity": "runner"}},
    }
    assert out_and_back(twice, g)
    assert not out_and_back(
        {"relation": "_hypernym", "of": {"relation": "_derivationally_related_form", "of": {"entity": "runner"}}}, g
    )
    factory = SampleFactory(g, WalkConfig(patterns={"2p": 1, "1p": 1}, irrelevance_share=0.0, probe_attempts=300))
    metas = [json.loads(o.record["meta"]) for o in factory.make(sample_seeds(2, 0, 40)) if o.record]
    assert metas and not [m for m in metas if _trivial(m, g)]


def test_eval_split_too_small_for_a_tiny_graph_is_a_clear_error(tmp_path):
    g = _graph(tmp_path, [("a", "r", "b"), ("b", "r", "c")])
    with pytest.raises(ValueError, match="raise eval_split"):
        SampleFactory(g, WalkConfig(eval_split=0.01, patterns={"1p": 1}))
