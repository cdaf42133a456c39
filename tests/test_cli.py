"""translate, plot-attention and CLI hygiene."""
import io
import json
import sys

import numpy as np
import pytest

from helpers import translate_at_prompt

from attnseq.cli import main


def test_translate_file_to_file(tiny_run, tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("Tuesday, Sept 25 1984\n\n9/25/84\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    assert main(["translate", "--ckpt", str(tiny_run), "--input", str(inp), "--output", str(out)]) == 0
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert all(len(x) <= 22 for x in lines)


def test_translate_stdin_with_unknown_characters(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("¿¿ 9/25/84 ☃\n\n  \nJan 1, 2000\n"))
    assert main(["translate", "--ckpt", str(tiny_run), "--beam", "3", "--show-attention"]) == 0
    cap = capsys.readouterr()
    out = cap.out.split("\n")
    assert len(out) == 5 and out[1] == "" and out[2] == ""
    assert "<-" in cap.err                                    # the text alignment


def test_translate_n_best(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("9/25/84\n"))
    assert main(["translate", "--ckpt", str(tiny_run), "--beam", "4", "--n-best", "3"]) == 0
    fields = capsys.readouterr().out.strip().split("\t")
    assert len(fields) == 3 and all(f.endswith(")") for f in fields)


def test_translate_truncates_overlong_input_with_warning(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("ok\n" + "9" * 500 + "\n"))
    assert main(["translate", "--ckpt", str(tiny_run), "--max-input-len", "40"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.split("\n")) == 3
    assert "input line 2: 500 tokens, truncated to --max-len 40" in cap.err


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def not_blank(path):
    import matplotlib.image
    img = matplotlib.image.imread(path)
    return img[..., :3].std() > 0.05


def test_plot_attention_one_and_grid(tiny_run, tiny_data, tmp_path):
    one = tmp_path / "one.png"
    assert main(["plot-attention", "--ckpt", str(tiny_run), "--text", "Sept 25, 1984", "--out", str(one)]) == 0
    w1, h1 = png_size(one)
    assert w1 > 300 and h1 > 300 and not_blank(one)
    grid = tmp_path / "grid.png"
    assert main(["plot-attention", "--ckpt", str(tiny_run), "--data", str(tiny_data / "test.tsv"), "--n", "6",
                 "--out", str(grid)]) == 0
    w2, h2 = png_size(grid)
    assert w2 > 2 * w1 and h2 > h1 and not_blank(grid)
    svg = tmp_path / "one.svg"
    assert main(["plot-attention", "--ckpt", str(tiny_run), "--text", "1/2/03", "--out", str(svg)]) == 0
    assert b"<svg" in svg.read_bytes()[:400]


def test_plot_attention_python_api():
    import matplotlib.pyplot as plt

    import attnseq
    w = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    fig = attnseq.plot_attention(w, ["a", "▁b", " "], ["x", "<eos>"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "·b", "␣"]
    _, ax2 = plt.subplots()
    assert attnseq.plot_attention(w, ["a", "b", "c"], ["x", "y"], ax=ax2) is ax2
    with pytest.raises(ValueError, match="does not match"):
        attnseq.plot_attention(w, ["a"], ["x", "y"])
    plt.close("all")


def test_mismatched_ckpt_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["translate", "--ckpt", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a checkpoint" in err
    assert main(["plot-attention", "--ckpt", str(tmp_path / "nope"), "--text", "x", "--out", str(tmp_path / "a.png")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--data", "date"], "--out RUN_DIR is required"),
    (["train", "--data", "date", "--train", "x.tsv", "--out", "r"], "alternatives"),
    (["train", "--data", "date", "--out", "r", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "--data", "nowhere", "--out", "{tmp}/r"], "neither a built-in dataset"),
    (["eval", "--ckpt", "{tmp}/none", "--data", "x.tsv"], "no such checkpoint"),
    (["train", "--config", "{tmp}/missing.toml", "--out", "r"], "no such file"),
])
def test_cli_errors_are_one_line_without_traceback(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and err.count("\n") == 0


def test_gpu_without_cupy_is_one_line(tmp_path, capsys):
    from attnseq.nn.backend import gpu_available
    if gpu_available():
        pytest.skip("a GPU is present")
    rc = main(["train", "--data", "date", "--out", str(tmp_path / "r"), "--device", "gpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and ("cupy" in err or "GPU" in err)


def test_scripts_call_the_cli():
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    for script in sorted((root / "scripts").glob("*.py")):
        out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage: attnseq" in out.stdout, script.name


# a tiny bench workload: a 16-unit model, 2 timed steps, 8 sentences greedy and 4 with beam 5
TINY_BENCH = ["--hidden-size", "16", "--wordvec-size", "8", "--iters", "2", "--n-greedy", "8", "--n-beam", "4"]


def test_bench_json_has_the_documented_keys(capsys):
    assert main(["bench", "--json", *TINY_BENCH]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("train_s_per_iter", "train_s_per_epoch", "train_samples_per_s", "greedy_sent_per_s",
                "beam5_sent_per_s", "peak_rss_mib", "useful_gflops", "sgemm_gflops", "efficiency", "device"):
        assert key in r and r[key], key
    assert 0 < r["efficiency"] < 2 and r["workload"].endswith("(padded)")
    assert (r["greedy_n"], r["beam5_n"]) == (8, 4)


def test_bench_decodes_the_sentences_asked_for(monkeypatch):
    """--n-greedy and --n-beam size the decoding workload (defaults: the whole date test split, and 500)."""
    import attnseq.bench
    rows = {}

    def spy(name, real):
        def decode(model, src, *args, **kw):
            rows.setdefault(name, []).append(len(src))
            return real(model, src, *args, **kw)
        return decode
    for name in ("greedy_decode", "beam_decode"):
        monkeypatch.setattr(attnseq.bench, name, spy(name, getattr(attnseq.bench, name)))
    assert main(["bench", "--json", *TINY_BENCH[:6], "--n-greedy", "5", "--n-beam", "3"]) == 0
    assert rows == {"greedy_decode": [5, 5, 5], "beam_decode": [3]}          # greedy timed 3 times, beam once
    assert {a.dest: a.default for a in _actions("bench").values() if a.dest in ("n_greedy", "n_beam")} == \
        {"n_greedy": 5000, "n_beam": 500}


def test_bench_threads_flag(capsys):
    assert main(["bench", "--json", *TINY_BENCH, "--threads", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["train_threads"] == 1
    assert main(["bench", "--json", *TINY_BENCH, "--threads", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["train_threads"] == 2      # threadpoolctl is a dependency
    assert main(["bench", "--threads", "-1"]) == 1
    assert "threads must be 0" in capsys.readouterr().err


def test_bench_table_and_gpu_without_gpu(capsys):
    from attnseq.nn.backend import gpu_available
    assert main(["bench", *TINY_BENCH, "--bucketed"]) == 0
    out = capsys.readouterr().out
    assert "efficiency" in out and "greedy decode (8 sent.)" in out and "beam-5 decode (4 sent.)" in out
    if not gpu_available():
        assert main(["bench", "--device", "gpu"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cupy" in err


def test_train_ends_with_a_heatmap(tiny_data, tmp_path, capsys):
    from conftest import TINY
    args = [a for a in TINY if a != "--no-plot"]
    assert main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), *args, "--epochs", "1"]) == 0
    png = tmp_path / "r" / "attention.png"
    assert "attention heatmap:" in capsys.readouterr().out and not_blank(png)


def test_translate_prompts_in_a_terminal(tiny_run):
    """Interactive use: a prompt on a terminal, one translation per line typed, Ctrl-D to quit."""
    returncode, out, err = translate_at_prompt(["--ckpt", str(tiny_run)], b"9/25/84\n\n")
    assert returncode == 0, err
    assert b"type a line" in err
    lines = out.decode().split("\n")
    assert len(lines) == 3 and lines[1] == "" and lines[0]


def test_plot_attention_png_has_the_figure_size(tiny_run, tmp_path):
    from attnseq.run.inference import Translator
    text = "Sept 25, 1984"
    tr = Translator(str(tiny_run)).translate([text])[0]
    out = tmp_path / "one.png"
    assert main(["plot-attention", "--ckpt", str(tiny_run), "--text", text, "--out", str(out)]) == 0
    width, height = png_size(out)
    assert width == round((0.3 * len(tr.src_tokens) + 2.2) * 120)      # figure inches x 120 dpi
    assert height == round((0.3 * len(tr.out_tokens) + 1.8) * 120)


def test_translate_empty_file_and_crlf_stdin(tiny_run, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert main(["translate", "--ckpt", str(tiny_run), "--input", str(empty)]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO("\ufeff9/25/84\r\n\r\nJan 1, 2000\r\n"))
    assert main(["translate", "--ckpt", str(tiny_run)]) == 0
    out = capsys.readouterr().out.split("\n")
    assert len(out) == 4 and out[1] == "" and "\r" not in "".join(out)


@pytest.fixture
def chain_ckpt(tmp_path):
    """A word-level checkpoint whose greedy output is "the cat sat down" for every source (test_evaluation's)."""
    from test_evaluation import WORDS, chain_model

    from attnseq.run.checkpoint import save_checkpoint
    return save_checkpoint(tmp_path / "chain", chain_model(), None, WORDS, WORDS, {}, {"epoch": 0, "step": 0})


def test_plot_attention_judges_outputs_as_eval_does(chain_ckpt, tmp_path, monkeypatch):
    """--wrong-only and the ✓/✗ titles compare each output with its reference as the tokenizer reads it
    back (inner spaces collapsed), as eval and explore do: "the  cat sat down" is right."""
    import attnseq.plotting
    titles = []
    real = attnseq.plotting.plot_attention_grid
    monkeypatch.setattr(attnseq.plotting, "plot_attention_grid",
                        lambda examples: titles.append([e["title"] for e in examples]) or real(examples))
    data = tmp_path / "pairs.tsv"
    data.write_text("a dog\tthe  cat sat down\ndog\tthe cat sat\n", encoding="utf-8")
    out = str(tmp_path / "a.png")
    assert main(["plot-attention", "--ckpt", str(chain_ckpt), "--data", str(data), "--out", out]) == 0
    assert titles.pop() == ["a dog → the cat sat down  ✓", "dog → the cat sat down  ✗ (want the cat sat)"]
    assert main(["plot-attention", "--ckpt", str(chain_ckpt), "--data", str(data), "--wrong-only",
                 "--out", out]) == 0
    assert titles.pop() == ["dog → the cat sat down  ✗ (want the cat sat)"]


def test_plot_attention_wrong_only_judges_the_search_it_plots(chain_ckpt, tmp_path, monkeypatch, capsys):
    """With --beam K, --wrong-only picks the examples by the beam's outputs (the ones it plots), and
    says so in one line when none is wrong."""
    from attnseq.run.inference import Translator
    beams, real = [], Translator.translate
    monkeypatch.setattr(Translator, "translate", lambda self, texts, beam=1, **kw:
                        beams.append(beam) or real(self, texts, beam=beam, **kw))
    data = tmp_path / "pairs.tsv"
    data.write_text("a dog\tthe cat sat down\ndog\tthe cat sat\n", encoding="utf-8")
    assert main(["plot-attention", "--ckpt", str(chain_ckpt), "--data", str(data), "--wrong-only", "--beam", "2",
                 "--out", str(tmp_path / "a.png")]) == 0
    assert beams and set(beams) == {2}
    capsys.readouterr()
    data.write_text("a dog\tthe cat sat down\n", encoding="utf-8")
    assert main(["plot-attention", "--ckpt", str(chain_ckpt), "--data", str(data), "--wrong-only",
                 "--out", str(tmp_path / "b.png")]) == 0
    assert capsys.readouterr().out == f"attnseq plot-attention: every example in {data} is right; nothing to plot\n"
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("argv, flag", [
    (["eval", "--ckpt", "r", "--data", "x.tsv", "--batch-size", "0"], "--batch-size"),
    (["explore", "--ckpt", "r", "--data", "x.tsv", "--out", "p.html", "--batch-size", "-2"], "--batch-size"),
    (["explore", "--ckpt", "r", "--data", "x.tsv", "--out", "p.html", "--n", "-1"], "--n"),
    (["translate", "--ckpt", "r", "--batch-size", "0"], "--batch-size"),
    (["translate", "--ckpt", "r", "--max-input-len", "-3"], "--max-input-len"),
    (["translate", "--ckpt", "r", "--beam", "0"], "--beam"),
    (["translate", "--ckpt", "r", "--n-best", "two"], "--n-best"),
    (["plot-attention", "--ckpt", "r", "--data", "x.tsv", "--n", "0", "--out", "a.png"], "--n"),
    (["average", "r", "--last", "0", "--out", "avg"], "--last"),
    (["bench", "--iters", "0"], "--iters"),
    (["bench", "--n-greedy", "0"], "--n-greedy"),
])
def test_counts_outside_train_are_usage_errors_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"error: argument {flag}: must be " in err and "integer, got" in err


def test_translate_at_the_prompt_refuses_output(tiny_run, tmp_path, monkeypatch, capsys):
    """--output is for --input or piped stdin: at a terminal prompt the translations are printed, so asking
    for a file there is a usage error, not a file silently left unwritten."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Terminal("9/25/84\n"))
    out = tmp_path / "out.txt"
    with pytest.raises(SystemExit) as e:
        main(["translate", "--ckpt", str(tiny_run), "--output", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--output FILE is for lines read from --input" in err
    assert not out.exists()
    inp = tmp_path / "in.txt"
    inp.write_text("9/25/84\n", encoding="utf-8")
    assert main(["translate", "--ckpt", str(tiny_run), "--input", str(inp), "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8").count("\n") == 1


def _actions(command) -> dict:
    """The argparse actions of ``attnseq COMMAND``, by destination."""
    import argparse

    from attnseq.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[command]._actions}


@pytest.mark.parametrize("group, commands", [
    ("DECODING", ("translate", "explore", "plot-attention")),
    ("OUTPUT_LENGTH", ("eval", "explore", "translate", "plot-attention", "export")),
    ("BATCHING", ("eval", "explore", "translate")),
    ("DEVICE", ("eval", "explore", "translate", "plot-attention", "bench", "score")),
    ("ENSEMBLE", ("translate", "explore", "score")),
])
def test_each_shared_flag_group_is_declared_once(group, commands):
    """Every command taking a group gets its flags as the group declares them: same type, default, metavar,
    and help (a command may only add a note after it); none declares its own copy under a drifting text."""
    from attnseq import cli_flags
    for flag in getattr(cli_flags, group):
        for command in commands:
            a = _actions(command)[flag.dest]
            assert flag.names[0] in a.option_strings, (command, flag.names)
            assert (a.type, a.metavar) == (flag.spec.get("type"), flag.spec.get("metavar")), (command, flag.names)
            if command != "bench":                           # bench's --batch-size is its training batch
                assert a.default == flag.spec.get("default") and a.help.startswith(flag.spec["help"]), command


def test_decoding_flags_reach_the_library_calls():
    """decoding_options gives each decoding command's flags as keywords that Translator.translate and
    explore_file take: a new row in cli_flags.DECODING is parsed and passed on by every decoding command."""
    import inspect

    from attnseq.cli import build_parser
    from attnseq.cli_flags import DECODING, decoding_options
    from attnseq.explorer import explore_file
    from attnseq.run.inference import TranslatorBase
    parser = build_parser()
    for argv, call in ((["translate", "--ckpt", "r"], TranslatorBase.translate),
                       (["explore", "--ckpt", "r", "--data", "d", "--out", "p.html"], explore_file),
                       (["plot-attention", "--ckpt", "r", "--out", "a.png"], TranslatorBase.translate)):
        options = decoding_options(parser.parse_args([*argv, "--beam", "3", "--alpha", "0.5"]))
        assert {f.param for f in DECODING} <= set(options) and (options["beam"], options["alpha"]) == (3, 0.5)
        assert options["max_len"] is None
        inspect.signature(call).bind(None, [], **options)              # TypeError for a keyword it does not take
    options = decoding_options(parser.parse_args(["eval", "--ckpt", "r", "--data", "d", "--batch-size", "7"]))
    assert options == {"batch_size": 7, "max_len": None}


def test_plot_attention_searches_with_the_decoding_flags(chain_ckpt, tmp_path, monkeypatch):
    from attnseq.run.inference import Translator
    seen, real = [], Translator.translate
    monkeypatch.setattr(Translator, "translate", lambda self, texts, **kw: seen.append(kw) or real(self, texts, **kw))
    assert main(["plot-attention", "--ckpt", str(chain_ckpt), "--text", "a dog", "--beam", "2", "--alpha", "0.6",
                 "--max-output-len", "7", "--out", str(tmp_path / "a.png")]) == 0
    assert [(kw["beam"], kw["alpha"], kw["max_len"].scale, kw["max_len"].offset) for kw in seen] == [(2, 0.6, 0, 7)]
