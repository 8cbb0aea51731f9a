"""`LLMStage`: the base of every stage that calls a language model.

A subclass says how a row becomes a request (`build_request`) and how a finished
result changes the row (`apply_result`). The base sends the whole shard to the
(cached) engine at once so the engine batches it, records usage counters in the
ledger, and drops rows whose request finally failed with reason `llm_error`, the
error kept in the reject sample: a record is answered or dropped, never lost.

Every request is measured with the model's tokenizer before it is sent (`send`):
one that cannot fit the model's context with its `max_tokens` is shortened where
the stage marked a part as cuttable (`ChatRequest.shortenable`, the passage) or
dropped as `prompt_too_long` without a request.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from synth.core.progress import request_progress
from synth.core.records import derive_seed
from synth.core.stage import LLM_ENGINE, Filter, Resources, Shard, Stage, StageOptions
from synth.llm.cache import CachedEngine, RequestCache
from synth.llm.config import ModelsConfig
from synth.llm.default_model import cache_root
from synth.llm.provenance import add_step, extend_schema, sampling_record
from synth.llm.tokens import PROMPT_TOO_LONG, PromptBudget, TokenizerNotFound, load_tokenizer, model_context
from synth.llm.types import ChatRequest, ChatResult, SamplingParams
from synth.llm.usage import usage_counters

log = logging.getLogger(__name__)

LLM_ERROR = "llm_error"
BAD_OUTPUT = "llm_bad_output"


class SamplingOptions(StageOptions):
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    n: int = Field(1, ge=1)
    stop: list[str] = Field(default_factory=list)

    def params(self, json_schema: dict | None = None, seed: int | None = None) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            n=self.n,
            stop=tuple(self.stop),
            json_schema=json_schema,
            seed=seed,
        )


class LLMStageOptions(StageOptions):
    model: str | None = Field(None, description="Model name in MODELS.yaml; default: its default model.")
    sampling: SamplingOptions = Field(default_factory=SamplingOptions)
    cache: bool = Field(True, description="Use the persistent request cache (reproducible reruns).")
    check_prompt_length: bool = Field(
        True, description="Measure prompts before sending; shorten or drop those that cannot fit."
    )
    context_tokens: int | None = Field(
        None,
        ge=16,
        description="The model's context; default: the MODELS entry's max_model_len, else the model's config.",
    )
    tokenizer: str | None = Field(
        None, description="tokenizer.json or model folder to measure with; default: the model's own."
    )


# -- engines shared by all LLM stages of a process ---------------------------------

_engines: dict[tuple[str, str, str], Any] = {}
_lock = threading.Lock()


def models_config_for(settings: dict, config_path: Path | None) -> tuple[ModelsConfig, str]:
    """The MODELS config named by the pipeline's `settings.models` (relative to the
    pipeline file), else the embedded default model offline."""
    ref = settings.get("models")
    if not ref:
        return ModelsConfig.default_config(), "<default>"
    path = _relative_to(Path(ref), config_path)
    return ModelsConfig.load(path), str(path.resolve())


def _relative_to(path: Path, config_path: Path | None) -> Path:
    """A relative path is looked up beside the pipeline file first (settings), then
    in the working directory (command-line overrides)."""
    if path.is_absolute() or config_path is None:
        return path
    beside = Path(config_path).parent / path
    return beside if beside.exists() or not path.exists() else path


def request_cache_path(settings: dict, config_path: Path | None, run_dir: Path | None) -> Path:
    ref = settings.get("llm_cache")
    if ref:
        return _relative_to(Path(ref), config_path)
    if run_dir is not None:
        return Path(run_dir) / "llm-cache.sqlite"
    return cache_root() / "llm-cache.sqlite"


def shared_engine(model: str | None, models: ModelsConfig, models_key: str, cache_path: Path | None):
    """One engine per (MODELS file, model, cache) per process, closed by the LLM
    stages' `teardown` (`close_engines`): an offline engine takes about a minute to
    start, so stages must share it."""
    from synth.llm.engines import open_engine

    name, entry = models.entry(model)
    key = (models_key, name, str(cache_path))
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            # Entries that describe the same engine (e.g. several domains routed to
            # the embedded model offline) share one: each offline engine costs a
            # minute to start and its own KV cache.
            base_key = (
                models_key,
                entry.model_dump_json(exclude={"served_model_name"} if entry.mode == "offline" else set()),
            )
            base = _bases.get(base_key)
            if base is None:
                base = _bases[base_key] = _LazyEngine(name, entry, lambda: open_engine(name, models))
            named = base if base.name == name else _Renamed(base, name)
            engine = CachedEngine(named, RequestCache(cache_path)) if cache_path else named
            _engines[key] = engine
        return engine


class _LazyEngine:
    """Opens the engine on the first request the cache cannot answer: a rerun or a
    resume served from the request cache starts no engine (a minute each on CPU)."""

    def __init__(self, name: str, entry, opener):
        from synth.llm.config import model_identity

        self.name, self.model_id = name, model_identity(name, entry)
        self._opener, self._engine = opener, None
        self._open_lock = threading.Lock()

    @property
    def opened(self) -> bool:
        return self._engine is not None

    def generate(self, requests, progress=None):
        with self._open_lock:
            if self._engine is None:
                self._engine = self._opener()
        return self._engine.generate(requests, progress)

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


class _Renamed:
    """A shared engine seen under another entry's name (for usage counters)."""

    def __init__(self, engine, name: str):
        self.engine, self.name, self.model_id = engine, name, engine.model_id

    def generate(self, requests, progress=None):
        return self.engine.generate(requests, progress)

    def close(self) -> None:
        pass  # the owner closes the shared engine


