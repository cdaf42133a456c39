"""Attention across training (run/history.py, run/tracking.py): the history file; snapshots against the
checkpoints they were taken with; a kill and a resume; TensorBoard's event files read back with TensorBoard's
own reader; the flag without its extra; the GIF; and the explorer's epoch slider in headless Chromium."""
import io
import json
import math
import signal

import numpy as np
import pytest

from attnseq.cli import main
from attnseq.data.tokenizers import BOS_ID, EOS_ID
from attnseq.errors import CheckpointError
from attnseq.run.checkpoint import load_checkpoint
from attnseq.run.history import FILE, AttentionHistory, Entry, history_path
from attnseq.run.tracking import Tracking, _event_records, tracked_rows
from helpers import EXTRAS, finish, require_extra, start_cli

RUN_ARGS = ["--tokenizer", "char", "--epochs", "3", "--hidden-size", "16", "--wordvec-size", "8", "--batch-size", "64",
            "--lr", "0.01", "--examples", "0", "--no-plot", "--track-every", "5", "--save-every", "7"]
STEPS_PER_EPOCH = 24                        # 1,500 training pairs in batches of 64
TB_EVERY = 3


def has_extra(name) -> bool:
    import importlib.util
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[name])


def tb_args():
    return ["--tensorboard", "--tensorboard-every", str(TB_EVERY)] if has_extra("tensorboard") else []


