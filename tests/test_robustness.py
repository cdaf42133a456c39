"""Robustness: kills mid-run, a full disk, hostile checkpoints, fuzzed inputs, numerical faults."""
import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnseq.run.checkpoint import load_checkpoint
from attnseq.cli import main
from attnseq.errors import CheckpointError, DataError, NonFiniteError
from attnseq.data.io import read_aligned, read_pairs, read_question_answer, read_tsv
from attnseq.data.tokenizers import CharTokenizer, SentencePieceTokenizer, WordTokenizer
from attnseq.run.config import resolve_config
from attnseq.run.training import Trainer

# checkpoints at epoch ends only (mid-epoch ones: tests/test_long_runs.py)
KILL_ARGS = ["--tokenizer", "char", "--epochs", "12", "--hidden-size", "16", "--wordvec-size", "8",
             "--batch-size", "64", "--lr", "0.01", "--dropout", "0.1", "--no-plot", "--examples", "0", "--patience", "9",
             "--save-every", "0"]
TIMING = ("epoch_time_s", "samples_per_s", "elapsed_s")


def _train_proc(data, out, kill_at=None, timeout=120):
    env = dict(os.environ, ATTNSEQ_KILL_AT=kill_at or "")
    cmd = [sys.executable, "-m", "attnseq.cli", "train", "--data", str(data), "--out", str(out), *KILL_ARGS, "--resume"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _check_loads_or_absent(run):
    for name in ("best", "last"):
        if (run / name).exists():
            ck = load_checkpoint(run / name, with_optimizer=True)
            assert ck.state["epoch"] >= 1


def _metrics(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_sigkill_at_many_points_then_resume_matches_uninterrupted(tiny_data, tmp_path):
    ref = tmp_path / "ref"
    p = _train_proc(tiny_data, ref)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()

    run = tmp_path / "killed"
    schedule = ["train-step:5", None, "save-weights-written:1", "train-step:30", "swap-between-renames:1", None,
                "between-best-and-last:1", "swap-between-renames:2", "save-weights-written:2"]
    rng = random.Random(0)
    kills, outcomes = 0, []
    for point in schedule:
        p = _train_proc(tiny_data, run, point)
        if point is None:                               # a kill at a random moment
            time.sleep(rng.uniform(0.2, 0.9))
            p.send_signal(signal.SIGKILL)
        rc = p.wait(timeout=300)
        err = p.stderr.read().decode()
        assert rc in (0, -signal.SIGKILL), err
        kills += rc == -signal.SIGKILL
        outcomes.append((point, rc))
        _check_loads_or_absent(run)
    p = _train_proc(tiny_data, run)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert kills >= 5, outcomes
    print(f"\nkill test: {kills} of {len(schedule)} kills landed: {outcomes}")
    assert _metrics(run) == _metrics(ref)
    for name in ("best", "last"):
        a, b = np.load(ref / name / "weights.npz"), np.load(run / name / "weights.npz")
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}/{k}")
    final = [{k: v for k, v in json.loads((r / "result.json").read_text())["test"].items() if k != "eval_s"}
             for r in (run, ref)]
    assert final[0] == final[1]
    assert not list(run.glob(".*tmp*")) and not list(run.glob("*.old"))


def test_full_disk_at_save_keeps_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "full"
    cfg = resolve_config(dict(data=str(tiny_data), out=str(out), epochs=2, hidden_size=16, wordvec_size=8,
                              batch_size=64, tokenizer="char", examples=0))
    trainer = Trainer(cfg, log=lambda *a: None)
    import attnseq.run.checkpoint as ckmod
    real = ckmod.atomic_write_bytes
    calls = {"n": 0}

    def flaky(path, data):
        calls["n"] += 1
        if trainer.epoch >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckmod, "atomic_write_bytes", flaky)
    with pytest.raises(CheckpointError, match="No space left on device. The previous checkpoint is intact"):
        trainer.run()
    ck = load_checkpoint(out / "last")
    assert ck.state["epoch"] == 1
    assert not list(out.glob(".*tmp*"))


