"""Stage `split_passages`: long documents and books -> passages at paragraph boundaries.

A passage is an exact slice of its document's text (`text == doc_text[char_offset:
char_offset + len(text)]`), so provenance can always be checked against the source.
Paragraphs are packed up to `max_chars`; a paragraph longer than that is cut at
sentence ends (at whitespace if a sentence alone is too long); a last piece shorter
than `min_chars` joins the passage before it. With `max_tokens`, passages are also
sized in tokens of the model that will read them (its fast tokenizer): a passage
over the budget is split again, at paragraph and sentence ends, until it fits
(a Chinese passage of 3,000 characters is ~2,000 tokens; English ~700). A chapter heading starts a new
passage and names the chapter of everything until the next one; a run of headings
with nothing between them is a table of contents, not chapters.
"""

from __future__ import annotations

import re

import pyarrow as pa
from pydantic import Field, model_validator

from synth.core.records import content_id
from synth.core.stage import Shard, Stage, StageOptions

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’»)\]]*\s+")
_HEADING = re.compile(
    r"^\s*(?:(?:CHAPTER|Chapter|CHAP\.|BOOK|Book|PART|Part|EPOCH|Epoch|CHAPITRE|Chapitre|LIVRE|Livre|"
    r"HOOFDSTUK|Hoofdstuk|KAPITEL|Kapitel|CAPÍTULO|Capítulo|CAPITOLO|Capitolo)\s+"
    r"(?:[IVXLCDM]+\b|\d+\b|[A-Za-z]+\b)[^\n]{0,80}|(?:[IVXLCDM]{1,7}|\d{1,3})\.?)(?:\n[^\n]{1,80})?\s*$"
)
_HEADING_MAX_CHARS = 160


class PassageOptions(StageOptions):
    max_chars: int = Field(default=2000, gt=0)
    min_chars: int = Field(default=200, ge=0)
    detect_chapters: bool = True
    max_tokens: int | None = Field(
        default=None, ge=16, description="Also cap passages at this many tokens of `tokenizer`."
    )
    tokenizer: str = Field(
        default="default",
        description='"default" (the embedded model), a tokenizer.json, a model folder, or a cached hub id.',
    )

    @model_validator(mode="after")
    def _min_below_max(self):
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be smaller than max_chars ({self.max_chars})")
        return self


class SplitPassages(Stage):
    type = "split_passages"
    Options = PassageOptions
    reads = ("id", "text")
    writes = ("id", "text", "doc_id", "passage_index", "char_offset", "chapter")
    creates_records = True
    options: PassageOptions

    def column_types(self) -> dict[str, pa.DataType]:
        return {
            "id": pa.string(),
            "text": pa.string(),
            "doc_id": pa.string(),
            "passage_index": pa.int32(),
            "char_offset": pa.int64(),
            "chapter": pa.string(),
        }

    def setup(self) -> None:
        self.tokenizer = None
        if self.options.max_tokens:
            from synth.llm.tokens import load_tokenizer

            self.tokenizer = load_tokenizer(self.options.tokenizer)

    def process(self, table: pa.Table, shard: Shard) -> pa.Table:
        # Parent columns (url, source, title, author...) ride along unchanged, except
        # ones this stage owns and the raw HTML, which passages do not need.
        carried = [c for c in table.column_names if c not in self.writes and c != "html"]
        ids = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        parent_rows = table.select(carried).to_pylist() if carried else [{} for _ in ids]
        out: list[dict] = []
        for doc_id, text, parent in zip(ids, texts, parent_rows):
            if not text or not text.strip():
                shard.drop({"id": doc_id, **parent}, "no_text")
                continue
            pieces = split_text(text, self.options.max_chars, self.options.min_chars, self.options.detect_chapters)
            if self.tokenizer is not None:
                pieces, resplit = fit_tokens(
                    text, pieces, self.tokenizer, self.options.max_tokens, self.options.min_chars
                )
                if resplit:
                    shard.count("passages_resplit_for_tokens", resplit)
            if len(pieces) > 1:
                shard.count("split_documents")
            for index, (start, end, chapter) in enumerate(pieces):
                passage = text[start:end]
                out.append(
                    {
                        **parent,
                        "id": content_id(doc_id, start, passage),
                        "text": passage,
                        "doc_id": doc_id,
                        "passage_index": index,
                        "char_offset": start,
                        "chapter": chapter,
                    }
                )
        schema = pa.schema(
            [*(table.schema.field(c) for c in carried), *(pa.field(k, v) for k, v in self.column_types().items())]
        )
        return pa.Table.from_pylist(out, schema=schema)