@pytest.fixture(scope="module")
def tracked_run(tiny_data, tmp_path_factory):
    """Three epochs with 8 examples tracked every 5 steps, every epoch kept (and TensorBoard, with the extra)."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *RUN_ARGS, "--keep-last", "3", *tb_args()]) == 0
    return out


def teacher_forced(ckpt, src, ref):
    """A checkpoint's attention (To, Ts) over ``ref`` and each reference token's probability, one example
    alone, computed here from the model's forward pass (no attnseq.run.tracking code)."""
    ck = load_checkpoint(ckpt)
    s = np.array([ck.src_tok.encode(src)])
    t = np.array([[BOS_ID, *ck.tgt_tok.encode(ref), EOS_ID]])
    with ck.model.eval_mode():
        logits = ck.model.logits(s, t)[0]
        a = np.array(ck.model.attention_weights[0], dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return a, p[np.arange(len(t[0]) - 1), t[0, 1:]]


# -- the file -----------------------------------------------------------------------------------
def _history(n_entries=3, steps=None):
    rng = np.random.default_rng(0)
    examples = [dict(index=i, src=f"s{i}", ref=f"r{i}", ref_norm=f"r{i}", src_tokens=list("abc"[:i + 1]),
                     tgt_tokens=["x"] * (i + 2)) for i in range(2)]
    h = AttentionHistory(examples)
    for k, step in enumerate(steps or range(10, 10 * (n_entries + 1), 10)):
        w = [rng.dirichlet(np.ones(len(e["src_tokens"])), size=len(e["tgt_tokens"])).astype(np.float32) for e in examples]
        p = [rng.random(len(e["tgt_tokens"])).astype(np.float32) for e in examples]
        h.add(Entry(step, step / 20, k % 2 == 1, w, p, [f"o{k}", f"p{k}"]))
    return h


def test_history_round_trip_without_pickle(tmp_path):
    h = _history()
    path = h.save(tmp_path / FILE)
    with np.load(path, allow_pickle=False) as z:                     # plain arrays only
        assert set(z.files) == {"meta", "step", "epoch", "validation", "weights_0", "weights_1", "probs_0", "probs_1"}
        assert z["weights_1"].shape == (3, 3, 2) and z["weights_1"].dtype == np.float32
        json.loads(str(z["meta"]))
    back = AttentionHistory.load(path)
    assert back.examples == h.examples
    assert [(e.step, e.epoch, e.validation, e.outputs) for e in back.entries] == \
        [(e.step, e.epoch, e.validation, e.outputs) for e in h.entries]
    for a, b in zip(back.entries, h.entries):
        for x, y in zip(a.weights + a.probs, b.weights + b.probs):
            np.testing.assert_array_equal(x, y)
    assert [p.name for p in tmp_path.iterdir()] == [FILE]            # no temporary left


def test_history_add_truncate_and_labels():
    h = _history(steps=[10, 20, 30])
    assert [e.step for e in h.validations()] == [20]
    last = h.entries[-1]
    h.add(Entry(30, 1.5, True, last.weights, last.probs, ["a", "b"]))    # an epoch's end on a --track-every step
    assert [(e.step, e.validation) for e in h.entries] == [(10, False), (20, True), (30, True)]
    with pytest.raises(ValueError, match="after one at step 30"):
        h.add(Entry(25, 1.0, False, last.weights, last.probs, ["a", "b"]))
    with pytest.raises(ValueError, match="expected"):
        h.add(Entry(40, 2.0, False, [w.T for w in last.weights], last.probs, ["a", "b"]))
    assert h.truncate(20) == 1 and [e.step for e in h.entries] == [10, 20]
    assert h.label(h.entries[1]) == "epoch 1 (step 20)" and h.label(h.entries[0]) == "step 10 (epoch 0.50)"


def test_history_refuses_pickles_and_garbage(tmp_path):
    path = tmp_path / FILE
    arrays = {k: v for k, v in np.load(io.BytesIO(_history().to_bytes())).items()}
    arrays["step"] = np.array([object(), 1, 2], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="not an attention history"):
        AttentionHistory.load(path)
    path.write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(CheckpointError, match=FILE):
        AttentionHistory.load(path)
    np.savez(path, meta=np.array(json.dumps({"version": 99})), step=np.zeros(0))
    with pytest.raises(CheckpointError, match="version 99"):
        AttentionHistory.load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        AttentionHistory.load(tmp_path / "none.npz")


def test_tracked_rows_are_spread_through_the_valid_split():
    assert tracked_rows(200, 8).tolist() == [0, 28, 57, 85, 114, 142, 171, 199]
    assert tracked_rows(3, 8).tolist() == [0, 1, 2]


def test_snapshots_are_the_models_attention_in_source_order_even_when_fed_reversed():
    """Snapshots against the model's own teacher-forced pass, one example at a time: the weights of a
    --reverse-source run come back in source order, the tokens too; outputs stop 5 past the longest reference."""
    from attnseq.data.batching import encode_pairs
    from attnseq.data.tokenizers import CharTokenizer
    from attnseq.nn.model import AttentionSeq2seq
    from attnseq.run.tracking import Snapshots
    pairs = [("May 3, 1999", "1999-05-03"), ("1/2/03", "2003-01-02"), ("Sun 14 Dec 1980", "1980-12-14")]
    src_tok, tgt_tok = CharTokenizer.build(s for s, _ in pairs), CharTokenizer.build(t for _, t in pairs)
    model = AttentionSeq2seq(src_tok.vocab_size, tgt_tok.vocab_size, 6, 12, dtype="float64", seed=1)
    for reverse in (False, True):
        snaps = Snapshots(encode_pairs(pairs, src_tok, tgt_tok, reverse), 3, src_tok, tgt_tok, reverse)
        weights, probs, outputs = snaps.take(model)
        assert snaps.max_len == 11 + 5                                 # the longest reference: 10 + eos
        assert outputs == [tgt_tok.decode(r) for r in model.generate(snaps.src, max_len=16)[0]]
        for (src, ref), ex, w, p in zip(pairs, snaps.examples, weights, probs):
            assert ex["src_tokens"] == list(src) and ex["tgt_tokens"] == [*ref, "<eos>"]
            ids = src_tok.encode(src)
            s = np.array([ids[::-1] if reverse else ids])
            t = np.array([[BOS_ID, *tgt_tok.encode(ref), EOS_ID]])
            with model.eval_mode():
                logits = model.logits(s, t)[0]
                a = np.array(model.attention_weights[0])
            np.testing.assert_allclose(w, a[:, ::-1] if reverse else a, atol=1e-6)     # float32 in the history
            logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            np.testing.assert_allclose(p, np.exp(logp[np.arange(len(ref) + 1), t[0, 1:]]), rtol=1e-5)
            assert w.dtype == np.float32 and w.flags["C_CONTIGUOUS"]


def test_tracking_off_records_nothing(tiny_data, tmp_path):
    out = tmp_path / "off"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *RUN_ARGS[:-4], "--epochs", "1",
                 "--track-examples", "0"]) == 0
    assert not (out / FILE).exists() and not (out / "tb").exists()
    t = Tracking()                                                     # what the Trainer holds when off
    t.step(None, 5, 1.0, 0.1, 0.2)
    t.validated(None, 1, 5, {})
    t.persist()
    t.close()


