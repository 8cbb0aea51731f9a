"""Stage `format_chat`: the canonical output row of synthesis.

Assembles `messages` (user instruction, assistant response) from the columns the
earlier stages wrote, sets `kind`, and leaves provenance and scores in place, so
the final shards carry the schema README documents.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from synth.core.stage import Shard, Stage, StageOptions, add_columns

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


class FormatChatOptions(StageOptions):
    kind: str = Field("instruction", description="Value of the `kind` column (instruction or tool_use).")
    instruction_column: str = "instruction"
    response_column: str = "response"
    drop_columns: list[str] = Field(
        default_factory=lambda: ["responses", "route_model"], description="Working columns not kept in the output."
    )


class FormatChat(Stage):
    type = "format_chat"
    Options = FormatChatOptions
    writes = ("kind", "messages")

    def input_columns(self):
        return ("id", self.options.instruction_column, self.options.response_column)

    def removed_columns(self):
        return tuple(self.options.drop_columns)

    def column_types(self):
        return {"kind": pa.string(), "messages": pa.list_(MESSAGE)}

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        instructions = table.column(self.options.instruction_column).to_pylist()
        responses = table.column(self.options.response_column).to_pylist()
        messages = [
            [{"role": "user", "content": i}, {"role": "assistant", "content": r}]
            for i, r in zip(instructions, responses)
        ]
        return add_columns(
            table, {"kind": [self.options.kind] * table.num_rows, "messages": messages}, self.column_types()
        )
