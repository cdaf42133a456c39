"""Error analysis by category: reading extra TSV columns, metrics per category, ``attnseq eval --by``."""
import json
import re

import pytest
import sacrebleu

from attnseq.cli import main
from attnseq.data.io import read_columns
from attnseq.errors import DataError
from attnseq.run.evaluation import by_column, category_metrics, format_categories, length_bucket
from attnseq.run.inference import evaluate_file


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# -- reading columns -------------------------------------------------------------------------
def test_read_columns_returns_the_asked_columns_in_order(tmp_path):
    p = write(tmp_path, "a.tsv", "a\tA\tx\t1\n\n b \t B \t y \t2\nc\tC\tx\t3\n")
    pairs, extra = read_columns(p, [4, 3])
    assert pairs == [("a", "A"), ("b", "B"), ("c", "C")]
    assert extra == [("1", "x"), ("2", "y"), ("3", "x")]
    assert read_columns(p, []) == (pairs, [(), (), ()])


def test_read_columns_errors_name_file_line_and_column(tmp_path):
    p = write(tmp_path, "a.tsv", "a\tA\tx\nb\tB\n")
    with pytest.raises(DataError, match=r"a\.tsv:2: no column 3 \(the line has 2\)"):
        read_columns(p, [3])
    qa = write(tmp_path, "q.txt", "1+1  _2\n")
    assert read_columns(qa, [1]) == ([("1+1", "2")], [("1+1",)])
    with pytest.raises(DataError, match=r"q\.txt: question_answer lines have two columns, no column 3"):
        read_columns(qa, [3])
    with pytest.raises(ValueError, match="numbered from 1"):
        read_columns(p, [0])


# -- categories --------------------------------------------------------------------------------
@pytest.mark.parametrize("n, bucket", [(1, "1-10"), (10, "1-10"), (11, "11-20"), (20, "11-20"), (95, "91-100")])
def test_length_buckets(n, bucket):
    assert length_bucket(n) == bucket


def test_by_names():
    assert by_column("length") is None
    assert by_column("style") == 3 and by_column("one-digit") == 4 and by_column("col7") == 7
    for bad in ("col2", "col0", "colx", "Style", "col03"):
        with pytest.raises(ValueError, match=f"--by {bad}: expected length, style"):
            by_column(bad)


def test_category_metrics_by_hand():
    preds = ["a b", "c", "d e", "x", "b a"]
    refs = ["a b", "c", "d f", "y", "b a"]
    labels = ["11-20", "1-10", "11-20", "101-110", "1-10"]
    table = category_metrics(preds, refs, labels)
    assert list(table) == ["1-10", "11-20", "101-110"]                   # by length, not as text
    assert table["1-10"]["n"] == 2 and table["1-10"]["exact_match"] == 1.0
    assert table["11-20"]["exact_match"] == 0.5 and table["101-110"]["exact_match"] == 0.0
    want = sacrebleu.corpus_bleu(["a b", "d e"], [["a b", "d f"]], force=True).score
    assert table["11-20"]["bleu"] == pytest.approx(want)
    assert table["11-20"]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(["a b", "d e"], [["a b", "d f"]]).score)
    styled = category_metrics(preds, refs, ["b", "a", "b", "a", "c"], refs_norm=["a b", "c", "d e", "x", "-"])
    assert list(styled) == ["a", "b", "c"]
    assert [styled[k]["exact_match"] for k in "abc"] == [1.0, 1.0, 0.0]   # exact match against refs_norm
    text = format_categories("style", styled)
    assert text.splitlines()[0].split() == ["style", "n", "exact", "BLEU", "chrF"]
    assert text.splitlines()[3].split()[:3] == ["c", "1", "0.00%"]


# -- on a trained model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def styled_test(tiny_data, tmp_path_factory):
    """200 date pairs with their style (column 3) and one-digit fields (column 4), as the date files have."""
    from attnseq.data.datasets import date_tables
    rows = date_tables(99)["test"][:200]
    p = tmp_path_factory.mktemp("styled") / "test.tsv"
    p.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return p, rows


def test_evaluate_file_by_category_agrees_with_the_predictions(tiny_run, styled_test, tmp_path):
    path, rows = styled_test
    result = evaluate_file(str(tiny_run), str(path), output=str(tmp_path / "pred.txt"), by=("style", "length", "col4"))
    preds = (tmp_path / "pred.txt").read_text(encoding="utf-8").splitlines()
    assert list(result["by"]) == ["style", "length", "col4"]
    for name, col in (("style", 2), ("col4", 3)):
        table = result["by"][name]
        assert set(table) == {r[col] for r in rows}
        for label, m in table.items():
            idx = [k for k, r in enumerate(rows) if r[col] == label]
            assert m["n"] == len(idx)
            assert m["exact_match"] == sum(preds[k] == rows[k][1] for k in idx) / len(idx)
    lengths = result["by"]["length"]
    assert sum(m["n"] for m in lengths.values()) == result["n"] == 200
    assert sum(m["n"] * m["exact_match"] for m in lengths.values()) == pytest.approx(200 * result["exact_match"])
    assert set(lengths) == {length_bucket(len(r[0])) for r in rows}       # char tokens: one per character


def test_cli_eval_by_keeps_stdout_one_json_line(tiny_run, styled_test, capsys):
    path, rows = styled_test
    assert main(["eval", "--ckpt", str(tiny_run), "--data", str(path), "--by", "style"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    assert set(result["by"]["style"]) == {r[2] for r in rows}
    assert err.splitlines()[0].split() == ["style", "n", "exact", "BLEU", "chrF"]
    assert len(err.splitlines()) == 1 + len(result["by"]["style"])
    assert main(["eval", "--ckpt", str(tiny_run), "--data", str(path)]) == 0
    assert "by" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("by, message", [("col2", "--by col2: expected length"), ("col9", r"test\.tsv:1: no column 9")])
def test_cli_eval_by_errors_are_one_line(tiny_run, styled_test, capsys, by, message):
    path, _ = styled_test
    assert main(["eval", "--ckpt", str(tiny_run), "--data", str(path), "--by", by]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err)
