"""Generators, shipped splits, loaders and tokenizers."""
import datetime as dt
import re

import pytest

from attnseq.data.datasets import (DATE_STYLES, GENERATORS, MONTHS, WEEKDAYS, WEEKDAYS_ABBR, date_pair,
                              make_splits, write_splits, yy_to_year)
from attnseq.errors import DataError
from attnseq.data.io import read_aligned, read_pairs, read_question_answer, read_tsv
from attnseq.data.tokenizers import CharTokenizer, WordTokenizer, load_tokenizer
from attnseq.data.corpus import shipped_dir


@pytest.fixture(scope="module")
def date_splits():
    return GENERATORS["date"](1234)


def test_shipped_files_regenerate_byte_for_byte(tmp_path):
    for name in ("date", "addition", "numbers"):
        write_splits(name, tmp_path / name)
        for split in ("train", "valid", "test"):
            shipped = (shipped_dir(name) / f"{split}.tsv").read_bytes()
            assert (tmp_path / name / f"{split}.tsv").read_bytes() == shipped, (name, split)


def test_generator_is_deterministic():
    a = make_splits(date_pair, 7, {"train": 300, "test": 50})
    b = make_splits(date_pair, 7, {"train": 300, "test": 50})
    c = make_splits(date_pair, 8, {"train": 300, "test": 50})
    assert a == b and a != c


def test_sizes_and_no_overlap(date_splits):
    sizes = {k: len(v) for k, v in date_splits.items()}
    assert sizes == {"train": 45000, "valid": 5000, "test": 5000}
    train = {s for s, _ in date_splits["train"]}
    assert not train & {s for s, _ in date_splits["test"]}
    assert not train & {s for s, _ in date_splits["valid"]}


def test_targets_are_real_dates_in_range(date_splits):
    for _, tgt in date_splits["train"]:
        d = dt.date.fromisoformat(tgt)
        assert 1950 <= d.year <= 2049


def test_weekdays_match_the_date(date_splits):
    names = {w.lower(): i for i, w in enumerate(WEEKDAYS)} | {w.lower(): i for i, w in enumerate(WEEKDAYS_ABBR)}
    checked = 0
    for src, tgt in date_splits["train"]:
        word = re.match(r"[A-Za-z]+", src)
        if word and word.group().lower() in names:
            assert names[word.group().lower()] == dt.date.fromisoformat(tgt).weekday(), src
            checked += 1
    assert checked > 5000


def test_two_digit_years_follow_the_pivot(date_splits):
    seen = 0
    for src, tgt in date_splits["train"]:
        m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2})", src) or re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{2})", src)
        if m:
            assert int(tgt[:4]) == yy_to_year(int(m.group(3)))
            seen += 1
    assert seen > 1000
    assert yy_to_year(49) == 2049 and yy_to_year(50) == 1950


