"""Generators for the built-in tasks, and the splits shipped in ``data/<name>/``.

Every generator is deterministic for a seed (stdlib ``random.Random``, whose
algorithms are stable across Python versions), so ``attnseq make-data NAME``
regenerates the shipped files byte for byte.

Date normalisation: source is a date as people write it, target ISO YYYY-MM-DD.
Dates are uniform over 1950-01-01 .. 2049-12-31 (but see short numeric dates below). Two-digit years use one pivot
rule: YY 00-49 means 20YY, 50-99 means 19YY, so every two-digit year is
unambiguous within the range.

The date files keep what the generator knows of each example in two more columns:
``source<TAB>target<TAB>style<TAB>one-digit``, the style's name (``M/D/YY``) and which numeric
fields are written with one digit (``month+day``, ``month``, ``day`` or ``none``; see
``one_digit_fields``). The loaders ignore them; ``attnseq eval --by style`` reads them.

Short numeric dates are the hard case: in ``1/9/76`` and ``1/12/76`` only the slashes tell a
one-digit month or day from the first digit of a two-digit one; month 1 begins like 10, 11 and 12,
days 1, 2 and 3 like 10-31. Drawn uniformly they are rare (one style in fifteen; January is one
month in twelve, days 1-3 one day in ten), so the generator draws ``M/D/YY`` four times as often as
another style (``STYLE_WEIGHTS``), and in a quarter of those draws makes the month January and, on
its own, in a quarter the day 1, 2 or 3 (``AMBIGUOUS_SHARE``); ``test-short.tsv`` holds short
``M/D/YY`` dates that are in no split (``short_test_rows``).
"""
from __future__ import annotations

import datetime as _dt
import random
from pathlib import Path

from .io import atomic_write_text, read_pairs

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
STYLE_NAMES = [name for name, _ in DATE_STYLES]
# How often each style is drawn, relative to the others (1); see the module's docstring.
STYLE_WEIGHTS = {"M/D/YY": 4}
# Styles that write month and day without padding, and the share of their draws whose month is made 1
# and (on its own) whose day is made 1, 2 or 3: the one-digit values that begin like two-digit ones.
AMBIGUOUS_SHARE = {"M/D/YY": 0.25}
CASES = (str.title, str.lower, str.upper)
# Only styles with letters get a case variant; these are drawn this often (Title is the rest).
CASE_WEIGHTS = (0.5, 0.25, 0.25)


def render_date(d: _dt.date, rng: random.Random, style: str | None = None) -> str:
    """A human rendering of ``d`` in ``style`` (default: one at random, all styles alike), in Title,
    lower or UPPER case."""
    if style is None:
        style = STYLE_NAMES[rng.randrange(len(DATE_STYLES))]
    text = DATE_STYLES[STYLE_NAMES.index(style)][1](d, rng)
    case = rng.choices(CASES, weights=CASE_WEIGHTS)[0]
    return text if case is str.title else case(text)


def one_digit_fields(style: str, d: _dt.date) -> str:
    """Which numeric fields ``style`` writes with one digit for ``d``: "month+day", "month", "day" or "none".
    Only ``M/D/YY`` leaves the month unpadded; the styles that spell the month out leave the day."""
    month_unpadded = style.startswith("M/")                        # M/D/YY, not MM/DD/YYYY
    day_unpadded = "D" in style.replace("DD", "")
    fields = [name for name, unpadded, value in (("month", month_unpadded, d.month), ("day", day_unpadded, d.day))
              if unpadded and value < 10]
    return "+".join(fields) or "none"


def random_date(rng: random.Random) -> _dt.date:
    return FIRST_DAY + _dt.timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days + 1))


def date_example(rng: random.Random) -> tuple[str, str, str, str]:
    """(source, ISO target, style, one-digit fields): a uniform date in a style drawn with
    ``STYLE_WEIGHTS``, for ``AMBIGUOUS_SHARE`` of a style's draws moved to January, and for as many
    (on their own) to day 1, 2 or 3."""
    d = random_date(rng)
    style = rng.choices(STYLE_NAMES, weights=[STYLE_WEIGHTS.get(n, 1) for n in STYLE_NAMES])[0]
    share = AMBIGUOUS_SHARE.get(style, 0.0)
    if rng.random() < share:
        d = d.replace(month=1)                                      # January has every day 1-31
    if rng.random() < share:
        d = d.replace(day=rng.randint(1, 3))
    return render_date(d, rng, style), d.isoformat(), style, one_digit_fields(style, d)


def date_pair(rng: random.Random) -> tuple[str, str]:
    return date_example(rng)[:2]


