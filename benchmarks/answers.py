"""Answer equivalence for self-consistency voting: synth's hand-written normaliser
(equal normalised strings), Hugging Face's math-verify (parse + verify every pair)
and synth's voting (`answer_keys`: the normaliser for plain numbers and letters,
math-verify for the rest), side by side on labelled pairs in one run.

Pairs: for GSM8K test answers (`#### X`), spellings of the same number (`\\$X`,
`X.00`, `x = X`, `1,234`, `\\frac{2X}{2}`, `X\\%`) and a different number; plus
LaTeX pairs, including the five the normaliser split.

    .venv/bin/python benchmarks/answers.py [--shared ../shared/data] [--items 500]

Prints, per method and set, agreement (share of pairs judged right: equal or not)
and answers/s. Last line: `ratio=<agreement of synth's voting / agreement of the
normaliser>` on all pairs.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import warnings
from pathlib import Path

from synth.filters.heuristic.answer_equivalence import answer_keys, parse_answer, same_answer

LATEX = [
    (r"\$5", "5", True),
    (r"50\%", "50", True),
    ("x=3", "3", True),
    (r"\sqrt{2}", r"\sqrt2", True),
    (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"\frac{1}{2}", "0.5", True),
    (r"\dfrac{3}{4}", "3/4", True),
    (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"2\pi", r"\pi \cdot 2", True),
    (r"\frac{\pi}{4}", r"\frac{1}{4}\pi", True),
    ("(1, 2)", "(1,2)", True),
    (r"x^2+2x+1", r"(x+1)^2", True),
    (r"\left(3, 4\right)", "(3,4)", True),
    (r"\sqrt{2}", r"\sqrt{3}", False),
    (r"\frac{1}{2}", r"\frac{1}{3}", False),
    ("x=3", "x=4", False),
    (r"2\pi", r"\pi", False),
    ("(1,2)", "(2,1)", False),
]


def gsm8k_pairs(path: Path, items: int) -> list[tuple[str, str, bool]]:
    pairs = []
    for line in path.read_text().splitlines()[:items]:
        gold = json.loads(line)["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        if not re.fullmatch(r"-?\d+", gold):
            continue
        x = int(gold)
        spellings = [rf"\${x}", f"{x}.00", f"x = {x}", rf"\frac{{{2 * x}}}{{2}}", rf"{x}\%"]
        if abs(x) >= 1000:
            spellings.append(f"{x:,}")
        pairs += [(gold, s, True) for s in spellings]
        pairs += [(gold, str(x + 1), False), (gold, rf"\${x + 1}", False)]
    return pairs


def by_normaliser(pairs):
    return [len(set(answer_keys([a, b], "normalize"))) == 1 for a, b, _ in pairs]


def by_math_verify(pairs):
    return [same_answer(parse_answer(a), parse_answer(b)) for a, b, _ in pairs]


def by_synth(pairs):
    return [len(set(answer_keys([a, b]))) == 1 for a, b, _ in pairs]


METHODS = {"normaliser": by_normaliser, "math-verify": by_math_verify, "synth voting": by_synth}


def measure(name: str, pairs) -> dict[str, float]:
    agreement = {}
    for method, fn in METHODS.items():
        start = time.perf_counter()
        said = fn(pairs)
        seconds = time.perf_counter() - start
        right = sum(s == want for s, (_, _, want) in zip(said, pairs))
        agreement[method] = right / len(pairs)
        missed = [(a, b) for s, (a, b, want) in zip(said, pairs) if s != want][:3]
        print(
            f"{name:8s} {method:13s} agreement {agreement[method]:.3f} ({right}/{len(pairs)})  {2 * len(pairs) / seconds:9,.0f} answers/s  e.g. wrong: {missed}"
        )
    return agreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--items", type=int, default=500)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    same_answer(
        parse_answer("1"), parse_answer(r"\frac{\sqrt{2}}{2}")
    )  # imports and first-use set-up outside the timings
    gsm = gsm8k_pairs(args.shared / "benchmarks" / "gsm8k" / "test.jsonl", args.items)
    plain = [p for p in gsm if re.fullmatch(r"-?[\d,]+(\.0+)?", p[1])]
    measure("gsm8k", gsm)
    measure("plain", plain)
    measure("latex", LATEX)
    total = measure("all", gsm + LATEX)
    print(
        f"agreement_normaliser={total['normaliser']:.3f} agreement_math_verify={total['math-verify']:.3f} agreement_synth={total['synth voting']:.3f}"
    )
    print(f"ratio={total['synth voting'] / total['normaliser']:.3f}")


if __name__ == "__main__":
    main()
