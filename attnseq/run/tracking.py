"""What a run records of its training besides checkpoints and metrics.jsonl: attention across training and TensorBoard.

The Trainer calls four methods of a ``Tracking`` and knows nothing else of it:

- ``step(model, step, loss, lr, epoch)`` after each training step that updated the weights;
- ``validated(model, epoch, step, row)`` after each validation (an epoch's end; ``row`` is its metrics.jsonl row);
- ``persist()`` before each checkpoint save, so what is on disk matches the checkpoint;
- ``close()`` at the end, whatever happens.

With ``--track-examples 0`` and no ``--tensorboard`` each does nothing. Otherwise:

- ``--track-examples N`` (``Snapshots``): N validation examples, evenly spaced through the valid split, are
  decoded with teacher forcing at every validation and every ``--track-every`` steps; their attention,
  reference-token probabilities and greedy outputs go into ``RUN/attention_history.npz``
  (``attnseq.run.history``). A snapshot runs the model in eval mode on a batch of N rows: no random
  numbers are drawn and no weight changes, so a run ends exactly as it would untracked.
- ``--tensorboard`` (``TensorBoardLog``, needs the ``tensorboard`` extra: tensorboardX, no torch): ``RUN/tb/``
  gets the training loss and lr every ``--tensorboard-every`` steps, the valid scores at every validation,
  and the first few tracked examples' attention as images. All on one axis, the training step.

A resumed run drops what was recorded after its checkpoint's step: history entries, and events in the
existing event files (rewritten whole, without them); its new event file starts with TensorBoard's purge
marker at the next step, for a TensorBoard that had read them already. So steps that are done again
after a kill appear once.
"""
from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np

from ..data.batching import Encoded, take
from ..errors import CheckpointError, ConfigError
from ..nn.backend import to_numpy
from ..nn.search import log_softmax
from . import faults
from .history import FILE as HISTORY_FILE, AttentionHistory, Entry
from .parallel import _blas_controller

TB_DIR = "tb"
TB_IMAGES = 4               # tracked examples drawn into TensorBoard at each validation
OUTPUT_SLACK = 5            # a snapshot's greedy outputs may run this many tokens past the longest reference
EXTRA_HINT = "pip install 'attnseq[tensorboard]'"