def addition_pair(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randrange(1000), rng.randrange(1000)
    return f"{a}+{b}", str(a + b)


def make_splits(pair_fn, seed: int, sizes: dict[str, int] = SPLIT_SIZES) -> dict[str, list[tuple]]:
    """Draw rows ``(source, target, ...)`` with distinct source strings, so no test or valid source
    appears in train."""
    rng = random.Random(seed)
    seen: set[str] = set()
    total = sum(sizes.values())
    rows: list[tuple] = []
    tries = 0
    while len(rows) < total:
        tries += 1
        if tries > 50 * total:
            raise RuntimeError("the generator cannot produce enough distinct sources")
        row = tuple(pair_fn(rng))
        if row[0] not in seen:
            seen.add(row[0])
            rows.append(row)
    out, start = {}, 0
    for name, n in sizes.items():
        out[name] = rows[start:start + n]
        start += n
    return out


SHORT_TEST_PER_KIND = 1500      # test-short.tsv: this many dates of each one-digit kind (fewer if fewer are left)


def short_test_rows(splits: dict[str, list[tuple]], seed: int) -> list[tuple[str, str, str, str]]:
    """Rows of ``test-short.tsv``: ``M/D/YY`` dates with a one-digit month and/or day whose source is in
    none of ``splits``, up to ``SHORT_TEST_PER_KIND`` of each kind (month+day, month, day), drawn with
    ``seed``, in date order."""
    seen = {row[0] for rows in splits.values() for row in rows}
    kinds: dict[str, list] = {"month+day": [], "month": [], "day": []}
    fmt = DATE_STYLES[STYLE_NAMES.index("M/D/YY")][1]
    for k in range((LAST_DAY - FIRST_DAY).days + 1):
        d = FIRST_DAY + _dt.timedelta(days=k)
        src, kind = fmt(d, None), one_digit_fields("M/D/YY", d)
        if kind in kinds and src not in seen:
            kinds[kind].append((src, d.isoformat(), "M/D/YY", kind))
    rng = random.Random(seed)
    rows = [r for found in kinds.values() for r in rng.sample(found, min(SHORT_TEST_PER_KIND, len(found)))]
    return sorted(rows, key=lambda r: r[1])


def date_tables(seed: int) -> dict[str, list[tuple[str, str, str, str]]]:
    """The date files' rows (source, target, style, one-digit fields): train, valid, test and test-short."""
    splits = make_splits(date_example, seed)
    return {**splits, "test-short": short_test_rows(splits, seed + 1)}


def _pairs(splits: dict[str, list[tuple]]) -> dict[str, list[tuple[str, str]]]:
    return {name: [row[:2] for row in rows] for name, rows in splits.items()}


def _toy_en_ko(seed):
    from .toy_translation import make_splits as toy_splits
    return toy_splits(seed)


def _numbers(seed):
    from .numbers import number_splits
    return number_splits(seed)


# name -> seed -> {"train", "valid", "test": [(source, target)]}, what a run trains on
GENERATORS = {
    "date": lambda seed: _pairs(make_splits(date_example, seed)),
    "addition": lambda seed: make_splits(addition_pair, seed),
    "toy-en-ko": _toy_en_ko,
    "numbers": _numbers,                # digits to words; test numbers longer than any in train (numbers.py)
}
# name -> seed -> {file name: rows}, what ``attnseq make-data`` writes (rows may have more columns)
TABLES = {**GENERATORS, "date": date_tables}
# Test files beyond test.tsv that a task's run should report, with what each holds.
EXTRA_TESTS = {"date": {"test-short": "short numeric dates: M/D/YY with a one-digit month or day, none in train"}}


def extra_tests(name: str, directory: str | Path | None = None) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """{file name: (what it holds, pairs)} for the ``EXTRA_TESTS`` of built-in task ``name`` (none for
    others): read from ``directory``/FILE.tsv where that exists, else generated as ``make-data`` would."""
    files = EXTRA_TESTS.get(name, {})
    paths = {f: Path(directory or "") / f"{f}.tsv" for f in files}
    if directory is None or not all(p.exists() for p in paths.values()):
        made = TABLES[name](DEFAULT_SEED) if files else {}
        return {f: (what, [row[:2] for row in made[f]]) for f, what in files.items()}
    return {f: (what, read_pairs(paths[f])) for f, what in files.items()}
DEFAULT_SEED = 1234


def write_splits(name: str, out_dir: str | Path, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Generate dataset ``name`` and write its TSV files (train, valid, test and any extra test file),
    atomically, one row per line with its columns tab-separated."""
    if name not in TABLES:
        raise ValueError(f"unknown dataset {name!r}; built-in: {', '.join(TABLES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in TABLES[name](seed).items():
        path = out_dir / f"{split}.tsv"
        atomic_write_text(path, "".join("\t".join(row) + "\n" for row in rows))
        paths[split] = path
    return paths