def paragraphs(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank paragraph, trimmed of surrounding whitespace."""
    spans = []
    pos = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for s, e in spans:
        chunk = text[s:e]
        stripped = chunk.strip()
        if stripped:
            lead = len(chunk) - len(chunk.lstrip())
            out.append((s + lead, s + lead + len(stripped)))
    return out


def is_heading(paragraph: str) -> bool:
    return len(paragraph) <= _HEADING_MAX_CHARS and bool(_HEADING.match(paragraph))


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Cut one over-long paragraph at sentence ends, else at whitespace, else hard."""
    bounds = [start] + [start + m.end() for m in _SENTENCE_END.finditer(text[start:end])] + [end]
    pieces: list[tuple[int, int]] = []
    piece_start = start
    last_ok = start
    for b in bounds[1:]:
        if b - piece_start <= max_chars:
            last_ok = b
            continue
        if last_ok > piece_start:
            pieces.append((piece_start, last_ok))
            piece_start = last_ok
        # one sentence longer than max_chars: cut it at whitespace
        while b - piece_start > max_chars:
            window = text[piece_start : piece_start + max_chars]
            cut = window.rfind(" ")
            cut = cut if cut > max_chars // 2 else max_chars
            pieces.append((piece_start, piece_start + cut))
            piece_start += cut
        last_ok = b
    if piece_start < end:
        pieces.append((piece_start, end))
    out = []
    for s, e in pieces:
        chunk = text[s:e]
        lead = len(chunk) - len(chunk.lstrip())
        stripped = chunk.strip()
        if stripped:
            out.append((s + lead, s + lead + len(stripped)))
    return out


def split_text(
    text: str, max_chars: int, min_chars: int, detect_chapters: bool = True
) -> list[tuple[int, int, str | None]]:
    """(start, end, chapter) of each passage of `text`, in order."""
    paras = paragraphs(text)
    headings = [detect_chapters and is_heading(text[s:e]) for s, e in paras]
    passages: list[list] = []  # [start, end, chapter]
    chapter: str | None = None
    current: list | None = None

    def flush():
        nonlocal current
        if current is not None:
            passages.append(current)
            current = None

    for i, (s, e) in enumerate(paras):
        if headings[i]:
            toc_entry = (i + 1 < len(paras) and headings[i + 1]) or (i > 0 and headings[i - 1])
            if not toc_entry:
                flush()
                chapter = " ".join(text[s:e].split())
        for ps, pe in _cut_long(text, s, e, max_chars) if e - s > max_chars else [(s, e)]:
            if current is not None and pe - current[0] <= max_chars:
                current[1] = pe
            else:
                flush()
                current = [ps, pe, chapter]
    flush()
    # A short passage joins its predecessor when both belong to the same chapter.
    merged: list[list] = []
    for p in passages:
        if (
            merged
            and p[1] - p[0] < min_chars
            and merged[-1][2] == p[2]
            and p[1] - merged[-1][0] <= max_chars + min_chars
        ):
            merged[-1][1] = p[1]
        else:
            merged.append(p)
    return [(s, e, c) for s, e, c in merged]


def fit_tokens(
    text: str, pieces: list[tuple[int, int, str | None]], tokenizer, max_tokens: int, min_chars: int
) -> tuple[list, int]:
    """Split again every piece over `max_tokens` tokens: at the same boundaries with
    a character budget scaled to its token density, down to a hard cut at a token
    boundary. Returns the pieces and how many were split again."""
    from synth.llm.tokens import char_end_of_tokens, count_tokens

    out: list[tuple[int, int, str | None]] = []
    resplit = 0
    sizes = count_tokens(tokenizer, [text[s:e] for s, e, _ in pieces])
    for (s, e, chapter), n in zip(pieces, sizes):
        if n <= max_tokens:
            out.append((s, e, chapter))
            continue
        resplit += 1
        out.extend(
            _fit_piece(text, s, e, chapter, n, tokenizer, max_tokens, min_chars, char_end_of_tokens, count_tokens)
        )
    return out, resplit


def _fit_piece(text, s, e, chapter, n, tokenizer, max_tokens, min_chars, char_end_of_tokens, count_tokens, depth=0):
    if n <= max_tokens:
        return [(s, e, chapter)]
    if depth < 4:
        budget = max(16, int((e - s) * max_tokens / n * 0.9))
        sub = split_text(text[s:e], budget, min(min_chars, budget // 2), detect_chapters=False)
        if len(sub) > 1:
            out = []
            sizes = count_tokens(tokenizer, [text[s + a : s + b] for a, b, _ in sub])
            for (a, b, _), m in zip(sub, sizes):
                out.extend(
                    _fit_piece(
                        text,
                        s + a,
                        s + b,
                        chapter,
                        m,
                        tokenizer,
                        max_tokens,
                        min_chars,
                        char_end_of_tokens,
                        count_tokens,
                        depth + 1,
                    )
                )
            return out
    # no boundary left: cut at the token budget
    out = []
    while s < e:
        budget = max_tokens
        while True:
            cut = s + max(1, char_end_of_tokens(tokenizer, text[s:e], budget))
            piece = text[s:cut]
            # a slice can tokenize a little longer than the same span inside its text
            size = count_tokens(tokenizer, [piece.strip()])[0]
            if size <= max_tokens or budget <= 1:
                break
            budget = max(1, budget - (size - max_tokens))
        lead = len(piece) - len(piece.lstrip())
        if piece.strip():
            out.append((s + lead, s + lead + len(piece.strip()), chapter))
        s = cut
    return out


def book_passages(path, max_chars: int = 1500, min_chars: int = 500) -> list[str]:
    """Passages of a book file as the ingest stages would cut them (decode, strip the
    Gutenberg header and footer, split at paragraphs): for tests, benchmarks and
    quick looks without running a pipeline."""
    from pathlib import Path

    from synth.ingest.readers.text import decode_text, parse_book

    body = parse_book(decode_text(Path(path).read_bytes()).text).text
    return [body[s:e] for s, e, _ in split_text(body, max_chars, min_chars)]