def summary_writer():
    """tensorboardX's SummaryWriter, or one ConfigError naming the extra."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError(f"--tensorboard needs the 'tensorboard' extra (tensorboardX is not installed): "
                          f"{EXTRA_HINT}") from None
    return SummaryWriter


def require(cfg: dict) -> None:
    """Fail early, in one line, when the config asks for what is not installed (``--tensorboard``)."""
    if cfg.get("tensorboard"):
        summary_writer()


# -- the tracked examples --------------------------------------------------------------------------
def tracked_rows(n_valid: int, n: int) -> np.ndarray:
    """``n`` row indices evenly spaced through a valid split of ``n_valid`` rows, the first and last included."""
    return np.unique(np.linspace(0, n_valid - 1, min(n, n_valid)).round().astype(np.int64))


class Snapshots:
    """A fixed batch of validation rows, and what a model makes of them now (``take``).

    ``valid``: the encoded valid split (its pairs kept); ``reverse``: sources are fed reversed
    (``--reverse-source``), and the weights are put back in source order.
    """

    def __init__(self, valid: Encoded, n: int, src_tok, tgt_tok, reverse: bool):
        self.rows = tracked_rows(len(valid), n)
        self.src, self.tgt = take(valid, self.rows)                 # (n, Ts), (n, To + 1) = [bos .. eos pad]
        self.src_len, self.tgt_len = valid.src_len[self.rows], valid.tgt_len[self.rows]
        self.tgt_tok, self.reverse = tgt_tok, reverse
        self.max_len = int(self.tgt_len.max()) - 1 + OUTPUT_SLACK      # greedy outputs stop here (an untrained
        self.examples = []                                             # model would go on to the rule's limit)
        for k, row in enumerate(self.rows):
            src_ids = self.src[k, :self.src_len[k]]
            src_ids = src_ids[::-1] if reverse else src_ids
            src, ref = valid.pairs[row]
            self.examples.append(dict(index=int(row), src=src, ref=ref, ref_norm=tgt_tok.decode(self.tgt[k]),
                                      src_tokens=src_tok.pieces(src_ids),
                                      tgt_tokens=tgt_tok.pieces(self.tgt[k, 1:self.tgt_len[k]])))

    def take(self, model) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        """The model's attention over each reference (To_k, Ts_k) and each reference token's probability
        (To_k,) by teacher forcing, and its greedy outputs (cut ``OUTPUT_SLACK`` tokens past the longest
        reference's length); in eval mode, changing nothing."""
        with model.eval_mode(), _one_blas_thread(model):
            logp = to_numpy(log_softmax(model.logits(self.src, self.tgt)))     # (n, To, V)
            a = np.array(to_numpy(model.attention_weights), dtype=np.float32)    # (n, To, Ts), copied
            ids, _ = model.generate(self.src, max_len=self.max_len)
        gold = self.tgt[:, 1:]
        p = np.exp(np.take_along_axis(logp, gold[..., None].astype(np.int64), axis=2)[..., 0]).astype(np.float32)
        weights, probs = [], []
        for k, (ts, to) in enumerate(zip(self.src_len, self.tgt_len - 1)):
            w = a[k, :to, :ts]
            weights.append(np.ascontiguousarray(w[:, ::-1] if self.reverse else w))
            probs.append(p[k, :to])
        return weights, probs, [self.tgt_tok.decode(r) for r in ids]


def _one_blas_thread(model):
    """Single-threaded BLAS while a snapshot of a CPU model runs, as the training steps around it have it
    (``parallel``): a few small products gain nothing from more, and BLAS threads woken between the
    training threads' steps would keep spinning on the cores those need."""
    blas = _blas_controller() if model.xp is np else None
    return blas.limit(limits=1, user_api="blas") if blas is not None else contextlib.nullcontext()


# -- TensorBoard ------------------------------------------------------------------------------------
def _event_records(path: Path):
    """(Event, raw bytes) of each whole record of a TensorBoard event file (TFRecord framing: length,
    its masked CRC, the Event, its masked CRC); stops at a torn or garbled record, as a killed writer leaves."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    data, pos = path.read_bytes(), 0
    while pos + 12 <= len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        end = pos + 12 + n + 4
        if struct.unpack("<I", data[pos + 8:pos + 12])[0] != masked_crc32c(header) or end > len(data):
            return
        try:
            event = Event.FromString(data[pos + 12:pos + 12 + n])
        except Exception:                  # noqa: BLE001 -- protobuf's DecodeError: a garbled record
            return
        yield event, data[pos:end]
        pos = end


def drop_events_after(logdir: Path, step: int) -> int:
    """Rewrite each event file in ``logdir`` without its events after ``step`` (and any torn tail);
    -> how many events were dropped. A file left with nothing to keep is removed."""
    from ..data.io import atomic_write_bytes
    dropped = 0
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        records = list(_event_records(path))
        keep = [raw for event, raw in records if event.step <= step]
        size = path.stat().st_size
        if len(keep) == len(records) and sum(map(len, keep)) == size:
            continue
        dropped += len(records) - len(keep)
        if any(event.HasField("summary") for event, raw in records if event.step <= step):
            atomic_write_bytes(path, b"".join(keep))
        else:
            path.unlink()
    return dropped


class TensorBoardLog:
    """``RUN/tb/``: scalars and images on the training step axis, through tensorboardX.

    ``resume_step``: the step of the checkpoint the run continues from (0 for a new run): events after it,
    left by a killed run, are dropped from the files first, and a resumed run's new file starts with
    TensorBoard's purge marker at ``resume_step + 1``. Each writer gets its own file (a numbered suffix),
    so a resume within the same second does not overwrite the file before it.
    """

    def __init__(self, logdir: Path, every: int, resume_step: int = 0):
        SummaryWriter = summary_writer()
        self.logdir, self.every = Path(logdir), every
        self.logdir.mkdir(parents=True, exist_ok=True)
        drop_events_after(self.logdir, resume_step)
        n = len(list(self.logdir.glob("events.out.tfevents.*")))
        self.writer = SummaryWriter(str(self.logdir), purge_step=resume_step + 1 if resume_step else None,
                                    filename_suffix=f".{n + 1:04d}.{os.getpid()}", flush_secs=60)

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.every and step % self.every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def validated(self, step: int, row: dict, images: list[tuple[str, np.ndarray]]) -> None:
        """The epoch's valid scores (``row``'s valid_* keys as valid/*), its mean training loss, and the images."""
        self.writer.add_scalar("train/epoch_loss", row["train_loss"], step)
        for key, value in row.items():
            if key.startswith("valid_") and key != "valid_n" and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                self.writer.add_scalar("valid/" + key[len("valid_"):], value, step)
        for tag, image in images:
            self.writer.add_image(tag, image, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def heatmap_image(weights, src_tokens, tgt_tokens, title: str) -> np.ndarray:
    """One attention heatmap as an RGB array (H, W, 3) uint8, drawn by ``plotting.plot_attention``."""
    from ..plotting import figure_rgb, plot_attention
    return figure_rgb(plot_attention(weights, src_tokens, tgt_tokens, title=title))


def example_title(example: dict, output: str) -> str:
    """A tracked example's heading: "source → output ✓", or ✗ when the output is not its reference."""
    from ..plotting import readable
    ok = "✓" if output == example.get("ref_norm", example["ref"]) else "✗"
    return f"{readable(example['src'])} → {readable(output)} {ok}"


# -- the four calls --------------------------------------------------------------------------------
class Tracking:
    """The attention history and the TensorBoard log of a run, behind the Trainer's four calls.

    ``Tracking()`` records nothing; ``Tracking.start`` builds what the config asks for.
    """

    def __init__(self, snapshots: Snapshots | None = None, history: AttentionHistory | None = None,
                 history_file: Path | None = None, every: int = 0, board: TensorBoardLog | None = None):
        self.snapshots, self.history, self.history_file = snapshots, history, history_file
        self.every, self.board = every, board

    @classmethod
    def start(cls, cfg: dict, out: Path, valid: Encoded, src_tok, tgt_tok, resume_step: int = 0,
              log=print) -> "Tracking":
        """What ``cfg`` asks for (``track_examples``, ``track_every``, ``tensorboard``, ``tensorboard_every``)
        for the run in ``out``, continuing from ``resume_step`` (0: a new run)."""
        require(cfg)
        n = cfg.get("track_examples") or 0
        snapshots = history = None
        if n > 0:
            snapshots = Snapshots(valid, n, src_tok, tgt_tok, bool(cfg.get("reverse_source")))
            history = _history_to_continue(out / HISTORY_FILE, snapshots.examples, resume_step, log)
        board = TensorBoardLog(out / TB_DIR, cfg.get("tensorboard_every") or 0, resume_step) \
            if cfg.get("tensorboard") else None
        return cls(snapshots, history, out / HISTORY_FILE, cfg.get("track_every") or 0, board)

    def step(self, model, step: int, loss: float, lr: float, epoch: float) -> None:
        if self.board is not None:
            self.board.step(step, loss, lr)
        if self.snapshots is not None and self.every and step % self.every == 0:
            self.history.add(Entry(step, epoch, False, *self.snapshots.take(model)))

    def validated(self, model, epoch: int, step: int, row: dict) -> None:
        entry = None
        if self.snapshots is not None:
            entry = Entry(step, float(epoch), True, *self.snapshots.take(model))
            self.history.add(entry)
        if self.board is not None:
            self.board.validated(step, row, self._images(entry, step) if entry is not None else [])

    def _images(self, entry: Entry, step: int) -> list[tuple[str, np.ndarray]]:
        out = []
        for k, ex in enumerate(self.snapshots.examples[:TB_IMAGES]):
            title = f"{example_title(ex, entry.outputs[k])}  (step {step})"
            out.append((f"attention/{k}", heatmap_image(entry.weights[k], ex["src_tokens"], ex["tgt_tokens"], title)))
        return out

    def persist(self) -> None:
        if self.history is not None:
            self.history.save(self.history_file)
        if self.board is not None:
            self.board.flush()
        faults.point("tracking-persisted")

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def _history_to_continue(path: Path, examples: list[dict], resume_step: int, log) -> AttentionHistory:
    """The history a run continues: the file's, without entries after ``resume_step``, when it tracks the
    same examples; else (no file, another selection, a file that does not read) a new one."""
    if not resume_step or not path.exists():
        return AttentionHistory(examples)
    try:
        history = AttentionHistory.load(path)
    except CheckpointError as e:
        log(f"warning: {e}; starting a new attention history")
        return AttentionHistory(examples)
    if [(e["src"], e["ref"]) for e in history.examples] != [(e["src"], e["ref"]) for e in examples]:
        log(f"note: {path} tracks other examples; starting a new attention history")
        return AttentionHistory(examples)
    history.truncate(resume_step)
    return history
