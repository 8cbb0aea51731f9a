"""Stage types by YAML name.

Imports are lazy so `synth --help` stays fast and a pipeline only loads the
libraries its own stages need. A team plugs in its own stages without forking
synth in two ways: a `type` may be a `package.module:Class` path, or an installed
package may declare entry points in the group `synth.stages` (name = YAML type).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from synth.core.stage import Stage

BUILTIN_STAGES: dict[str, str] = {
    # anywhere: deterministic subsets for dry runs and demos
    "sample": "synth.core.sampling:SampleRecords",
    # 1. ingest: raw crawls and books -> clean passages
    "read": "synth.ingest.read:ReadDocuments",
    "read_records": "synth.ingest.records:ReadRecords",  # JSONL/Parquet/datasets rows as they are
    "url_filter": "synth.ingest.urlfilter:URLFilter",
    "extract_html": "synth.ingest.extract:ExtractHtml",
    "split_passages": "synth.ingest.passages:SplitPassages",
    "langid": "synth.ingest.langid:LanguageFilter",
    "gopher_quality": "synth.ingest.heuristics:GopherQualityFilter",
    "gopher_repetition": "synth.ingest.heuristics:GopherRepetitionFilter",
    "c4_quality": "synth.ingest.heuristics:C4QualityFilter",
    "c4_badwords": "synth.ingest.heuristics:C4BadWordsFilter",
    "quality_classifier": "synth.ingest.quality:QualityClassifierFilter",
    "dedup_exact": "synth.dedup.exact:ExactDedup",
    "dedup_minhash": "synth.dedup.minhash:MinHashDedup",
    # 2-5. synthesis
    "instruct": "synth.synthesis.instruct:GenerateInstructions",
    "evolve": "synth.synthesis.evolve:EvolveInstructions",
    "self_instruct": "synth.synthesis.self_instruct:SelfInstruct",
    "route": "synth.synthesis.route:RouteByDomain",
    "respond": "synth.synthesis.respond:GenerateResponses",
    # filters over instruction/response records: heuristic (no model), then LLM
    "rules": "synth.filters.heuristic.rules:ResponseRules",
    "consistency": "synth.filters.heuristic.consistency:SelfConsistency",
    "code_exec": "synth.filters.heuristic.code_exec:CodeExecutionFilter",
    "decontaminate": "synth.filters.heuristic.decontaminate:Decontaminate",
    "decontaminate_cut": "synth.filters.heuristic.decontaminate:DecontaminateCut",
    "critique": "synth.filters.llm.critique:CritiqueFilter",
    # finish: instruction/response records -> chat samples
    "format_chat": "synth.synthesis.finalize:FormatChat",
    # 6. knowledge graph -> tool use
    "kg_walk": "kg.stage:KGWalk",
}


class UnknownStageType(LookupError):
    pass


class StageImportError(ImportError):
    """A known stage type whose module fails to import (a missing extra, a bug)."""


ENTRY_POINT_GROUP = "synth.stages"


def plugin_stages() -> dict[str, str]:
    """Stage types installed packages declare as `synth.stages` entry points; a
    built-in name wins, so a plugin cannot silently replace a built-in stage."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return {name: target for name, target in sorted(found.items()) if name not in BUILTIN_STAGES}


def all_stage_types() -> dict[str, str]:
    """Every stage type a pipeline may name: built-ins, then plugins."""
    return {**BUILTIN_STAGES, **plugin_stages()}


def stage_class(type_name: str) -> type[Stage]:
    target = BUILTIN_STAGES.get(type_name)
    if target is None and ":" not in type_name:
        target = plugin_stages().get(type_name)
    if target is None and ":" in type_name:
        target = type_name
    if target is None:
        raise UnknownStageType(type_name)
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        if ":" not in type_name:  # a built-in or a plugin's entry point: the name is known
            raise StageImportError(
                f"stage type '{type_name}' could not be loaded from {target}: {type(exc).__name__}: {exc}"
            ) from exc
        raise UnknownStageType(f"{type_name} ({target}: {exc})") from exc
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise UnknownStageType(f"{type_name} ({target} is not a Stage)")
    return cls
