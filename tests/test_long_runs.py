"""Long runs: mid-epoch checkpoints with exact resume (--save-every), a graceful stop on SIGINT/SIGTERM,
and a full disk at a mid-epoch save. (One trainer per run directory: tests/test_lock.py.)"""
import errno
import json
import os
import random
import re
import shlex
import signal
import threading
import time

import numpy as np
import pytest
from helpers import assert_same_checkpoints, finish, run_metrics, start_cli

import attnseq.run.checkpoint as ckmod
from attnseq.cli import main
from attnseq.errors import CheckpointError
from attnseq.run import training
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.config import resolve_config, save_interval
from attnseq import TrainingStopped
from attnseq.run.stopping import StopSignals
from attnseq.run.training import Trainer, train

# 6 epochs of 24 steps, with dropout and learning-rate decay; threads: the default (2 on a 2-core machine)
ARGS = ["--tokenizer", "char", "--epochs", "6", "--hidden-size", "16", "--wordvec-size", "8", "--batch-size", "64",
        "--lr", "0.01", "--lr-decay", "0.8", "--dropout", "0.1", "--no-plot", "--examples", "0", "--patience", "9"]
STEPS_PER_EPOCH = 24                    # 1500 pairs in batches of 64
RESUMED = re.compile(r"resumed .* at epoch (\d+), step (\d+)(?:, batch (\d+) of epoch \d+)?")


