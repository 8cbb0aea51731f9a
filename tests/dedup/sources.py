"""A source that emits rows given inline in the pipeline, one list per shard (tests only)."""

from __future__ import annotations

import pyarrow as pa

from synth.core.records import content_id
from synth.core.stage import SourceStage, StageOptions


class InlineOptions(StageOptions):
    shards: list[list[dict]]


class InlineRows(SourceStage):
    type = "test_inline_rows"
    Options = InlineOptions
    writes = ("id", "text", "messages")

    def list_shards(self, inputs):
        return [{"shard": i} for i in range(len(self.options.shards))]

    def read(self, spec, shard):
        for n, row in enumerate(self.options.shards[spec["shard"]]):
            yield {
                "id": content_id("inline", spec["shard"], n),
                "text": row.get("text"),
                "messages": row.get("messages"),
            }

    def schema(self):
        return pa.schema([("id", pa.string()), ("text", pa.string()), ("messages", pa.string())])