_bases: dict[tuple[str, str], Any] = {}


def pipeline_engine(pipeline, model: str | None, cache: bool = True):
    """The one engine lookup: the shared engine of a MODELS entry for a pipeline
    (its `settings.models`, its request cache unless `cache` is off)."""
    settings = pipeline.settings
    models, key = models_config_for(settings, pipeline.config_path)
    cache_path = request_cache_path(settings, pipeline.config_path, pipeline.run_dir) if cache else None
    return shared_engine(model, models, key, cache_path)


_kept_open = 0  # depth of `engines_kept_open` blocks


@contextmanager
def engines_kept_open():
    """Keep this process's engines open across runs inside the block (a notebook or
    a test session running several pipelines: each engine start costs about a minute
    on CPU); the stages' teardown then leaves them open, and the block's end closes them."""
    global _kept_open
    _kept_open += 1
    try:
        yield
    finally:
        _kept_open -= 1
        if not _kept_open:
            close_engines()


def release_engines() -> None:
    """A run is over: close the engines unless an `engines_kept_open` block keeps them."""
    if not _kept_open:
        close_engines()


def close_engines() -> None:
    """Close every engine this process opened (stops the servers they started)."""
    with _lock:
        for base in _bases.values():
            try:
                base.close()
            except Exception as e:  # noqa: BLE001 - keep closing the others
                log.warning("closing engine %s: %s", getattr(base, "name", "?"), e)
        _bases.clear()
        _engines.clear()


