"""The LLM engine layer: one interface to offline vLLM, served endpoints and fakes,
with a persistent request cache, token accounting and specialist routing.

Importing this package does not import vLLM; engines load it when opened.
"""

from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.config import ModelEntry, ModelsConfig, ModelsConfigError
from synth.llm.engines import open_engine
from synth.llm.fake import FakeEngine
from synth.llm.types import ChatRequest, ChatResult, Engine, EngineError, SamplingParams
from synth.llm.usage import usage_counters

__all__ = [
    "CachedEngine",
    "ChatRequest",
    "ChatResult",
    "Engine",
    "EngineError",
    "FakeEngine",
    "ModelEntry",
    "ModelsConfig",
    "ModelsConfigError",
    "RequestCache",
    "SamplingParams",
    "open_engine",
    "usage_counters",
]
