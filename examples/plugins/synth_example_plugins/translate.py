"""An LLM stage: translate each instruction; the prompt is a versioned file beside it."""

from pathlib import Path

from synth.llm.stage import LLMStage, LLMStageOptions
from synth.llm.types import ChatRequest
from synth.prompts import load_prompt

PROMPTS = str(Path(__file__).parent / "prompts")


class TranslateOptions(LLMStageOptions):
    language: str = "French"


class TranslateInstruction(LLMStage):
    type = "translate_instruction"
    Options = TranslateOptions
    reads = ("id", "instruction")
    writes = ("translated_instruction", "translation_prompt")

    def build_request(self, row, shard):
        prompt = load_prompt("translate", PROMPTS)
        messages = prompt.render(instruction=row["instruction"], language=self.options.language)
        # a per-record seed; the engine, the request cache and usage counters are the base's
        return ChatRequest(messages, self.sampling(shard, row), key=row["id"])

    def apply_result(self, row, result, shard):
        text = result.texts[0].strip()
        if not text:
            return "empty_translation"  # a drop reason, counted in the ledger
        return {**row, "translated_instruction": text, "translation_prompt": load_prompt("translate", PROMPTS).ref}
