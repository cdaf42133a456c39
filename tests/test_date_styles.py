"""The date files' style columns, the balance of short numeric dates, and test-short.tsv."""
import collections
import datetime as dt
import re

import pytest

from attnseq.data.corpus import shipped_dir
from attnseq.data.datasets import (DATE_STYLES, MONTHS, MONTHS_ABBR, AMBIGUOUS_SHARE, SHORT_TEST_PER_KIND,
                                   STYLE_NAMES, STYLE_WEIGHTS, WEEKDAYS, WEEKDAYS_ABBR, date_tables,
                                   one_digit_fields, write_splits, yy_to_year)
from attnseq.data.io import read_columns, read_pairs

FILES = ("train", "valid", "test", "test-short")
_ALT = lambda words: "(?:" + "|".join(words) + ")"            # noqa: E731
# each piece of a style's name as a regex (the month and day as numbers allow one or two digits)
PIECES = {"Weekday": _ALT(WEEKDAYS), "Wkd": _ALT(WEEKDAYS_ABBR), "Month": _ALT(MONTHS),
          "Mon": _ALT(MONTHS_ABBR + ["Sept"]), "YYYY": r"(?P<Y>\d{4})", "YY": r"(?P<y>\d{2})",
          "MM": r"(?P<M>\d{2})", "DD": r"(?P<D>\d{2})", "M": r"(?P<M>[1-9]|1[0-2])", "D": r"(?P<D>[1-9]|[12]\d|3[01])"}


def style_regex(name: str) -> re.Pattern:
    """The sources a style can render, from its name alone: 'M/D/YY' -> (?P<M>..)/(?P<D>..)/(?P<y>..)."""
    parts = re.findall(r"Weekday|Wkd|Month|Mon|YYYY|YY|MM|DD|M|D|.", name)
    return re.compile("".join(PIECES.get(p, re.escape(p)) for p in parts), re.IGNORECASE)


@pytest.fixture(scope="module")
def tables():
    return date_tables(1234)


@pytest.fixture(scope="module")
def shipped():
    return {name: read_columns(shipped_dir("date") / f"{name}.tsv", [3, 4]) for name in FILES}


def test_make_data_writes_every_date_file_byte_for_byte(tmp_path):
    paths = write_splits("date", tmp_path)
    assert sorted(paths) == sorted(FILES)
    for name in FILES:
        assert (tmp_path / f"{name}.tsv").read_bytes() == (shipped_dir("date") / f"{name}.tsv").read_bytes(), name


def test_shipped_rows_match_their_style_and_one_digit_columns(shipped):
    checked = collections.Counter()
    for name, (pairs, extra) in shipped.items():
        for (src, tgt), (style, one_digit) in zip(pairs, extra):
            assert style in STYLE_NAMES, (name, src, style)
            m = style_regex(style).fullmatch(src)
            assert m, (name, src, style)
            d = dt.date.fromisoformat(tgt)
            fields = m.groupdict()
            if fields.get("Y"):
                assert int(fields["Y"]) == d.year
            if fields.get("y"):
                assert yy_to_year(int(fields["y"])) == d.year
            if fields.get("M"):
                assert int(fields["M"]) == d.month
            if fields.get("D"):
                assert int(fields["D"]) == d.day
            assert one_digit == one_digit_fields(style, d)
            checked[style] += 1
    assert set(checked) == set(STYLE_NAMES)


def test_loaders_still_read_two_columns(shipped):
    for name in FILES:
        assert read_pairs(shipped_dir("date") / f"{name}.tsv") == shipped[name][0]


