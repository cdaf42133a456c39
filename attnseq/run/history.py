"""The attention of a few fixed validation examples across training: ``RUN/attention_history.npz``.

A run with ``--track-examples N`` (``attnseq.run.tracking``) takes a snapshot of N validation examples at
every validation (each epoch's end) and every ``--track-every`` steps: for each example, the attention of
the model at that moment over the example's reference output, as training sees it (teacher forcing: row t
is where the decoder looks while it is asked for reference token t, given the right tokens before it),
each reference token's probability, and the model's own greedy output then (cut 5 tokens past the longest
tracked reference: an untrained model runs on). The rows stay the same from
snapshot to snapshot, so the weights can be compared, animated (``attnseq plot-attention --history``) and
slid through (``attnseq explore --history``).

The file holds plain arrays and one JSON string, and loads with ``allow_pickle=False``::

    meta        () str                JSON {"version": 1, "examples": [{"index", "src", "ref", "src_tokens",
                                      "tgt_tokens"}], "outputs": [[each example's greedy output] per entry]}
    step        (E,) int64            the training step of each entry, ascending
    epoch       (E,) float64          epochs done then (2.5: half-way through the third)
    validation  (E,) bool             taken at a validation (an epoch's end), else between them
    weights_K   (E, To_K, Ts_K) f32   example K: reference tokens (eos included) x source tokens, in source order
    probs_K     (E, To_K) f32         example K: the probability of each reference token

It is rewritten whole (a temporary file renamed into place) before each checkpoint save, and a resumed run
drops the entries after its checkpoint's step, so that the entries always match ``metrics.jsonl``: one
validation entry per epoch row, even when epochs are redone after a kill.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import atomic_write_bytes
from ..errors import CheckpointError

FILE = "attention_history.npz"
VERSION = 1


@dataclass
class Entry:
    """One snapshot: its step, epochs done, whether at a validation, and per tracked example the attention
    (To, Ts) over the reference, the reference tokens' probabilities (To,) and the greedy output."""
    step: int
    epoch: float
    validation: bool
    weights: list[np.ndarray]
    probs: list[np.ndarray]
    outputs: list[str]


@dataclass
class AttentionHistory:
    """The tracked ``examples`` (dicts: index in the valid split, src, ref, src_tokens, tgt_tokens) and the
    ``entries`` taken so far, in step order."""
    examples: list[dict]
    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        """Append a snapshot. One taken at the step of the last entry (an epoch's last step that was also a
        --track-every step) replaces it: the model is the same, and the validation mark is kept."""
        self._check(entry)
        if self.entries and self.entries[-1].step == entry.step:
            entry.validation = entry.validation or self.entries[-1].validation
            self.entries[-1] = entry
        elif self.entries and self.entries[-1].step > entry.step:
            raise ValueError(f"history entry at step {entry.step} after one at step {self.entries[-1].step}")
        else:
            self.entries.append(entry)

    def _check(self, entry: Entry) -> None:
        n = len(self.examples)
        if not len(entry.weights) == len(entry.probs) == len(entry.outputs) == n:
            raise ValueError(f"a history entry needs one array per tracked example ({n})")
        for k, (ex, w, p) in enumerate(zip(self.examples, entry.weights, entry.probs)):
            shape = (len(ex["tgt_tokens"]), len(ex["src_tokens"]))
            if w.shape != shape or p.shape != shape[:1]:
                raise ValueError(f"example {k}: weights {w.shape} and probs {p.shape}, expected {shape}")

    def truncate(self, step: int) -> int:
        """Drop the entries after ``step`` (a resumed run's checkpoint); -> how many were dropped."""
        keep = [e for e in self.entries if e.step <= step]
        dropped, self.entries = len(self.entries) - len(keep), keep
        return dropped

    def validations(self) -> list[Entry]:
        """The entries taken at validations, one per epoch."""
        return [e for e in self.entries if e.validation]

    def label(self, entry: Entry) -> str:
        """"epoch 2 (step 1406)" for a validation, "step 350 (epoch 0.50)" between them."""
        if entry.validation:
            return f"epoch {entry.epoch:g} (step {entry.step})"
        return f"step {entry.step} (epoch {entry.epoch:.2f})"

    # -- the file ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        E = self.entries
        meta = dict(version=VERSION, examples=self.examples, outputs=[e.outputs for e in E])
        arrays = dict(meta=np.array(json.dumps(meta, ensure_ascii=False)),
                      step=np.array([e.step for e in E], dtype=np.int64),
                      epoch=np.array([e.epoch for e in E], dtype=np.float64),
                      validation=np.array([e.validation for e in E], dtype=bool))
        for k, ex in enumerate(self.examples):
            shape = (len(ex["tgt_tokens"]), len(ex["src_tokens"]))
            arrays[f"weights_{k}"] = np.array([e.weights[k] for e in E], dtype=np.float32).reshape(len(E), *shape)
            arrays[f"probs_{k}"] = np.array([e.probs[k] for e in E], dtype=np.float32).reshape(len(E), shape[0])
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the file whole under a temporary name, then rename it into place."""
        path = Path(path)
        atomic_write_bytes(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttentionHistory":
        """Read a file written by ``save``; anything malformed is a CheckpointError naming the file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file (a run keeps it with --track-examples N)") from None
        except Exception as e:           # noqa: BLE001 -- a torn, pickled or foreign file: one line
            raise CheckpointError(f"{path}: not an attention history ({type(e).__name__}: {e})") from None
        try:
            return cls._from_arrays(arrays)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CheckpointError(f"{path}: malformed attention history ({type(e).__name__}: {e})") from None

    @classmethod
    def _from_arrays(cls, a: dict) -> "AttentionHistory":
        meta = json.loads(str(a["meta"]))
        if meta.get("version") != VERSION:
            raise ValueError(f"version {meta.get('version')!r}, this attnseq reads {VERSION}")
        hist = cls(list(meta["examples"]))
        steps, epochs, valid = a["step"], a["epoch"], a["validation"]
        if not len(steps) == len(epochs) == len(valid) == len(meta["outputs"]):
            raise ValueError("step, epoch, validation and outputs differ in length")
        for i in range(len(steps)):
            hist.add(Entry(int(steps[i]), float(epochs[i]), bool(valid[i]),
                           [a[f"weights_{k}"][i] for k in range(len(hist.examples))],
                           [a[f"probs_{k}"][i] for k in range(len(hist.examples))],
                           [str(t) for t in meta["outputs"][i]]))
        return hist


def history_path(run: str | Path) -> Path:
    """The history file of a run directory, or of the run a checkpoint directory (best/, last/) lies in."""
    run = Path(run)
    if not (run / FILE).exists() and (run / "config.json").exists() and (run.parent / FILE).exists():
        return run.parent / FILE
    return run / FILE