def test_all_styles_and_cases_appear(date_splits):
    srcs = [s for s, _ in date_splits["train"]]
    assert len(DATE_STYLES) >= 12
    full_months = [s for s in srcs if any(m.lower() in s.lower() for m in MONTHS)]
    assert any(s.isupper() for s in full_months)
    assert any(s == s.lower() for s in full_months)
    assert any(s[0].isupper() and not s.isupper() for s in full_months)
    assert any("Sept " in s for s in srcs)
    assert any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", s) for s in srcs)
    assert any(re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", s) for s in srcs)


def test_addition():
    splits = GENERATORS["addition"](1234)
    for src, tgt in splits["test"][:500]:
        a, b = src.split("+")
        assert int(a) + int(b) == int(tgt) and 0 <= int(a) <= 999


# -- loaders -----------------------------------------------------------------------------
def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_tsv_normalisation(tmp_path):
    p = write(tmp_path, "a.tsv", "\ufeffGo.\tVa !\tCC-BY 2.0 (France) Attribution\r\n\r\n  \nHi. \tSalut.\n".encode())
    assert read_tsv(p) == [("Go.", "Va !"), ("Hi.", "Salut.")]


@pytest.mark.parametrize("content, message", [
    (b"a\tb\nno tab here\n", r"a\.tsv:2: expected source<TAB>target"),
    (b"a\tb\n\tb\n", r"a\.tsv:2: empty source"),
    (b"a\tb\nx\t  \n", r"a\.tsv:2: empty target"),
    (b"", r"a\.tsv: file is empty"),
    (b"\n  \n", r"a\.tsv: file is empty"),
    (b"a\tb\nc\td\n\xff\xfe\tx\n", r"a\.tsv:3: not valid UTF-8"),
])
def test_tsv_errors_name_file_and_line(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        read_tsv(write(tmp_path, "a.tsv", content))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_tsv(tmp_path / "nope.tsv")


def test_question_answer_format(tmp_path):
    p = write(tmp_path, "date.txt", b"september 27, 1994           _1994-09-27\n8/23/08                      _2008-08-23\n")
    assert read_question_answer(p) == [("september 27, 1994", "1994-09-27"), ("8/23/08", "2008-08-23")]
    assert read_pairs(p) == read_question_answer(p)
    bad = write(tmp_path, "bad.txt", b"16+75  _91\n16+75 91\n")
    with pytest.raises(DataError, match=r"bad\.txt:2: expected question_answer"):
        read_question_answer(bad)


def test_aligned_files(tmp_path):
    s = write(tmp_path, "c.en", b"Hello .\nGood night\n")
    t = write(tmp_path, "c.fr", b"Bonjour .\nBonne nuit\n")
    assert read_aligned(s, t) == [("Hello .", "Bonjour ."), ("Good night", "Bonne nuit")]
    t3 = write(tmp_path, "d.fr", b"a\nb\nc\n")
    with pytest.raises(DataError, match=r"c\.en has 2 lines but .*d\.fr has 3"):
        read_aligned(s, t3)
    e = write(tmp_path, "e.fr", b"a\n\n")
    with pytest.raises(DataError, match=r"e\.fr:2: empty target"):
        read_aligned(s, e)


# -- tokenizers ----------------------------------------------------------------------------
def test_char_tokenizer_round_trip_and_unknown(tmp_path):
    tok = CharTokenizer.build(["abc 12", "héllo"])
    assert tok.decode(tok.encode("hé 21")) == "hé 21"
    ids = tok.encode("a€b")
    assert ids[1] == 3 and tok.decode(ids) == "a<unk>b"
    assert tok.encode("") == [] and tok.decode([]) == ""
    tok.save(tmp_path, "v")
    assert load_tokenizer(tmp_path, "v").tokens == tok.tokens


def test_word_tokenizer(tmp_path):
    tok = WordTokenizer.build(["the cat sat", "the dog"], max_size=7)
    assert tok.vocab_size == 7 and tok.tokens[4] == "the"
    assert tok.decode(tok.encode("the cat")) == "the cat"
    assert tok.encode("the zebra")[1] == 3
    tok.save(tmp_path, "w")
    assert load_tokenizer(tmp_path, "w").tokens == tok.tokens


def test_bucket_jitter_mixes_nearby_lengths():
    import numpy as np

    from attnseq.data.batching import batch_order
    lengths = np.repeat(np.arange(5, 25), 64)                        # 20 lengths, 64 rows each
    rng = np.random.default_rng(0)
    pure = batch_order(lengths, 64, rng, bucket=True)
    assert all(len(set(lengths[b])) == 1 for b in pure)               # one length per batch
    mixed = batch_order(lengths, 64, rng, bucket=True, jitter=8)
    spans = [np.ptp(lengths[b]) for b in mixed]
    assert np.mean(spans) > 2 and max(spans) <= 8                    # nearby lengths, mixed
    assert sorted(np.concatenate(mixed).tolist()) == list(range(len(lengths)))
    tgt = np.arange(len(lengths)) % 7
    by_tgt = batch_order(lengths, 16, rng, bucket=True, then_by=tgt)
    no_tie = batch_order(lengths, 16, rng, bucket=True)
    assert all(np.ptp(tgt[b]) <= 2 for b in by_tgt)                  # ~9 rows per target length
    assert np.mean([np.ptp(tgt[b]) for b in no_tie]) > 4


@pytest.mark.parametrize("pad_full", [False, True])
def test_padding_fraction_counts_the_batches_take_makes(pad_full):
    """The padding share of the batches ``take`` would make (trimmed to each batch's longest row, or to
    the full width), from the lengths alone; compact (uint16) storage included."""
    import numpy as np
    from attnseq.data.batching import encode_pairs, padding_fraction, take
    pairs = [("ab", "x"), ("abcdef", "xyz"), ("a", "xyzxyzx"), ("abc", "xy"), ("abcdefgh", "x")]
    tok = CharTokenizer.build([s + t for s, t in pairs])
    data = encode_pairs(pairs, tok, tok, compact=True)
    batches = [np.array([0, 3]), np.array([1, 2, 4])]
    real = sum(int(data.src_len[i].sum() + data.tgt_len[i].sum()) for i in batches)
    total = sum(s.size + t.size for s, t in (take(data, i, pad_full) for i in batches))
    assert padding_fraction(data, batches, pad_full) == pytest.approx(1 - real / total, abs=1e-15)


# -- numbers: digits to words, tested on longer numbers -----------------------------------------------
def test_number_words():
    from attnseq.data.numbers import number_pair, number_words
    cases = {0: "zero", 7: "seven", 13: "thirteen", 20: "twenty", 45: "forty five", 100: "one hundred",
             105: "one hundred five", 1000: "one thousand", 4207: "four thousand two hundred seven",
             12019: "twelve thousand nineteen", 700070: "seven hundred thousand seventy",
             999999: "nine hundred ninety nine thousand nine hundred ninety nine"}
    for n, words in cases.items():
        assert number_words(n) == words
    assert number_pair(4207) == ("4 2 0 7", "four thousand two hundred seven")
    with pytest.raises(ValueError, match="0..999999"):
        number_words(1_000_000)


def test_numbers_test_split_is_longer_than_train_on_both_sides():
    splits = GENERATORS["numbers"](1234)
    assert [len(splits[k]) for k in ("train", "valid", "test")] == [8000, 1000, 2000]
    longest = {side: max(len(pair[side].split()) for pair in splits["train"] + splits["valid"]) for side in (0, 1)}
    assert longest == {0: 4, 1: 6}
    assert min(len(s.split()) for s, _ in splits["test"]) == 5 and min(len(t.split()) for _, t in splits["test"]) == 7
    assert {len(s.split()) for s, _ in splits["test"]} == {5, 6}
    seen = {s for s, _ in splits["train"]}
    assert not seen & {s for s, _ in splits["valid"]}
