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

Pages written without spaces (zh, ja, th, ...) skip the word rule, as Gopher's
rules do.
"""

from __future__ import annotations

from dataclasses import dataclass

from synth.ingest.langid import FastTextPredictor, bundled_lid_model, load_fasttext_model, predict_languages
from synth.ingest.textstats import NO_SPACE_LANGUAGES

# The language of a page is settled by its first few thousand characters.
LID_MAX_CHARS = 4000


@dataclass(frozen=True)
class CheapVerdict:
    reason: str | None  # a drop reason, or None when the page goes on to full extraction
    language: str | None
    language_score: float
    words: int  # whitespace words in the page's whole visible text

    def scores(self) -> dict:
        return {"cheap_language": self.language, "cheap_language_score": round(self.language_score, 4), "cheap_words": self.words}


class CheapPass:
    """resiliparse text + lid.176 -> a verdict per page, decided for a whole shard at once."""

    def __init__(self, languages: list[str], min_language_score: float, min_words: int, no_space_languages=NO_SPACE_LANGUAGES):
        self.languages = frozenset(languages)
        self.min_language_score = min_language_score
        self.min_words = min_words
        self.no_space = frozenset(no_space_languages)
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        self._extract_plain_text = extract_plain_text
        self._html_tree = HTMLTree
        # Also needed without a language list: the word rule skips pages written without spaces.
        self._lid = FastTextPredictor(load_fasttext_model(bundled_lid_model()))

    def texts(self, page: str) -> tuple[str, int]:
        """(text to identify the language of, words of all visible text) of one decoded page.

        The language is read from the main content (menus and footers are often in
        another language), or from all visible text when the main content is empty.
        """
        tree = self._html_tree.parse(page)
        main = self._extract_plain_text(tree, main_content=True, alt_texts=False, links=False, form_fields=False)
        n_words = len(main.split())
        if n_words >= self.min_words and n_words:
            return main, n_words  # enough words already: the whole-page count cannot change the verdict
        visible = self._extract_plain_text(tree, main_content=False, alt_texts=True, links=False, form_fields=True)
        n_words = max(n_words, len(visible.split()))
        return (main if main.strip() else visible), n_words

    def verdicts(self, mains: list[str], words: list[int]) -> list[CheapVerdict]:
        languages, scores = predict_languages(self._lid, mains, LID_MAX_CHARS)
        out = []
        for lang, score, n_words in zip(languages, scores, words):
            reason = None
            if self.languages and lang is not None and lang not in self.languages and score >= self.min_language_score:
                reason = "cascade_language_not_wanted"
            elif n_words < self.min_words and lang not in self.no_space:
                reason = "cascade_too_little_text"
            out.append(CheapVerdict(reason, lang, score, n_words))
        return out
