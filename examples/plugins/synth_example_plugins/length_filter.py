"""A heuristic filter: drop instructions too short to be a task or too long to be one."""

from pydantic import Field

from synth.core.stage import Filter, FilterOptions


class InstructionLengthOptions(FilterOptions):
    min_words: int = Field(3, ge=0, description="Fewer words than this is not a task.")
    max_words: int = Field(400, ge=1, description="More words than this is a document, not a task.")


class InstructionLength(Filter):
    type = "instruction_length"
    Options = InstructionLengthOptions
    reads = ("instruction",)
    writes = ("instruction_words",)

    def score(self, table, shard):
        # Score the whole shard at once; the counts stay as a column for re-tuning.
        return {"instruction_words": [len((t or "").split()) for t in table.column("instruction").to_pylist()]}

    def decide(self, row):
        if row["instruction_words"] < self.options.min_words:
            return "instruction_too_short"
        if row["instruction_words"] > self.options.max_words:
            return "instruction_too_long"
        return None