class LLMStage(Stage):
    """Subclasses set `Options` (a subclass of LLMStageOptions), declare the columns
    they write once in `outputs` (name -> Arrow type), and implement `build_request`
    and `apply_result`."""

    Options: ClassVar[type[StageOptions]] = LLMStageOptions
    # In-process engines must live in the main process; served ones batch anyway.
    resources: ClassVar[Resources] = LLM_ENGINE
    id_column: ClassVar[str] = "id"

    def __init__(self, options, pipeline=None):
        super().__init__(options, pipeline)
        self._engine = None  # set by tests or on first use

    # -- to implement ------------------------------------------------------------
    def build_request(self, row: dict, shard: Shard) -> ChatRequest | list[ChatRequest] | None:
        """The request(s) for a row, or None to pass the row through untouched. A
        request's `model` routes it to another MODELS entry than the stage's."""
        raise NotImplementedError

    def apply_result(self, row: dict, result: ChatResult, shard: Shard) -> list[dict] | dict | str | None:
        """Turn a successful result into output row(s). Return a str to drop the row
        with that reason (e.g. unparseable JSON), None or [] to emit nothing.
        `result.request` is the request sent, `result.model` the model that answered."""
        raise NotImplementedError

    def failed_record(self, row: dict, request: ChatRequest) -> dict:
        """The record dropped when a row's request failed (`llm_error`)."""
        return row

    def output_schema(self, upstream: pa.Schema) -> pa.Schema | None:
        """The schema of output shards: the input's columns plus the declared ones."""
        return extend_schema(upstream, self.column_types()) if self.outputs else None

    # -- helpers for subclasses ----------------------------------------------------
    def sampling(self, shard: Shard, row: dict, json_schema: dict | None = None) -> SamplingParams:
        """The stage's sampling params with a per-record seed: engines that honour
        seeds get one, and it keys the cache, so another run seed draws anew."""
        seed = derive_seed(shard.run_seed, self.type or type(self).__name__, str(row.get(self.id_column, ""))) % (2**31)
        return self.options.sampling.params(json_schema=json_schema, seed=seed)

    def provenance(self, row: dict | None, result: ChatResult, **step: Any) -> str:
        """`row`'s provenance with this stage's step appended: stage, prompt, the model
        that answered and the sampling used (more keys, e.g. a grade, in `step`)."""
        prompt = getattr(self, "prompt", None)
        step = {"prompt": getattr(prompt, "ref", None), **step}
        return add_step(
            (row or {}).get("provenance"),
            stage=self.type,
            model=result.model,
            sampling=sampling_record(result.request.sampling),
            **step,
        )

    def teardown(self) -> None:
        """Close the process's engines: the run is over (a later run opens them anew),
        unless an `engines_kept_open` block keeps them for the next run."""
        self._engine = None
        release_engines()

    @property
    def engine(self):
        if self._engine is None:
            self._engine = self.engine_for(self.options.model)
        return self._engine

    @engine.setter
    def engine(self, value) -> None:
        self._engine = value

    def engine_for(self, model: str | None):
        """The shared (cached) engine of a MODELS entry (None: the stage's model)."""
        if (model is None or model == self.options.model) and self._engine is not None:
            return self._engine
        return pipeline_engine(self.pipeline, model or self.options.model, self.options.cache)

    # -- the shard loop ----------------------------------------------------------------
    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        out = self.complete(table.to_pylist(), shard)
        schema = self.output_schema(table.schema)
        return pa.Table.from_pylist(out, schema=schema) if schema is not None else self.to_table(out, table.schema)

    def complete(self, rows: list[dict], shard: Shard) -> list[dict]:
        """Each row's requests (`build_request`), sent as one batch per model, their
        results turned into output rows (`apply_result`) or drops (`llm_error`, or the
        reason `apply_result` returned). A stage that plans its requests from the whole
        shard (self_instruct) passes its own rows here."""
        requests: list[ChatRequest] = []
        asked: list[list[int]] = []  # per row, the indices of its requests
        for i, row in enumerate(rows):
            made = self.build_request(row, shard)
            mine: list[int] = []
            for req in [] if made is None else [made] if isinstance(made, ChatRequest) else made:
                if not req.key:
                    req.key = str(row.get(self.id_column, i))
                mine.append(len(requests))
                requests.append(req)
            asked.append(mine if made is not None else None)  # type: ignore[arg-type]
        results = self.generate(requests, shard) if requests else []
        out: list[dict] = []
        for row, mine in zip(rows, asked):
            if mine is None:
                out.append(row)
                continue
            for j in mine:
                res = results[j]
                if res.error is not None:
                    shard.drop(
                        self.failed_record(row, requests[j]),
                        error_reason(res),
                        {"error": res.error, "model": res.model},
                    )
                    continue
                produced = self.apply_result(row, res, shard)
                if isinstance(produced, str):
                    shard.drop(row, produced, {"raw": res.texts[:4]})
                elif isinstance(produced, dict):
                    out.append(produced)
                elif produced:
                    out.extend(produced)
        return out

    def generate(self, requests: list[ChatRequest], shard: Shard) -> list[ChatResult]:
        """Send each request to its model (one batch per model); results in input
        order, each with the request sent and the name of the model that answered."""
        by_model: dict[str | None, list[int]] = {}
        for i, req in enumerate(requests):
            by_model.setdefault(req.model or self.options.model, []).append(i)
        out: list[ChatResult | None] = [None] * len(requests)
        for model, indices in by_model.items():
            engine = self.engine_for(model)
            batch = [requests[i] for i in indices]
            for i, req, res in zip(indices, batch, self.send(engine, batch, shard, model)):
                res.model, res.request = engine.name, req
                out[i] = res
        return out  # type: ignore[return-value]

    def call(self, requests: list[ChatRequest], shard: Shard) -> list[ChatResult]:
        """Generate for the whole shard and count usage under `llm.<model>.*`."""
        return self.generate(requests, shard)

    def send(self, engine, requests: list[ChatRequest], shard: Shard, model: str | None = None) -> list[ChatResult]:
        """The one way requests reach an engine: measured against the model's context
        first (shortened or failed with `prompt_too_long`, never sent), then
        generated as one batch, usage counted under `llm.<model>.*`."""
        results: list[ChatResult | None] = [None] * len(requests)
        to_send: list[int] = []
        budget = self.prompt_budget(model, shard)
        for i, req in enumerate(requests):
            if budget is None:
                to_send.append(i)
                continue
            fitted, size, shortened = budget.fit(req)
            if fitted is None:
                limit = budget.limit(req.sampling.max_tokens)
                shard.count(f"llm.{engine.name}.{PROMPT_TOO_LONG}")
                results[i] = ChatResult.failure(
                    f"{PROMPT_TOO_LONG}: ~{size} prompt tokens, {limit} fit ({budget.context} context - {req.sampling.max_tokens} max_tokens)"
                )
                continue
            if shortened:
                shard.count(f"llm.{engine.name}.prompt_shortened")
                requests[i] = fitted
            to_send.append(i)
        batch = [requests[i] for i in to_send]
        if batch:
            sent = engine.generate(
                batch, progress=request_progress(len(batch), f"{shard.stage_label} {shard.name} {engine.name}")
            )
            for key, value in usage_counters(sent, engine.name).items():
                shard.count(key, value)
            for i, res in zip(to_send, sent):
                results[i] = res
                if res.error is not None:
                    log.warning(
                        "stage %s, record %s, model %s: %s", shard.stage_label, requests[i].key, engine.name, res.error
                    )
        return results  # type: ignore[return-value]

    def prompt_budget(self, model: str | None, shard: Shard | None = None) -> PromptBudget | None:
        """The context budget of `model` (None: the stage's), or None when prompts
        are not measured (turned off, or no tokenizer for the model: counted)."""
        o = self.options
        if not getattr(o, "check_prompt_length", False):
            return None
        budgets = self.__dict__.setdefault("_budgets", {})
        if model not in budgets:
            budgets[model] = self._make_budget(model)
        budget = budgets[model]
        if budget is None and shard is not None:
            shard.count("llm.prompt_unmeasured")
        return budget

    def _make_budget(self, model: str | None) -> PromptBudget | None:
        from synth.llm.config import DEFAULT_MODEL_REF, resolve_model_path

        o = self.options
        try:
            models, _ = models_config_for(self.pipeline.settings, self.pipeline.config_path)
            name, entry = models.entry(model)
        except Exception as e:  # noqa: BLE001 - a bad MODELS file is reported by the engine lookup; here it only means no measuring
            log.warning("stage %s: prompts not measured: %s", self.type, e)
            return None
        ref = o.tokenizer or (DEFAULT_MODEL_REF if entry.model == DEFAULT_MODEL_REF else resolve_model_path(entry))
        try:
            tokenizer = load_tokenizer(ref)
        except TokenizerNotFound as e:
            log.warning("stage %s, model %s: prompts not measured: %s", self.type, name, e)
            return None
        context = o.context_tokens or entry.max_model_len
        if context is None:
            from synth.llm.tokens import tokenizer_file

            context = model_context(tokenizer_file(ref).parent)
        if context is None:
            log.warning(
                "stage %s, model %s: prompts not measured: context length unknown (set context_tokens)", self.type, name
            )
            return None
        return PromptBudget(tokenizer, context)

    def to_table(self, rows: list[dict], schema: pa.Schema) -> pa.Table:
        types = self.column_types()
        if rows:
            # Keep the input's column types (and the declared ones) so shards of one
            # stage agree even when a column is all null in one of them.
            names = list(dict.fromkeys(k for r in rows for k in r))
            known = all(n in types or n in schema.names for n in names)
            if known:
                fields = [pa.field(n, types[n]) if n in types else schema.field(n) for n in names]
                try:
                    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    pass
            return pa.Table.from_pylist(rows)
        # An all-dropped shard keeps its input columns plus the declared ones.
        fields = list(schema)
        for name, typ in types.items():
            if name not in schema.names:
                fields.append(pa.field(name, typ))
        return pa.Table.from_pylist([], schema=pa.schema(fields))