def test_tensorboard_without_the_extra_is_one_error(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "tensorboardX", None)          # import tensorboardX fails
    out = tmp_path / "tb"
    assert main(["train", "--data", str(tiny_data), "--out", str(out), *RUN_ARGS, "--tensorboard"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("attnseq train: error: --tensorboard needs the 'tensorboard' extra (tensorboardX is not "
                   "installed): pip install 'attnseq[tensorboard]'")
    assert not out.exists()                                           # refused before anything is written


# -- a run ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_history_has_one_entry_per_validation_equal_to_that_epochs_checkpoint(tracked_run):
    h = AttentionHistory.load(tracked_run / FILE)
    rows = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in h.validations()] == [r["step"] for r in rows] == [24, 48, 72]
    assert [e.epoch for e in h.validations()] == [1.0, 2.0, 3.0]
    assert [e.step for e in h.entries] == sorted({*range(5, 73, 5), 24, 48, 72})
    assert len(h.examples) == 8 and [e["index"] for e in h.examples] == tracked_rows(200, 8).tolist()
    best = load_checkpoint(tracked_run / "best").state["epoch"]
    checkpoints = {e.epoch: tracked_run / f"epoch-{int(e.epoch):04d}" for e in h.validations()}
    checkpoints["best"] = tracked_run / "best"
    from attnseq.run.inference import Translator
    for which, ckpt in checkpoints.items():
        entry = h.validations()[(best if which == "best" else int(which)) - 1]
        limit = max(len(e["tgt_tokens"]) for e in h.examples) + 5        # a snapshot's outputs stop there
        outputs = [t.text for t in Translator(ckpt).translate([e["src"] for e in h.examples], max_len=limit)]
        assert entry.outputs == outputs, which
        for k, ex in enumerate(h.examples):
            a, p = teacher_forced(ckpt, ex["src"], ex["ref"])
            assert entry.weights[k].shape == a.shape == (len(ex["tgt_tokens"]), len(ex["src_tokens"]))
            np.testing.assert_allclose(entry.weights[k], a, atol=2e-6, err_msg=f"{which} {k}")
            np.testing.assert_allclose(entry.probs[k], p, atol=2e-6, rtol=1e-5)
    first, last = h.validations()[0].weights[0], h.validations()[-1].weights[0]
    assert np.abs(first - last).max() > 0.05                         # the attention did change


@pytest.mark.slow
def test_a_killed_and_resumed_run_records_each_step_once(tracked_run, tiny_data, tmp_path):
    """Killed right after the history and the event files were written at epoch 2's end (step 48), before
    its checkpoint: the run resumes from step 42 and does steps 43-48 again. The history and TensorBoard
    then hold what an uninterrupted run's do, each step once (on disk too, not only in TensorBoard's view)."""
    run = tmp_path / "killed"
    args = ["train", "--data", str(tiny_data), "--out", str(run), *RUN_ARGS, "--keep-last", "3", *tb_args()]
    code, _, err = finish(start_cli(args, fault="tracking-persisted:8"))   # saves at 7 14 21 24 28 35 42 48
    assert code == -signal.SIGKILL, err
    assert max(e.step for e in AttentionHistory.load(run / FILE).entries) == 48   # ahead of last/ (step 42)
    code, _, err = finish(start_cli([*args, "--resume"]))
    assert code == 0, err
    assert "resumed" in err or "resumed" in _
    got, want = AttentionHistory.load(run / FILE), AttentionHistory.load(tracked_run / FILE)
    assert [(e.step, e.epoch, e.validation, e.outputs) for e in got.entries] == \
        [(e.step, e.epoch, e.validation, e.outputs) for e in want.entries]
    for a, b in zip(got.entries, want.entries):
        for x, y in zip(a.weights + a.probs, b.weights + b.probs):
            np.testing.assert_array_equal(x, y)
    if has_extra("tensorboard"):
        assert board(run) == board(tracked_run)
        assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2
        seen = [(v.tag, ev.step) for path in sorted((run / "tb").glob("events.*"))
                for ev, _ in _event_records(path) for v in ev.summary.value]
        assert len(seen) == len(set(seen)) and max(step for _, step in seen) == 72


# -- TensorBoard -----------------------------------------------------------------------------------
def board(run):
    """{tag: [(step, value)]} of the scalars and {tag: [step]} of the images, as TensorBoard reads RUN/tb."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    scalars = {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}
    images = {t: [(e.step, e.width, e.height) for e in ea.Images(t)] for t in ea.Tags()["images"]}
    return scalars, images


@pytest.mark.slow
def test_tensorboard_scalars_and_images_at_the_right_steps(tracked_run):
    require_extra("tensorboard")
    scalars, images = board(tracked_run)
    rows = [json.loads(line) for line in (tracked_run / "metrics.jsonl").read_text().splitlines()]
    ends = [r["step"] for r in rows]
    assert [s for s, _ in scalars["train/loss"]] == list(range(TB_EVERY, 3 * STEPS_PER_EPOCH + 1, TB_EVERY))
    assert scalars["train/lr"] == [(s, pytest.approx(0.01)) for s in range(TB_EVERY, 73, TB_EVERY)]
    assert all(0 < v < 10 for _, v in scalars["train/loss"])
    for key in ("loss", "token_accuracy", "exact_match", "bleu", "chrf"):
        assert scalars[f"valid/{key}"] == [(r["step"], pytest.approx(r[f"valid_{key}"], rel=1e-6)) for r in rows], key
    assert scalars["train/epoch_loss"] == [(r["step"], pytest.approx(r["train_loss"], rel=1e-6)) for r in rows]
    assert sorted(images) == [f"attention/{k}" for k in range(4)]
    for tag, shown in images.items():
        assert [s for s, _, _ in shown] == ends and all(w > 200 and h > 200 for _, w, h in shown)


# -- the GIF ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_plot_attention_history_writes_one_gif_frame_per_snapshot(tracked_run, tmp_path, capsys):
    from matplotlib import animation
    from PIL import Image
    h = AttentionHistory.load(tracked_run / FILE)
    out = tmp_path / "forming.gif"
    assert main(["plot-attention", "--history", str(tracked_run), "--out", str(out), "--n", "2", "--fps", "5"]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == len(h.entries)                          # Pillow merges the held last frame
        frames = []
        for k in (0, gif.n_frames - 1):
            gif.seek(k)
            frames.append((np.asarray(gif.convert("RGB")), gif.info["duration"]))
    assert frames[0][0].shape[1] > 400 and frames[0][0].std() > 20
    assert np.abs(frames[0][0].astype(int) - frames[1][0]).mean() > 1   # the attention moved
    assert frames[0][1] == 200 and frames[1][1] == 1200                # 1/5 s; the last held a second more
    assert main(["plot-attention", "--history", str(tracked_run), "--out", str(out), "--until", "20"]) == 0
    with Image.open(out) as gif:                                        # steps 5 10 15 20, and the end
        assert gif.n_frames == 5
    mp4 = tmp_path / "forming.mp4"
    code = main(["plot-attention", "--history", str(tracked_run), "--out", str(mp4)])
    if animation.writers.is_available("ffmpeg"):
        assert code == 0 and mp4.stat().st_size > 1000
    else:
        assert code == 1 and not mp4.exists()
        assert capsys.readouterr().err.strip().endswith("an MP4 needs ffmpeg, which matplotlib cannot find; "
                                                        "install ffmpeg, or write a .gif")
    assert not list(tmp_path.glob(".*"))


def test_plot_attention_and_explore_flags(tmp_path, capsys):
    for args, msg in ((["plot-attention", "--out", "a.png", "--text", "x"], "--ckpt RUN is required"),
                      (["plot-attention", "--history", "R", "--ckpt", "R", "--out", "a.gif"], "--ckpt do not apply"),
                      (["plot-attention", "--ckpt", "R", "--until", "9", "--out", "a.gif"], "--until STEP is for"),
                      (["explore", "--ckpt", "R", "--out", "p.html"], "--data FILE is required (or --history"),
                      (["explore", "--ckpt", "R", "--data", "d", "--history", "--out", "p.html"], "are alternatives")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert main(["plot-attention", "--history", str(tmp_path), "--out", str(tmp_path / "a.gif")]) == 1
    assert f"{tmp_path / FILE}: no such file" in capsys.readouterr().err


# -- the explorer's slider ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def history_page(tracked_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("hist") / "page.html"
    assert main(["explore", "--ckpt", str(tracked_run), "--history", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_history_page_data_is_the_history_file(tracked_run, history_page):
    from attnseq.explorer import read_embedded
    from test_explore import dense
    data = read_embedded(history_page.read_text(encoding="utf-8"))
    h = AttentionHistory.load(history_path(tracked_run / "best"))            # found from best/ too
    assert data["history"]["steps"] == [e.step for e in h.entries]
    assert data["history"]["labels"][-1] == "epoch 3 (step 72)"
    assert [ex["src"] for ex in data["examples"]] == [e["src"] for e in h.examples]
    for k, ex in enumerate(data["examples"]):
        assert ex["history"]["tokens"] == h.examples[k]["tgt_tokens"]
        for got, entry in zip(ex["history"]["entries"], h.entries):
            np.testing.assert_allclose(dense(got["w"], len(ex["src_tokens"])), entry.weights[k], atol=5.1e-4)
            assert got["text"] == entry.outputs[k] and got["correct"] == (entry.outputs[k] == h.examples[k]["ref"])


VIRIDIS = [[68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141], [44, 114, 142],
           [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128], [63, 188, 115], [94, 201, 98],
           [132, 212, 75], [173, 220, 48], [216, 226, 25], [253, 231, 37]]


def page_colour(v: float) -> str:
    """page.html's cmap(v), in the same double arithmetic (JS Math.round is floor(x + 0.5))."""
    v = max(0.0, min(1.0, v)) * (len(VIRIDIS) - 1)
    i = min(math.floor(v), len(VIRIDIS) - 2)
    f, a, b = v - i, VIRIDIS[i], VIRIDIS[i + 1]
    return "rgb({}, {}, {})".format(*(math.floor(a[k] + f * (b[k] - a[k]) + 0.5) for k in range(3)))


@pytest.fixture(scope="module")
def browser():
    from helpers import start_browser
    b = start_browser()
    yield b
    b.quit()


def _cells(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#heatmap .cell')).map(c => c.style.backgroundColor)")


@pytest.mark.slow
@pytest.mark.browser
def test_browser_slider_shows_each_snapshots_weights(browser, history_page, tracked_run, tmp_path):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from test_explore import _open
    h = AttentionHistory.load(tracked_run / FILE)
    E = len(h.entries)
    _open(browser, history_page)
    slider = browser.find_element(By.ID, "epoch-slider")
    assert slider.get_attribute("max") == str(E) and slider.get_attribute("value") == str(E)
    final = _cells(browser)                                        # the checkpoint's own output

    def expect(i, k):                                              # example i at snapshot k, from the file
        w = np.rint(h.entries[k].weights[i].astype(np.float64) * 1000) / 1000
        return [page_colour(v) for v in w.flat]

    browser.execute_script("arguments[0].focus()", slider)
    slider.send_keys(Keys.ARROW_LEFT)                              # the last snapshot
    assert browser.find_element(By.ID, "detail").get_attribute("data-snap") == str(E - 1)
    assert _cells(browser) == expect(0, E - 1)
    slider.send_keys(Keys.HOME)                                    # the first snapshot
    assert _cells(browser) == expect(0, 0) != expect(0, E - 1)
    caption = browser.find_element(By.ID, "history-caption").text
    assert caption.startswith(h.label(h.entries[0])) and h.entries[0].outputs[0] in caption
    rows = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#heatmap .out-tok")]
    assert len(rows) == len(h.examples[0]["tgt_tokens"])
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j", "]", "]")                                  # the next example, two snapshots later
    assert _cells(browser) == expect(1, 2)
    assert browser.find_element(By.ID, "epoch-slider").get_attribute("value") == "2"
    for _ in range(E):
        body.send_keys("]")
    assert browser.find_element(By.ID, "detail").get_attribute("data-snap") == str(E)
    body.send_keys("k")
    assert _cells(browser) == final
    browser.execute_script("arguments[0].value = 5; arguments[0].dispatchEvent(new Event('input'))",
                           browser.find_element(By.ID, "epoch-slider"))          # a drag
    assert _cells(browser) == expect(0, 5)
    png = browser.get_screenshot_as_png()
    (tmp_path / "slider.png").write_bytes(png)
    pixels = imread(io.BytesIO(png))[..., :3]
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
