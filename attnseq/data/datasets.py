"""Generators for the built-in tasks, and the splits shipped in ``data/<name>/``.

Every generator is deterministic for a seed (stdlib ``random.Random``, whose
algorithms are stable across Python versions), so ``attnseq make-data NAME``
regenerates the shipped files byte for byte.

Date normalisation: source is a date as people write it, target ISO YYYY-MM-DD.
Dates are uniform over 1950-01-01 .. 2049-12-31. Two-digit years use one pivot
rule: YY 00-49 means 20YY, 50-99 means 19YY, so every two-digit year is
unambiguous within the range.
"""
from __future__ import annotations

import datetime as _dt
import random
from pathlib import Path

from .io import atomic_write_text

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTHS_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS_ABBR = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
FIRST_DAY, LAST_DAY = _dt.date(1950, 1, 1), _dt.date(2049, 12, 31)
SPLIT_SIZES = {"train": 45000, "valid": 5000, "test": 5000}


def yy_to_year(yy: int) -> int:
    """The pivot rule for two-digit years: 00-49 -> 2000-2049, 50-99 -> 1950-1999."""
    return 2000 + yy if yy < 50 else 1900 + yy


def _mon(d, rng):
    """Abbreviated month, with the common 'Sept' variant for September."""
    return "Sept" if d.month == 9 and rng.random() < 0.3 else MONTHS_ABBR[d.month - 1]


# Each style renders a date; (name, function(date, rng) -> str).
DATE_STYLES = [
    # the four standard en_US styles
    ("M/D/YY", lambda d, r: f"{d.month}/{d.day}/{d.year % 100:02d}"),
    ("Mon D, YYYY", lambda d, r: f"{_mon(d, r)} {d.day}, {d.year}"),
    ("Month D, YYYY", lambda d, r: f"{MONTHS[d.month - 1]} {d.day}, {d.year}"),
    ("Weekday, Month D, YYYY", lambda d, r: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}"),
    # other common families
    ("D Month YYYY", lambda d, r: f"{d.day} {MONTHS[d.month - 1]} {d.year}"),
    ("D Mon YYYY", lambda d, r: f"{d.day} {_mon(d, r)} {d.year}"),
    ("Month D YYYY", lambda d, r: f"{MONTHS[d.month - 1]} {d.day} {d.year}"),
    ("Weekday, Mon D YYYY", lambda d, r: f"{WEEKDAYS[d.weekday()]}, {_mon(d, r)} {d.day} {d.year}"),
    ("Wkd, Mon D, YYYY", lambda d, r: f"{WEEKDAYS_ABBR[d.weekday()]}, {_mon(d, r)} {d.day}, {d.year}"),
    ("Wkd D Mon YYYY", lambda d, r: f"{WEEKDAYS_ABBR[d.weekday()]} {d.day} {_mon(d, r)} {d.year}"),
    ("DD.MM.YYYY", lambda d, r: f"{d.day:02d}.{d.month:02d}.{d.year}"),
    ("DD.MM.YY", lambda d, r: f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}"),
    ("MM/DD/YYYY", lambda d, r: f"{d.month:02d}/{d.day:02d}/{d.year}"),
    ("YYYY/MM/DD", lambda d, r: f"{d.year}/{d.month:02d}/{d.day:02d}"),
    ("YYYY-MM-DD", lambda d, r: d.isoformat()),
]
CASES = (str.title, str.lower, str.upper)
# Only styles with letters get a case variant; these are drawn this often (Title is the rest).
CASE_WEIGHTS = (0.5, 0.25, 0.25)


def render_date(d: _dt.date, rng: random.Random) -> str:
    """A random human rendering of ``d``: a random style, in Title, lower or UPPER case."""
    _, fmt = DATE_STYLES[rng.randrange(len(DATE_STYLES))]
    text = fmt(d, rng)
    case = rng.choices(CASES, weights=CASE_WEIGHTS)[0]
    return text if case is str.title else case(text)


def date_pair(rng: random.Random) -> tuple[str, str]:
    d = FIRST_DAY + _dt.timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days + 1))
    return render_date(d, rng), d.isoformat()


def addition_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(1000), rng.randrange(1000)
    return f"{a}+{b}", str(a + b)


def make_splits(pair_fn, seed: int, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[tuple[str, str]]]:
    """Draw pairs with distinct source strings, so no test or valid source appears in train."""
    rng = random.Random(seed)
    seen: set[str] = set()
    total = sum(sizes.values())
    pairs: list[tuple[str, str]] = []
    tries = 0
    while len(pairs) < total:
        tries += 1
        if tries > 50 * total:
            raise RuntimeError("the generator cannot produce enough distinct sources")
        src, tgt = pair_fn(rng)
        if src not in seen:
            seen.add(src)
            pairs.append((src, tgt))
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = pairs[start:start + n]
        start += n
    return out


def _toy_en_ko(seed):
    from .toy_translation import make_splits as toy_splits
    return toy_splits(seed)


GENERATORS = {
    "date": lambda seed: make_splits(date_pair, seed),
    "addition": lambda seed: make_splits(addition_pair, seed),
    "toy-en-ko": _toy_en_ko,
}
DEFAULT_SEED = 1234


def write_splits(name: str, out_dir: str | Path, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Generate dataset ``name`` and write train/valid/test TSV files (atomically)."""
    if name not in GENERATORS:
        raise ValueError(f"unknown dataset {name!r}; built-in: {', '.join(GENERATORS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, pairs in GENERATORS[name](seed).items():
        path = out_dir / f"{split}.tsv"
        atomic_write_text(path, "".join(f"{s}\t{t}\n" for s, t in pairs))
        paths[split] = path
    return paths
