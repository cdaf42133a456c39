"""The word tokenizer end to end: train through the CLI, save, load, translate and evaluate held-out pairs."""
import itertools
import json
import random

from attnseq.cli import main
from attnseq.data.tokenizers import SPECIALS
from attnseq.run.inference import evaluate_file
from conftest import TINY

WORDS = ["red", "green", "blue", "cat", "dog", "fish", "runs", "sleeps", "big", "small"]


def reverse_words(s: str) -> str:
    return " ".join(s.split()[::-1])


def write_reversal_task(d):
    """Every 3-word sentence over WORDS (1000), shuffled and split 600 / 100 / 300: test pairs are unseen."""
    sentences = [" ".join(ws) for ws in itertools.product(WORDS, repeat=3)]
    random.Random(0).shuffle(sentences)
    splits = {"train": sentences[:600], "valid": sentences[600:700], "test": sentences[700:]}
    for name, rows in splits.items():
        (d / f"{name}.tsv").write_text("".join(f"{s}\t{reverse_words(s)}\n" for s in rows), encoding="utf-8")
    return splits


def test_word_level_model_learns_to_reverse_unseen_sentences(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    splits = write_reversal_task(data)
    run = tmp_path / "run"
    # TINY's options, but word-level (the later flag wins) and long enough to learn the task
    assert main(["train", "--data", str(data), "--out", str(run), *TINY, "--tokenizer", "word",
                 "--epochs", "10", "--batch-size", "32", "--wordvec-size", "16"]) == 0

    for name in ("src_vocab", "tgt_vocab"):
        vocab = json.loads((run / "best" / f"{name}.json").read_text(encoding="utf-8"))
        assert vocab["kind"] == "word", vocab
        assert vocab["tokens"][:4] == SPECIALS and sorted(vocab["tokens"][4:]) == sorted(WORDS), vocab

    held_out = splits["test"][:100]
    (tmp_path / "in.txt").write_text("".join(s + "\n" for s in held_out), encoding="utf-8")
    capsys.readouterr()
    assert main(["translate", "--ckpt", str(run), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.txt")]) == 0
    outputs = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert len(outputs) == len(held_out)
    right = sum(o == reverse_words(s) for o, s in zip(outputs, held_out)) / len(held_out)
    assert right >= 0.9, (right, list(zip(held_out, outputs))[:5])        # chance: about 1 in 1000

    result = evaluate_file(str(run), str(data / "test.tsv"))
    assert result["n"] == 300
    assert result["exact_match"] >= 0.9 and result["token_accuracy"] >= 0.95, result
    assert result["chrf"] > 90, result          # (BLEU needs 4-grams: 3-word outputs score 0 even when right)
