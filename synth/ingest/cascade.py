"""The ingest cascade: a cheap first pass that spares the expensive extractor.

In a real crawl most pages never reach the output (a language the pipeline does
not want, next to no text), yet each would pay for a full trafilatura parse.
The cheap pass reads a page's main text with resiliparse (about 10x faster than
trafilatura), identifies its language with lid.176 and applies the cheap rules;
a page that certainly fails is dropped before full extraction, under its own
drop reason. Survivors get the full extraction, and the pipeline's rules
(langid, Gopher, C4) run again on that text as before, so the cascade can only
remove pages, never let a page through that the pipeline would drop.

The rules are conservative on purpose (measured in benchmarks/ingest.py, which
reports the share of the no-cascade output the cascade keeps):

- `cascade_language_not_wanted`: the page's language is outside `languages`
  with lid.176 probability at least `min_language_score` (0.8 by default,
  stricter than langid's usual 0.65), on the cheap text;
- `cascade_too_little_text`: a page in a language written with spaces whose
  whole visible text (not only the main content, an upper bound of what any
  extractor finds) has fewer than `min_words` words. Gopher's quality rule
  needs 50; the default 25 leaves room for text trafilatura finds that
  resiliparse does not show (form fields, odd markup: up to 3.5x more words on
  pages with 70+ visible words, never on pages under 32, in 422 real pages).

- `cascade_low_alpha_words`: a page with much markup (at least
  `alpha_min_tags` tags, 5,000 by default, counted as `<` in its HTML) whose
  main text has fewer than `min_alpha_words_ratio` (0.75) of its words
  containing a letter. trafilatura's time grows with the number of elements
  (7,000-70,000-tag listings took 60% of it on the shared crawls), and a
  listing of names, dates and counts is what such a page is when its text is
  mostly not words; Gopher needs 0.8 on the extracted text. Measured
  (benchmarks/ingest.py, the gold set, tests/ingest/test_cascade.py): it fired
  on 7 shared crawl pages (cheap ratio 0.67-0.72), all dropped by Gopher
  without the cascade. No gold news page has 5,000 tags (the most: 3,229; the
  bytes of a news page are mostly scripts) and on its 105 pages over 100 kB the
  lowest cheap ratio is 0.805; the lowest of a page any pipeline keeps on the
  shared crawls was 0.78 (under 3,000 tags).

Pages written without spaces (zh, ja, th, ...) skip the word and alpha rules, as
Gopher's rules do. Without a language list only pages of `alpha_min_tags` or
more take the cheap pass: on other pages the word rule alone did not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth.ingest.langid import FastTextPredictor, bundled_lid_model, load_fasttext_model, predict_languages
from synth.ingest.textstats import NO_SPACE_LANGUAGES, count_non_alpha_tokens

# The language of a page is settled by its first few thousand characters.
LID_MAX_CHARS = 4000


@dataclass(frozen=True)
class CheapVerdict:
    reason: str | None  # a drop reason, or None when the page goes on to full extraction
    language: str | None
    language_score: float
    words: int  # whitespace words in the page's whole visible text
    alpha_words_ratio: float | None = None  # share of main-text words with a letter (pages with much markup only)

    def scores(self) -> dict:
        scores = {
            "cheap_language": self.language,
            "cheap_language_score": round(self.language_score, 4),
            "cheap_words": self.words,
        }
        if self.alpha_words_ratio is not None:
            scores["cheap_alpha_words_ratio"] = round(self.alpha_words_ratio, 4)
        return scores


@dataclass(frozen=True)
class CheapText:
    """What the cheap pass read from one page."""

    main: str  # text to identify the language of (at most LID_MAX_CHARS)
    words: int  # whitespace words of all visible text (or of the main text when that is already enough)
    alpha_words_ratio: float | None  # of the main text, for pages of alpha_min_tags or more; else None


def markup_tags(raw: bytes) -> int:
    """Tags in a page's HTML, opening and closing (its `<`): what trafilatura's time
    grows with, where bytes also count scripts. A C-speed count."""
    return raw.count(b"<")


class CheapPass:
    """resiliparse text + lid.176 -> a verdict per page, decided for a whole shard at once."""

    def __init__(
        self,
        languages: list[str],
        min_language_score: float,
        min_words: int,
        no_space_languages=NO_SPACE_LANGUAGES,
        min_alpha_words_ratio: float | None = None,
        alpha_min_tags: int = 5_000,
    ):
        self.languages = frozenset(languages)
        self.min_language_score = min_language_score
        self.min_words = min_words
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.alpha_min_tags = alpha_min_tags
        self.no_space = frozenset(no_space_languages)
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        self._extract_plain_text = extract_plain_text
        self._html_tree = HTMLTree
        # Also needed without a language list: the word rule skips pages written without spaces.
        self._lid = FastTextPredictor(load_fasttext_model(bundled_lid_model()))

    def wants(self, tags: int) -> bool:
        """Whether a page with `tags` tags (markup_tags) takes the cheap pass at all."""
        return bool(self.languages) or self.alpha_rule(tags)

    def alpha_rule(self, tags: int) -> bool:
        return self.min_alpha_words_ratio is not None and tags >= self.alpha_min_tags

    def texts(self, page: str, tags: int = 0) -> CheapText:
        """What the cheap pass reads from one decoded page with `tags` tags.

        The language is read from the main content (menus and footers are often in
        another language), or from all visible text when the main content is empty.
        """
        tree = self._html_tree.parse(page)
        main = self._extract_plain_text(tree, main_content=True, alt_texts=False, links=False, form_fields=False)
        words = main.split()
        n_words = len(words)
        alpha = None
        if self.alpha_rule(tags) and n_words:
            alpha = 1.0 - count_non_alpha_tokens(main) / n_words  # as Gopher's quality rule counts it
        if n_words >= self.min_words and n_words:
            # enough words already: the whole-page count cannot change the verdict
            return CheapText(main[:LID_MAX_CHARS], n_words, alpha)
        visible = self._extract_plain_text(tree, main_content=False, alt_texts=True, links=False, form_fields=True)
        n_words = max(n_words, len(visible.split()))
        return CheapText((main if main.strip() else visible)[:LID_MAX_CHARS], n_words, alpha)

    def verdicts(self, cheap: list[CheapText]) -> list[CheapVerdict]:
        languages, scores = predict_languages(self._lid, [c.main for c in cheap], LID_MAX_CHARS)
        out = []
        for lang, score, c in zip(languages, scores, cheap):
            reason = None
            spaced = lang not in self.no_space
            if self.languages and lang is not None and lang not in self.languages and score >= self.min_language_score:
                reason = "cascade_language_not_wanted"
            elif c.words < self.min_words and spaced:
                reason = "cascade_too_little_text"
            elif c.alpha_words_ratio is not None and spaced and c.alpha_words_ratio < self.min_alpha_words_ratio:
                reason = "cascade_low_alpha_words"
            out.append(CheapVerdict(reason, lang, score, c.words, c.alpha_words_ratio))
        return out