def _cmd(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), *ARGS, *extra]


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run (no mid-epoch saves) every interrupted one must equal."""
    out = tmp_path_factory.mktemp("long") / "ref"
    rc, _, err = finish(start_cli(_cmd(tiny_data, out, "--save-every", "0")))
    assert rc == 0, err
    return out


def assert_same_run(run, ref):
    """Deterministic metrics, weights and optimizer slots bit for bit, RNG states and test result all equal."""
    assert_same_checkpoints(run, ref)
    for name in ("best", "last"):
        states = [json.loads((r / name / "state.json").read_text()) for r in (run, ref)]
        for st in states:
            st.pop("budget")                                        # seconds used: timing, like metrics' TIMING
        assert states[0] == states[1]
    results = [{k: v for k, v in json.loads((r / "result.json").read_text())["test"].items() if k != "eval_s"}
               for r in (run, ref)]
    assert results[0] == results[1]
    assert not list(run.glob(".*tmp*")) and not list(run.glob("*.old")) and not (run / ".lock").exists()


def _check_loadable(run):
    for name in ("best", "last"):
        if (run / name).exists() or (run / f"{name}.old").exists():
            load_checkpoint(run, prefer=name, with_optimizer=True)


# -- mid-epoch checkpoints ------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_inside_epochs_then_resume_matches_uninterrupted(tiny_data, tmp_path, reference):
    """--save-every 7: SIGKILLs at random steps, inside mid-epoch saves and at random moments; each
    resume continues from the step last/ holds, and the run ends exactly as the uninterrupted one."""
    rng = random.Random(17)
    schedule = [f"train-step:{rng.randint(8, 20)}", "save-weights-written:2", None, "mid-epoch-saved:2",
                "swap-between-renames:2", f"train-step:{rng.randint(8, 20)}", None, "between-best-and-last:1",
                f"train-step:{rng.randint(8, 20)}"]
    run, kills, mid_epoch_resumes, log = tmp_path / "killed", 0, 0, []
    for point in schedule + ["end"]:
        p = start_cli(_cmd(tiny_data, run, "--save-every", "7", "--resume"), point if point not in (None, "end") else "")
        if point is None:                                   # a kill at a random moment
            time.sleep(rng.uniform(0.5, 1.2))
            p.send_signal(signal.SIGKILL)
        rc, out, err = finish(p)
        resumed = RESUMED.search(out)
        if resumed and resumed[3] is not None and int(resumed[3]) > 0:
            mid_epoch_resumes += 1
        log.append((point, rc, resumed[0] if resumed else None))
        if point == "end":
            assert rc == 0, err
        else:
            assert rc in (0, -signal.SIGKILL), err
            kills += rc == -signal.SIGKILL
            _check_loadable(run)
    print("\n" + "\n".join(map(str, log)))
    assert kills >= 6, log
    assert mid_epoch_resumes >= 5, log                     # the kills landed inside epochs, resumed there
    assert_same_run(run, reference)


def test_mid_epoch_checkpoint_holds_the_position(tiny_data, tmp_path):
    """A save every 5 steps: last/ says how far into which epoch it is; best/ changes at epoch ends only."""
    out = tmp_path / "pos"
    cfg = resolve_config(dict(data=str(tiny_data), out=str(out), epochs=2, hidden_size=16, wordvec_size=8,
                              batch_size=64, tokenizer="char", examples=0, save_every="5"))
    trainer = Trainer(cfg, log=lambda *a: None)
    seen = []
    real = trainer.run_dir.save

    def spy(*a, progress=None, **k):
        real(*a, progress=progress, **k)
        st = json.loads((out / "last" / "state.json").read_text())
        seen.append((st["step"], st["epoch"], st.get("in_epoch", {}).get("batches_done"), k["best"]))
    trainer.run_dir.save = spy
    trainer.run()
    mid = [(5 * k, k * 5 // STEPS_PER_EPOCH, k * 5 % STEPS_PER_EPOCH, False)
           for k in range(1, 10) if k * 5 % STEPS_PER_EPOCH]
    ends = [(24, 1, None, True), (48, 2, None, seen[-1][3])]
    assert sorted(seen) == sorted(mid + ends)


# -- graceful stop ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig, point, where", [
    (signal.SIGINT, "train-step:30", "in epoch 2 at step 30"),
    (signal.SIGTERM, "train-step:50", "in epoch 3 at step 50"),
    (signal.SIGTERM, "between-best-and-last:1", f"after epoch 1 \\(step {STEPS_PER_EPOCH}\\)"),
])
def test_signal_stops_after_the_step_and_resumes_identically(tiny_data, tmp_path, reference, sig, point, where):
    """The run pauses at a known point (SIGSTOP), gets the signal, goes on (SIGCONT): it finishes the
    step, saves last/, prints one line and exits 128 + the signal; the printed resume command ends the
    run exactly as the uninterrupted one."""
    run = tmp_path / "stopped"
    p = start_cli(_cmd(tiny_data, run, "--save-every", "0"), f"{point}:STOP")
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    p.send_signal(sig)
    p.send_signal(signal.SIGCONT)
    rc, _, err = finish(p)
    assert rc == 128 + sig, err
    m = re.fullmatch(rf"attnseq train: stopped {where}; checkpoint in {re.escape(str(run))}/last — "
                     r"resume with: (attnseq train --out \S+ --resume)\n", err)
    assert m, err
    assert not (run / ".lock").exists()
    resume = shlex.split(m[1])
    rc, out, err = finish(start_cli([*resume[1:], "--no-plot"]))
    assert rc == 0, err
    assert_same_run(run, reference)


@pytest.mark.slow
def test_second_ctrl_c_stops_at_once_and_keeps_the_previous_checkpoint(tiny_data, tmp_path, reference):
    """Ctrl-C at step 30, a second one inside the save it starts (the third weights write, after
    epoch 1's best/ and last/): KeyboardInterrupt, exit 130, last/ still epoch 1's, nothing half-written."""
    run = tmp_path / "twice"
    rc, _, err = finish(start_cli(_cmd(tiny_data, run, "--save-every", "0"),
                                "train-step:30:INT,save-weights-written:3:INT"))
    assert rc == 130 and err == "attnseq: interrupted\n", err
    state = load_checkpoint(run / "last", with_optimizer=True).state
    assert state["epoch"] == 1 and state["step"] == STEPS_PER_EPOCH and "in_epoch" not in state
    assert not list(run.glob(".*tmp*")) and not (run / ".lock").exists()
    rc, _, err = finish(start_cli(_cmd(tiny_data, run, "--resume")))
    assert rc == 0, err
    assert_same_run(run, reference)


def test_stop_in_process_raises_and_restores_the_handlers(tiny_data, tmp_path, monkeypatch):
    """A library caller's own SIGINT/SIGTERM handlers are back after train(); meanwhile the trainer's
    handler only sets a flag, which stops the run after the current step with TrainingStopped."""
    def mine(signum, frame):
        raise AssertionError("the caller's handler ran during training")
    previous = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        during = []
        real_point = training.faults.point

        def at(name):
            real_point(name)
            if name == "train-step":
                during.append(signal.getsignal(signal.SIGTERM))
                if len(during) == 7:
                    during[-1].__self__._handle(signal.SIGTERM, None)     # what a SIGTERM does
        monkeypatch.setattr(training.faults, "point", at)
        cfg = dict(data=str(tiny_data), out=str(tmp_path / "lib"), epochs=2, hidden_size=16, wordvec_size=8,
                   batch_size=64, tokenizer="char", examples=0, save_every="0")
        with pytest.raises(TrainingStopped, match=r"stopped in epoch 1 at step 7; checkpoint in") as e:
            train(cfg, log=lambda *a: None)
        assert e.value.exit_code == 143
        assert all(isinstance(h.__self__, StopSignals) for h in during)
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
        assert load_checkpoint(tmp_path / "lib" / "last").state["in_epoch"]["batches_done"] == 7
        assert not (tmp_path / "lib" / ".lock").exists()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def test_second_signal_raises_keyboard_interrupt():
    stop = StopSignals()
    stop._handle(signal.SIGINT, None)
    assert stop.signum == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGTERM, None)


def test_train_outside_the_main_thread_installs_no_handlers(tiny_data, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    errors = []

    def work():
        try:
            train(dict(data=str(tiny_data), out=str(tmp_path / "t"), epochs=1, hidden_size=16, wordvec_size=8,
                       batch_size=64, tokenizer="char", examples=0), log=lambda *a: None)
        except BaseException as e:              # noqa: BLE001 - reported below
            errors.append(e)
    t = threading.Thread(target=work)
    t.start()
    t.join(120)
    assert not errors and signal.getsignal(signal.SIGINT) is before
    assert (tmp_path / "t" / "result.json").exists()


# -- a full disk at a mid-epoch save ------------------------------------------------------------------
def test_full_disk_at_a_mid_epoch_save_keeps_the_previous_checkpoint(tiny_data, tmp_path, monkeypatch, reference):
    out = tmp_path / "full"
    cfg = resolve_config(dict(data=str(tiny_data), out=str(out), epochs=1, hidden_size=16, wordvec_size=8,
                              batch_size=64, tokenizer="char", examples=0, save_every="5"))
    trainer = Trainer(cfg, log=lambda *a: None)
    real = ckmod.atomic_write_bytes

    def full(path, data):
        if trainer.step >= 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)
    monkeypatch.setattr(ckmod, "atomic_write_bytes", full)
    with pytest.raises(CheckpointError, match=r"could not save a checkpoint in .*: No space left on device. "
                                              r"The previous checkpoint is intact"):
        trainer.run()
    ck = load_checkpoint(out / "last", with_optimizer=True)
    assert ck.state["step"] == 10 and ck.state["in_epoch"]["batches_done"] == 10
    assert not list(out.glob(".*tmp*")) and not (out / ".lock").exists()
    monkeypatch.setattr(ckmod, "atomic_write_bytes", real)          # space again: the run resumes from step 10
    logs = []
    train(dict(out=str(out), resume=True), log=logs.append)
    assert any("at epoch 0, step 10, batch 10 of epoch 1" in line for line in logs)


def test_a_changed_batch_order_restarts_the_epoch_with_a_note(tiny_data, tmp_path):
    """Resuming a mid-epoch checkpoint with another --batch-size: the batches done no longer name the
    same pairs, so the epoch starts over (said in a note) and ends with all its batches counted."""
    out = tmp_path / "rebatch"
    cfg = dict(data=str(tiny_data), out=str(out), epochs=1, hidden_size=16, wordvec_size=8, batch_size=64,
               tokenizer="char", examples=0, save_every="10")
    trainer = Trainer(resolve_config(cfg), log=lambda *a: None)
    real = trainer.runner.forward

    def forward(*a):
        if trainer.step == 12:
            trainer.stop._handle(signal.SIGINT, None)
        return real(*a)
    trainer.runner.forward = forward
    with pytest.raises(TrainingStopped, match="in epoch 1 at step 13"):
        trainer.run()
    logs = []
    train(dict(out=str(out), resume=True, batch_size=32), log=logs.append)
    assert any("note: --batch-size, --bucket or --bucket-jitter changed since the checkpoint, 13 batches into "
               "epoch 1; that epoch starts over" in line for line in logs), logs
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["step"] == 13 + 1500 // 32 + 1                       # 13 of 64, then all 47 batches of 32


# -- the option ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [("2000", ("steps", 2000)), ("10m", ("seconds", 600.0)),
                                        ("30s", ("seconds", 30.0)), ("1.5h", ("seconds", 5400.0)),
                                        ("0", None), ("off", None)])
def test_save_every_values(text, want):
    assert save_interval(text) == want


def test_a_bad_save_every_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", "date", "--out", str(tmp_path / "r"), "--save-every", "10x"]) == 1
    err = capsys.readouterr().err
    assert err == ("attnseq train: error: --save-every must be a step count (2000), minutes (10m), seconds (30s) "
                   "or hours (1h); 0: epoch ends only, got '10x'\n")
    assert not (tmp_path / "r").exists()


def test_time_based_saves(tiny_data, tmp_path, monkeypatch):
    """--save-every 30s: last/ is saved mid-epoch once 30 s (a fake clock here) have passed since the last save."""
    clock = {"t": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["t"])
    out = tmp_path / "timed"
    cfg = resolve_config(dict(data=str(tiny_data), out=str(out), epochs=1, hidden_size=16, wordvec_size=8,
                              batch_size=64, tokenizer="char", examples=0, save_every="30s"))
    trainer = Trainer(cfg, log=lambda *a: None)
    saves, real_forward = [], trainer.runner.forward

    def forward(*a):
        clock["t"] += 7.0                                   # 7 s a step: a save every 5th step
        return real_forward(*a)
    monkeypatch.setattr(trainer.runner, "forward", forward)
    real_save = trainer.run_dir.save
    trainer.run_dir.save = lambda *a, **k: (saves.append(trainer.step), real_save(*a, **k))
    trainer.run()
    assert saves == [5, 10, 15, 20, STEPS_PER_EPOCH]


# -- big corpora: what keeps memory bounded ------------------------------------------------------------
def test_compact_encoding_gives_the_same_batches(tiny_data):
    """The training split's compact form (uint16 ids, no text kept) gives the int32 batches the plain one does."""
    from attnseq.data.batching import encode_pairs, pad_rows, take
    from attnseq.data.io import read_pairs
    from attnseq.data.tokenizers import BOS_ID, EOS_ID, CharTokenizer
    pairs = read_pairs(tiny_data / "train.tsv")
    tok = CharTokenizer.build([s for s, _ in pairs])
    tgt_tok = CharTokenizer.build([t for _, t in pairs])
    plain = encode_pairs(pairs, tok, tgt_tok, reverse_source=True, max_len=14)
    small = encode_pairs(pairs, tok, tgt_tok, reverse_source=True, max_len=14, keep_pairs=False, compact=True)
    kept = [(s, t) for s, t in pairs if len(s) <= 14 and len(t) <= 14]
    src, src_len = pad_rows([tok.encode(s)[::-1] for s, _ in kept])
    tgt, tgt_len = pad_rows([[BOS_ID, *tgt_tok.encode(t), EOS_ID] for _, t in kept])
    assert 0 < len(kept) < len(pairs) and plain.pairs == kept and small.pairs == [] and small.dropped == plain.dropped
    assert plain.src.dtype == np.int32 and small.src.dtype == np.uint16
    for enc in (plain, small):
        np.testing.assert_array_equal(enc.src, src)
        np.testing.assert_array_equal(enc.tgt, tgt)
        np.testing.assert_array_equal(enc.src_len, src_len)
        np.testing.assert_array_equal(enc.tgt_len, tgt_len)
    idx = np.random.default_rng(0).permutation(len(kept))[:50]
    for a, b in zip(take(plain, idx), take(small, idx)):
        assert a.dtype == b.dtype == np.int32
        np.testing.assert_array_equal(a, b)


def test_sentencepiece_learns_from_a_sample_but_keeps_every_character():
    from attnseq.data.tokenizers import UNK_ID, SentencePieceTokenizer
    rng = random.Random(1)
    words = ["cat", "dog", "fish", "bird", "runs", "eats", "sleeps", "the", "a", "big", "small"]
    texts = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(3000)] + ["the ж cat"]
    a = SentencePieceTokenizer.train(texts, vocab_size=60, max_sentences=500)
    b = SentencePieceTokenizer.train(list(texts), vocab_size=60, max_sentences=500)
    assert a.proto == b.proto                                       # the same texts: the same vocabulary
    assert UNK_ID not in a.encode("the ж cat")                      # the one rare character is a piece
    full = SentencePieceTokenizer.train(texts, vocab_size=60, max_sentences=None)
    assert full.proto != a.proto                                    # (the sample is not the whole)