def test_unwritable_out_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--data", "date", "--out", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert "cannot write there" in err and err.count("\n") == 1


@pytest.mark.parametrize("name", ["weights.npz", "optimizer.npz"])
def test_loading_never_unpickles(tiny_run, tmp_path, monkeypatch, name):
    """An .npz holding an object array, which np.load(allow_pickle=True) would unpickle, is refused in one
    line, and pickle is never called (nor for a checkpoint as written)."""
    unpickled = []

    def spy(real):
        return lambda *a, **k: unpickled.append(real.__name__) or real(*a, **k)
    monkeypatch.setattr(pickle, "load", spy(pickle.load))
    monkeypatch.setattr(pickle, "loads", spy(pickle.loads))
    load_checkpoint(tiny_run, with_optimizer=True)
    assert unpickled == []
    ck = tmp_path / "ck"
    shutil.copytree(tiny_run / "best", ck)
    arrays = dict(np.load(ck / name))
    first = next(iter(arrays))
    arrays[first] = np.array([{"payload": 1}, None], dtype=object)
    np.savez(ck / name, **arrays)                                   # pickled into the file
    with np.load(ck / name, allow_pickle=True) as z:                # allowed, loading it does unpickle
        assert z[first][0] == {"payload": 1} and unpickled == ["load"]
    unpickled.clear()
    with pytest.raises(CheckpointError, match=f"{name}: holds an object array, which would need unpickling; refused"):
        load_checkpoint(ck, with_optimizer=True)
    assert unpickled == []


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"decoder.out.W": a["decoder.out.W"].astype(np.float64)}), "has dtype float64"),
    (lambda a: a.update({"decoder.out.Wrong": a.pop("decoder.out.W")}), "array names do not match"),
    (lambda a: a.update({"decoder.out.b": np.full_like(a["decoder.out.b"], np.nan)}), "NaN or inf"),
])
def test_hostile_weights_are_refused(tiny_run, tmp_path, change, message):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_run / "best", ck)
    arrays = dict(np.load(ck / "weights.npz"))
    change(arrays)
    np.savez(ck / "weights.npz", **arrays)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ck)


@pytest.mark.parametrize("clip", [5.0, 0.0])
def test_nan_gradient_is_caught(tiny_data, tmp_path, monkeypatch, clip):
    cfg = resolve_config(dict(data=str(tiny_data), out=str(tmp_path / "g"), epochs=1, hidden_size=16,
                              wordvec_size=8, batch_size=64, tokenizer="char", examples=0, clip=clip))
    trainer = Trainer(cfg, log=lambda *a: None)
    real = trainer.runner.backward                                  # the model, or its data-parallel wrapper

    def poisoned(*a):
        real(*a)
        if trainer.step == 3:
            trainer.model.decoder.lstm.grads[1][0, 0] = np.nan
    monkeypatch.setattr(trainer.runner, "backward", poisoned)
    with pytest.raises(NonFiniteError, match="step 3 .* gradient norm is nan"):
        trainer.run()
    assert not (tmp_path / "g" / "last").exists()


# -- fuzzing the loaders ------------------------------------------------------------------------
FIELD = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
LINE = st.one_of(
    st.tuples(FIELD, FIELD).map(lambda p: f"{p[0]}\t{p[1]}"),
    st.tuples(FIELD, FIELD, FIELD).map(lambda p: "\t".join(p)),
    FIELD, st.just(""), st.just("   "), st.just("\t"),
    st.integers(1000, 12000).map(lambda n: "x" * n + "\t" + "y" * 7),
)
ENDING = st.sampled_from(["\n", "\r\n", "\r"])
ENCODING = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"])
FUZZ = {"files": 0}