@pytest.mark.parametrize("style, date, want", [
    ("M/D/YY", (1976, 1, 9), "month+day"), ("M/D/YY", (1976, 1, 19), "month"), ("M/D/YY", (1976, 11, 9), "day"),
    ("M/D/YY", (1976, 11, 19), "none"), ("D Month YYYY", (1976, 1, 9), "day"), ("Mon D, YYYY", (1976, 1, 19), "none"),
    ("Weekday, Month D, YYYY", (1976, 11, 3), "day"), ("DD.MM.YY", (1976, 1, 9), "none"),
    ("MM/DD/YYYY", (1976, 1, 9), "none"), ("YYYY-MM-DD", (1976, 1, 9), "none"),
])
def test_one_digit_fields(style, date, want):
    assert one_digit_fields(style, dt.date(*date)) == want


def test_ambiguous_short_numeric_dates_are_drawn_more_often(tables):
    train = tables["train"]
    styles = collections.Counter(r[2] for r in train)
    others = [n for n in STYLE_NAMES if n != "M/D/YY"]
    mean = sum(styles[n] for n in others) / len(others)
    assert all(styles[n] == pytest.approx(mean, rel=0.1) for n in others), styles
    # a repeated source is drawn again, and M/D/YY has only 36,525 (the ambiguous ones run out first)
    assert 0.75 * STYLE_WEIGHTS["M/D/YY"] * mean < styles["M/D/YY"] < STYLE_WEIGHTS["M/D/YY"] * mean
    dates = [dt.date.fromisoformat(r[1]) for r in train if r[2] == "M/D/YY"]
    january = sum(d.month == 1 for d in dates) / len(dates)
    day_1_3 = sum(d.day <= 3 for d in dates) / len(dates)
    share = AMBIGUOUS_SHARE["M/D/YY"]
    for got, uniform in ((january, 1 / 12), (day_1_3, 36 / 365.25)):
        drawn = share + (1 - share) * uniform                   # fewer are kept: repeats are drawn again
        assert uniform + share / 2 < got < drawn, (got, uniform, drawn)
    others_january = sum(r[1][5:7] == "01" for r in train if r[2] != "M/D/YY") / (len(train) - len(dates))
    assert others_january == pytest.approx(1 / 12, abs=0.01)     # other styles keep uniform dates


def test_test_short_holds_unseen_short_numeric_dates(tables):
    seen = {r[0] for name in ("train", "valid", "test") for r in tables[name]}
    short = tables["test-short"]
    assert not seen & {r[0] for r in short}
    assert len({r[0] for r in short}) == len(short)
    kinds = collections.Counter(r[3] for r in short)
    assert set(kinds) == {"month+day", "month", "day"}
    assert all(SHORT_TEST_PER_KIND * 0.9 <= n <= SHORT_TEST_PER_KIND for n in kinds.values()), kinds
    for src, tgt, style, kind in short:
        d = dt.date.fromisoformat(tgt)
        assert style == "M/D/YY"
        assert src == f"{d.month}/{d.day}/{d.year % 100:02d}"
        assert kind == one_digit_fields(style, d) != "none"
    assert [r[1] for r in short] == sorted(r[1] for r in short)


def test_every_style_has_a_name_and_renders_what_its_name_says():
    import random
    rng = random.Random(0)
    assert len(STYLE_NAMES) == len(set(STYLE_NAMES)) == len(DATE_STYLES)
    for name, fmt in DATE_STYLES:
        for _ in range(50):
            d = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(36525))
            assert style_regex(name).fullmatch(fmt(d, rng)), name


def test_extra_tests_read_the_shipped_file_or_generate_it(tmp_path):
    from attnseq.data.datasets import EXTRA_TESTS, extra_tests
    shipped = extra_tests("date", shipped_dir("date"))
    assert list(shipped) == list(EXTRA_TESTS["date"]) == ["test-short"]
    what, pairs = shipped["test-short"]
    assert "M/D/YY" in what and pairs == read_pairs(shipped_dir("date") / "test-short.tsv")
    assert extra_tests("date", tmp_path) == shipped == extra_tests("date")        # no file there: generated
    assert extra_tests("addition", shipped_dir("addition")) == {}
