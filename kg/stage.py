"""`kg_walk`: the source stage that creates tool-use samples from a knowledge graph.

Shards are ranges of sample indices; sample i's seed is derived from the run seed
and i alone, so the samples do not depend on how the run is sharded and a resumed
run regenerates exactly the missing shards.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from kg.config import WalkConfig
from kg.graph import graph_digest, load_graph
from synth.core.stage import LLM_ENGINE, Shard, SourceStage, StageOptions

TOOL_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(TOOL_CALL)),
        ("tool_call_id", pa.string()),
        ("name", pa.string()),
        ("weight", pa.int64()),
    ]
)
EVAL_DIR = "eval"  # RUN/eval/part-*.parquet: the held-out evaluation split

# `tools` and `meta` are JSON strings: tool schemas and query trees differ in shape from
# row to row, and a struct column would merge them into one shape padded with nulls,
# which chat templates would then render as bogus parameters.
SAMPLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("kind", pa.string()),
        ("domain", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("tools", pa.string()),
        ("meta", pa.string()),
    ]
)


class KGWalkOptions(WalkConfig, StageOptions):
    graph: str | None = Field(None, description="Graph file or folder; default: the pipeline's first input.")
    samples: int = Field(1000, ge=1, description="Samples to attempt (drops are counted, not replaced).")
    samples_per_shard: int = Field(2000, ge=1, le=1_000_000, description="Samples per output shard.")
    cache: bool = Field(True, description="LLM verbaliser: use the persistent request cache.")


class KGWalk(SourceStage):
    type: ClassVar[str] = "kg_walk"
    Options: ClassVar[type[StageOptions]] = KGWalkOptions
    writes: ClassVar[tuple[str, ...]] = ("id", "kind", "domain", "messages", "tools", "meta")

    def __init__(self, options, pipeline=None):
        super().__init__(options, pipeline)
        self.factory = None
        self.engine = None  # tests may set an engine for the llm verbaliser
        if options.verbalizer == "llm":
            self.resources = LLM_ENGINE  # an in-process LLM engine lives in the main process

    def schema(self) -> pa.Schema:
        return SAMPLE_SCHEMA

    def column_types(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in SAMPLE_SCHEMA}

    def _graph_path(self, inputs: Sequence[str]) -> str:
        path = self.options.graph or (inputs[0] if inputs else None)
        if not path:
            raise ValueError("kg_walk needs a graph: set `graph:` or give an input")
        p = Path(path)
        if not p.is_absolute() and self.pipeline.config_path is not None and not p.exists():
            p = Path(self.pipeline.config_path).parent / p
        return str(p)

    def list_shards(self, inputs: Sequence[str]) -> list[dict]:
        graph = self._graph_path(inputs)
        if not Path(graph).exists():
            return []
        n, size = self.options.samples, self.options.samples_per_shard
        # The content hash is in every spec so editing the graph in place invalidates a
        # resumed run instead of mixing samples of two graphs.
        digest = graph_digest(graph)
        return [
            {"graph": graph, "graph_sha": digest, "start": lo, "count": min(size, n - lo)} for lo in range(0, n, size)
        ]

    def _factory(self, graph_path: str):
        if self.factory is None or self.factory.graph_path != graph_path:
            from kg.generate import SampleFactory

            graph = load_graph(graph_path)
            config = WalkConfig(**{k: getattr(self.options, k) for k in WalkConfig.model_fields})
            engine = self._engine() if config.verbalizer == "llm" else None
            self.factory = SampleFactory(graph, config, engine)
            self.factory.graph_path = graph_path
        return self.factory

    def teardown(self) -> None:
        if self.engine is not None:
            from synth.llm.stage import release_engines

            self.engine, self.factory = None, None
            release_engines()

    def _engine(self):
        if self.engine is None:
            from synth.llm.stage import pipeline_engine

            self.engine = pipeline_engine(self.pipeline, self.options.llm_model, self.options.cache)
        return self.engine

    def read(self, spec: dict, shard: Shard) -> pa.Table:
        from kg.generate import sample_seeds

        factory = self._factory(spec["graph"])
        if spec["start"] == 0:  # once per run: what loading the graph skipped, what it cannot produce
            shard.count("graph.bad_rows", factory.graph.report.bad_rows)
            shard.count("graph.duplicate_triples", factory.graph.report.duplicates)
            for split, missing in factory.unavailable.items():
                prefix = "" if split == "train" else f"{split}."
                for pattern, (reason, _) in missing.items():
                    shard.count(f"{prefix}pattern_unavailable.{pattern}.{reason}")
        rows, held_out = [], []
        seeds = sample_seeds(shard.run_seed, spec["start"], spec["count"])
        for lo in range(0, len(seeds), 512):
            for out in factory.make(seeds[lo : lo + 512]):
                pattern = out.info.get("pattern", "unknown")
                shard.count(f"pattern_requested.{pattern}")
                for reason, n in (out.info.get("failures") or {}).items():
                    # every re-sampled grounding, per pattern and reason (trivial_* among them)
                    shard.count(f"pattern_failed.{pattern}.{reason}", n)
                    shard.count(f"query_rejected.{reason}", n)
                if out.record is None:
                    dropped = {
                        "seed": out.seed,
                        "pattern": pattern,
                        **{k: v for k, v in out.info.items() if k not in ("record", "pattern")},
                    }
                    if "record" in out.info:
                        dropped["sample"] = out.info["record"]
                    shard.drop(json.loads(json.dumps(dropped, default=str)), out.reason or "unknown")
                    shard.count(f"dropped_pattern.{pattern}")
                    continue
                meta = json.loads(out.record["meta"])
                shard.count(f"pattern.{pattern}")
                shard.count(f"variant.{meta.get('variant', 'plain')}")
                shard.count("tool_calls", meta.get("tool_calls", 0))
                if out.info.get("split") == "eval":
                    shard.count("split.eval")
                    held_out.append(out.record)
                else:
                    rows.append(out.record)
            if factory.llm is not None:
                for key, n in factory.llm.stats.items():
                    shard.count(f"llm_verbalizer.{key}", n)
                factory.llm.stats.clear()
        if factory.cfg.eval_split > 0:
            shard.count("split.train", len(rows))
            self._write_eval(shard, held_out)
        return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)

    def _write_eval(self, shard: Shard, records: list[dict]) -> None:
        """The evaluation split goes to RUN/eval/, one file per shard, beside RUN/output/.

        Written (atomically) before the shard's own output, so a shard that is done has
        its evaluation file too, and a rerun of an unfinished shard rewrites it identically.
        """
        import pyarrow.parquet as pq

        run_dir = getattr(self.pipeline, "run_dir", None)
        if run_dir is None:
            raise RuntimeError("kg_walk: an evaluation split needs a run directory")
        folder = Path(run_dir) / EVAL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"part-{shard.index:05d}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(pa.Table.from_pylist(records, schema=SAMPLE_SCHEMA), tmp)
        tmp.replace(target)