def _file_bytes(lines, ending, encoding):
    text = ending.join(lines)
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _check_loader(fn, path, *args):
    FUZZ["files"] += 1
    try:
        pairs = fn(path, *args)
    except DataError as e:
        assert path.name in str(e)
        assert ":" in str(e)
        return
    for s, t in pairs:
        assert isinstance(s, str) and isinstance(t, str) and s == s.strip() and s and t == t.strip() and t
        assert "\n" not in s + t and "\r" not in s + t


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=12), ENDING, ENCODING, st.booleans())
def test_fuzz_text_loaders(tmp_path, lines, ending, encoding, bom):
    data = _file_bytes(lines, ending, encoding)
    path = tmp_path / "f.tsv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    for fn in (read_tsv, read_question_answer, read_pairs):
        _check_loader(fn, path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(tmp_path, data):
    path = tmp_path / "b.tsv"
    path.write_bytes(data)
    for fn in (read_tsv, read_question_answer, read_pairs):
        _check_loader(fn, path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=8), st.lists(LINE, max_size=8))
def test_fuzz_aligned_files(tmp_path, a, b):
    pa, pb = tmp_path / "x.en", tmp_path / "x.fr"
    pa.write_text("\n".join(a), encoding="utf-8")
    pb.write_text("\n".join(b), encoding="utf-8")
    FUZZ["files"] += 1
    try:
        pairs = read_aligned(pa, pb)
    except DataError as e:
        assert "x.en" in str(e) or "x.fr" in str(e)
        return
    assert all(s and t for s, t in pairs)


# -- fuzzing tokenizers and translate -------------------------------------------------------------
HOSTILE = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.text(st.sampled_from("e\u0301\u0308\u200d👩‍👩‍👧🎉\x00\x07\x1b\u202e\ufeff한글 \t"), max_size=40),
    st.integers(9000, 10000).map(lambda n: "9" * n),
)


@pytest.fixture(scope="module")
def tokenizers():
    texts = ["Tuesday, Sept 25 1984", "the cat sat", "고양이는 먹어요."] * 30
    return [CharTokenizer.build(texts), WordTokenizer.build(texts), SentencePieceTokenizer.train(texts, vocab_size=40)]


@settings(max_examples=200, deadline=None)
@given(HOSTILE)
def test_fuzz_tokenizers(tokenizers, text):
    for tok in tokenizers:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert isinstance(tok.decode(ids), str)
        assert len(tok.pieces(ids)) == len(ids)


@pytest.fixture(scope="module")
def translator(tiny_run):
    from attnseq.run.inference import Translator
    return Translator(str(tiny_run), max_input_len=64)


@settings(max_examples=60, deadline=None)
@given(st.lists(HOSTILE, min_size=1, max_size=5))
def test_fuzz_translate(translator, texts):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = translator.translate(texts, beam=2, first_line=1)
    assert len(out) == len(texts)
    for text, tr in zip(texts, out):
        assert len(tr.src_tokens) <= 64                     # memory stays bounded
        assert tr.weights.shape == (len(tr.out_tokens), len(tr.src_tokens))
        if not text.strip():
            assert tr.text == ""
    long_lines = [k + 1 for k, t in enumerate(texts) if len(t) > 64]
    for k in long_lines:
        assert any(f"line {k}:" in str(w.message) for w in caught)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CheckpointError):
        main(["--debug", "eval", "--ckpt", str(tmp_path / "none"), "--data", "x.tsv"])


def test_missing_data_file_is_one_line(tmp_path, capsys):
    assert main(["train", "--train", str(tmp_path / "no.tsv"), "--valid", str(tmp_path / "no.tsv"),
                 "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "no.tsv: no such file" in err and err.count("\n") == 1


def test_conflicting_options(tmp_path, capsys):
    assert main(["train", "--train", "a", "--source-lang", "en", "--out", str(tmp_path / "r")]) == 1
    assert "need both --source-lang and --target-lang" in capsys.readouterr().err
