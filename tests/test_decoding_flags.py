"""The decoding flags of translate, explore and plot-attention (issue 23): every bad value is a usage error
in one line naming the flag, before any model loads; good ones reach the library as its keywords."""
import numpy as np
import pytest

from golden_decoding import case_checkpoint, sources

from attnseq.cli import main
from attnseq.explorer import read_embedded
from attnseq.run.inference import Translator

COMMANDS = {"translate": ["translate", "--ckpt", "r"],
            "explore": ["explore", "--ckpt", "r", "--data", "d.tsv", "--out", "p.html"],
            "plot-attention": ["plot-attention", "--ckpt", "r", "--text", "x", "--out", "a.png"]}
BAD = [
    (["--sample", "--temperature", "-1"], "argument --temperature: must be a number > 0, got '-1'"),
    (["--sample", "--temperature", "0"], "argument --temperature: must be a number > 0, got '0'"),
    (["--sample", "--top-p", "0"], "argument --top-p: must be a number in (0, 1], got '0'"),
    (["--sample", "--top-p", "1.5"], "argument --top-p: must be a number in (0, 1], got '1.5'"),
    (["--sample", "--top-p", "nan"], "argument --top-p: must be a number in (0, 1], got 'nan'"),
    (["--sample", "--top-k", "-1"], "argument --top-k: must be 0 or a positive integer, got '-1'"),
    (["--sample", "--seed", "-3"], "argument --seed: must be 0 or a positive integer, got '-3'"),
    (["--min-output-len", "-1"], "argument --min-output-len: must be 0 or a positive integer, got '-1'"),
    (["--no-repeat-ngram", "two"], "argument --no-repeat-ngram: must be 0 or a positive integer, got 'two'"),
    (["--repetition-penalty", "0"], "argument --repetition-penalty: must be a number > 0, got '0'"),
    (["--repetition-penalty", "inf"], "argument --repetition-penalty: must be a number > 0, got 'inf'"),
    (["--alpha", "-0.5"], "argument --alpha: must be a number from 0 to 10, got '-0.5'"),
    (["--alpha", "1e300"], "argument --alpha: must be a number from 0 to 10, got '1e300'"),
    (["--temperature", "0.5"], "--temperature is for --sample (add --sample, or leave --temperature out)"),
    (["--top-k", "5"], "--top-k is for --sample"),
    (["--top-p", "0.9"], "--top-p is for --sample"),
    (["--seed", "1"], "--seed is for --sample"),
    (["--sample", "--beam", "3"], "--sample draws each token and does not go with --beam 3"),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("extra, message", BAD)
def test_bad_decoding_values_are_one_line_naming_the_flag(command, extra, message, capsys):
    with pytest.raises(SystemExit) as e:
        main([*COMMANDS[command], *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return case_checkpoint("toy-general", tmp_path_factory.mktemp("flags"))


def test_cli_sampling_and_guards_are_the_librarys(ckpt, tmp_path, capsys):
    texts = sources("toy-general")
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tr = Translator(str(ckpt))
    for flags, kw in ((["--sample", "--seed", "3", "--n-best", "2", "--top-p", "0.9", "--temperature", "0.8"],
                       dict(sample=True, seed=np.random.default_rng(3), n_best=2, top_p=0.9, temperature=0.8)),
                      (["--beam", "3", "--no-repeat-ngram", "2", "--min-output-len", "2", "--repetition-penalty", "1.5"],
                       dict(beam=3, no_repeat_ngram=2, min_output_len=2, repetition_penalty=1.5))):
        assert main(["translate", "--ckpt", str(ckpt), "--input", str(tmp_path / "in.txt"), *flags]) == 0
        lines = capsys.readouterr().out.splitlines()
        want = tr.translate(texts, **kw)
        if kw.get("n_best", 1) > 1:
            assert lines == ["\t".join(f"{text} ({s:.3f})" for text, s in t.nbest) for t in want]
        else:
            assert lines == [t.text for t in want]
        assert lines != [t.text for t in tr.translate(texts)]


def test_cli_explore_samples(ckpt, tmp_path, capsys):
    data = tmp_path / "d.tsv"
    from golden_decoding import ROOT
    data.write_bytes((ROOT / "data" / "toy-en-ko" / "test.tsv").read_bytes()[:3000])
    out = tmp_path / "p.html"
    assert main(["explore", "--ckpt", str(ckpt), "--data", str(data), "--n", "6", "--sample", "--seed", "1",
                 "--n-best", "3", "--out", str(out)]) == 0
    page = read_embedded(out.read_text(encoding="utf-8"))
    assert page["search"] == "sample" and "sampling" in page["meta"]
    assert all(len(ex["hyps"]) == 3 for ex in page["examples"])
    scores = [[h["score"] for h in ex["hyps"]] for ex in page["examples"]]
    assert all(s == sorted(s, reverse=True) for s in scores)