# -- lr schedules resume exactly ------------------------------------------------------------------------
def _flat_valid(monkeypatch):
    """Every valid evaluation scores the same: only epoch 1 improves, so plateau cuts the lr after each later one."""
    real = training.evaluate

    def flat(model, data, *a, **k):
        out = real(model, data, *a, **k)
        if len(data) == 200 and data.pairs[0] == flat.valid_first:
            out.update(exact_match=0.5, loss=1.0, bleu=10.0)
        return out
    monkeypatch.setattr(training, "evaluate", flat)
    return flat


@pytest.mark.parametrize("schedule", [dict(lr_schedule="cosine", warmup=30),
                                      dict(lr_schedule="warmup-rsqrt", warmup=20),
                                      dict(lr_schedule="plateau", warmup=10, plateau_patience=1, plateau_factor=0.5)])
def test_a_schedule_resumes_mid_epoch_bit_for_bit(tiny_data, tmp_path, monkeypatch, schedule):
    """Stopped inside epoch 3 (step 54; last/ saved there) and resumed, a scheduled run ends exactly as an
    uninterrupted one: weights, optimizer slots, state.json (the schedule's state with it), metrics, test."""
    from attnseq.data.io import read_pairs
    _flat_valid(monkeypatch).valid_first = read_pairs(tiny_data / "valid.tsv")[0]
    cfg = dict(data=str(tiny_data), epochs=3, hidden_size=16, wordvec_size=8, batch_size=64, tokenizer="char",
               examples=0, dropout=0.1, lr=0.01, patience=9, save_every="0", **schedule)
    ref = tmp_path / "ref"
    train(dict(cfg, out=str(ref)), log=lambda *a: None)
    run = tmp_path / "stopped"
    trainer = Trainer(resolve_config(dict(cfg, out=str(run))), log=lambda *a: None)
    real = trainer.runner.forward

    def forward(*a):
        if trainer.step == 53:
            trainer.stop._handle(signal.SIGINT, None)                # stops after step 54
        return real(*a)
    trainer.runner.forward = forward
    with pytest.raises(TrainingStopped, match="in epoch 3 at step 54"):
        trainer.run()
    stopped = json.loads((run / "last" / "state.json").read_text())
    assert stopped["in_epoch"]["batches_done"] == 6 and stopped["schedule"]["name"] == schedule["lr_schedule"]
    logs = []
    train(dict(out=str(run), resume=True), log=logs.append)
    assert any("at epoch 2, step 54, batch 6 of epoch 3" in line for line in logs)
    assert_same_run(run, ref)
    lrs = [r["lr"] for r in run_metrics(ref)]                           # each epoch's last step's
    if schedule["lr_schedule"] == "plateau":                         # epochs 2 and 3 do not improve: two cuts
        assert lrs == [0.01, 0.01, 0.005] and stopped["schedule"]["scale"] == 0.5
        assert json.loads((ref / "last" / "state.json").read_text())["schedule"]["scale"] == 0.25
    else:
        assert len(set(lrs)) == 3
