"""The ``numbers`` task: digits to English number words, a test of length generalisation.

A source is a number's digits, one token each (``4 2 0 7``); its target the number in words
(``four thousand two hundred seven``: American English, no "and", no hyphens, so every word is a
token of a word tokenizer). Train and valid hold numbers of 1 to 4 digits, test only numbers of 5 and
6 digits whose words outnumber those of every number in train (7 to 9 words against at most 6), so
every test source and target is longer than any in train, and holds word orders train never shows
("... hundred ... thousand", "forty five thousand"): what SCAN's length split asks of a model, on a
task small enough to train in minutes.
"""
from __future__ import annotations

import random

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SPLIT_SIZES = {"train": 8000, "valid": 1000, "test": 2000}       # test: half 5-digit, half 6-digit


def _below_thousand(n: int) -> list[str]:
    """1..999 in words."""
    words = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(TENS[n // 10])
        n %= 10
    if n:
        words.append(ONES[n])
    return words


def number_words(n: int) -> str:
    """0..999,999 in words: ``number_words(4207)`` is "four thousand two hundred seven"."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number_words takes 0..999999, got {n}")
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = (_below_thousand(thousands) + ["thousand"] if thousands else []) + (_below_thousand(rest) if rest else [])
    return " ".join(words)


def number_pair(n: int) -> tuple[str, str]:
    """(source, target): the digits of ``n`` one token each, and its words."""
    return " ".join(str(n)), number_words(n)


def _longer(rng: random.Random, low: int, high: int, n: int, words: int) -> list[int]:
    """``n`` distinct numbers drawn from low..high-1 whose words number more than ``words``."""
    out: dict[int, None] = {}
    while len(out) < n:
        k = rng.randrange(low, high)
        if len(number_words(k).split()) > words:
            out[k] = None
    return list(out)


def number_splits(seed: int, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[tuple[str, str]]]:
    """{"train", "valid", "test"}: train and valid drawn without overlap from 0..9999 (at most 4 digits,
    at most 6 words), test half from the 5-digit and half from the 6-digit numbers of more than 6 words,
    in a random order."""
    rng = random.Random(seed)
    short = rng.sample(range(10_000), sizes["train"] + sizes["valid"])
    most = max(len(number_words(n).split()) for n in range(10_000))   # 6: "seven thousand seven hundred seventy seven"
    half = sizes["test"] // 2
    long = _longer(rng, 10_000, 100_000, half, most) + _longer(rng, 100_000, 1_000_000, sizes["test"] - half, most)
    rng.shuffle(long)
    return {"train": [number_pair(n) for n in short[:sizes["train"]]],
            "valid": [number_pair(n) for n in short[sizes["train"]:]],
            "test": [number_pair(n) for n in long]}