class LLMFilter(LLMStage, Filter):
    """A filter whose scores come from a model: `build_request` / `apply_result`
    (the row with its score columns, or a drop reason when the call failed or the
    output does not parse) make the scores, then `decide` keeps or drops each row
    exactly as every `Filter` does (`annotate_only`, `would_drop.*` counters, the
    scores the audit reads, `removed_rows_dir`). Subclasses name their score
    columns in `score_columns`."""

    score_columns: ClassVar[tuple[str, ...]] = ()

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        scored = LLMStage.process(self, table, shard)
        return Filter.process(self, scored, shard)

    def score(self, table: pa.Table, shard: Shard) -> dict:
        # Scored by the model in `LLMStage.process`; the decision reads them from here.
        return {c: table.column(c) for c in self.score_columns}


def error_reason(result: ChatResult) -> str:
    """The drop reason of a failed result: `prompt_too_long` (never sent) or `llm_error`."""
    return PROMPT_TOO_LONG if (result.error or "").startswith(PROMPT_TOO_LONG) else LLM_ERROR


def parse_json(text: str) -> Any:
    """Parse model output as JSON, repairing the usual damage (code fences, prose
    around the value). Raises ValueError when nothing parses."""
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        s = s.rsplit("```", 1)[0]
    try:
        return json.loads(s)
    except ValueError:
        pass
    starts = [i for i in (s.find("{"), s.find("[")) if i >= 0]
    for start in sorted(starts):
        closer = "}" if s[start] == "{" else "]"
        end = s.rfind(closer)
        if end > start:
            try:
                return json.loads(s[start : end + 1])
            except ValueError:
                continue
    raise ValueError(f"not JSON: {text[:120]!r}")
