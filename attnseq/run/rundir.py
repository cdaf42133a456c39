"""The run directory: what a trainer reads and writes there, in one place.

Layout of ``RUN/``::

    best/ last/        checkpoints (``attnseq.run.checkpoint``): the best epoch by --select-by, the latest save
    epoch-NNNN/        with --keep-last K, the last K epoch-end checkpoints
    step-NNNNNNN/      or, with --keep-every N too, the last K taken every N steps (by step)
    averaged/          with --average-last K, the mean of the last K of them
    metrics.jsonl      one row per epoch (training stats and valid scores)
    result.json        the end of the run: best/'s valid score, its test scores (and averaged/'s)
    attention_history.npz, tb/   what the run records besides (``attnseq.run.tracking``): --track-examples, --tensorboard
    .lock              while a trainer runs there (``attnseq.run.lock``)

state.json's schema is ``attnseq.run.train_state``.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path

from . import faults
from ..errors import CheckpointError, ConfigError
from ..data.io import atomic_write_text
from ..data.tokenizers import Tokenizer
from .checkpoint import (Checkpoint, check_arrays, load_checkpoint, load_checkpoint_config, load_from, read_json,
                         resolve, save_checkpoint)
from .lock import RunLock
from .train_state import EpochProgress, TrainState


def _epoch_at_or_after(row: dict, epoch: int) -> bool:
    """Whether a metrics.jsonl row is of ``epoch`` or later (a row without a numeric epoch is not)."""
    e = row.get("epoch", 0)
    return isinstance(e, (int, float)) and not isinstance(e, bool) and e >= epoch


def _saved_step(checkpoint: Path) -> int:
    """The step a checkpoint was saved at (its state.json), -1 when unreadable."""
    try:
        step = read_json(checkpoint / "state.json").get("step")
    except CheckpointError:
        return -1
    return step if isinstance(step, int) else -1


class RunDir:
    """A run directory: ``best/`` and ``last/`` checkpoints, ``metrics.jsonl`` and ``result.json``.

    Everything the trainer reads or writes there goes through here: ``prepare`` (refuse to
    overwrite a run, check it can be written, remove temporaries a killed run left), the checkpoint
    to resume from (``resume_config``, ``load_last``, ``restore``), ``save``, ``append_metrics``,
    ``write_result`` and ``load_best``. A checkpoint swap cut short leaves only ``NAME.old``:
    ``resolve`` reads it in ``NAME``'s place and the next ``save_checkpoint`` renames it back.

    ``save(..., keep=K)`` also keeps the last K epoch-end checkpoints as ``epoch-NNNN/`` (the
    epoch, 4 digits or more), pruning older ones; with ``by_step`` the checkpoint is kept as
    ``step-NNNNNNN/`` (the step, 7 digits or more), also inside an epoch. ``kept()`` lists them, oldest
    first.

    ``lock``/``unlock``: one trainer per run directory, through ``RUN/.lock``.
    """
    CHECKPOINTS = ("last", "best")
    EPOCH_DIR = re.compile(r"epoch-(\d{4,})")
    STEP_DIR = re.compile(r"step-(\d{7,})")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._resume_from: Path | None = None
        self._config: dict | None = None
        self._lock = RunLock(self.path)

    # -- the lock ----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take ``RUN/.lock`` (``attnseq.run.lock``), creating the directory if need be. Call before
        ``prepare``, which removes temporaries.

        Held by a running process: ConfigError naming its PID. Left by a process that no longer
        runs on this host (a killed run): taken over, with a warning. Released by ``unlock``, at
        the latest when this RunDir is dropped or the process exits.
        """
        if self._lock.held:
            return
        self._mkdir()
        self._lock.acquire()

    def unlock(self) -> None:
        """Remove ``RUN/.lock`` if this RunDir holds it."""
        self._lock.release()

    def _mkdir(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None

    def holds_run(self) -> bool:
        return any((self.path / n / "config.json").exists()
                   for name in self.CHECKPOINTS for n in (name, f"{name}.old"))

    def prepare(self, resume: bool) -> bool:
        """Create the directory and get it ready; True when it holds a checkpoint to resume from.

        Without ``resume``, a directory that holds a run is refused (ConfigError); so is one that
        cannot be written, before any training, and a checkpoint directory (``best/``, an average).
        """
        self._refuse_checkpoint_dir()
        has_run = self.holds_run()
        if has_run and not resume:
            raise ConfigError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
        self._mkdir()
        try:
            probe = self.path / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None
        self._remove_temporaries()
        return has_run and resume

    def _refuse_checkpoint_dir(self) -> None:
        """A checkpoint directory is not a run directory: training there would mix the two."""
        if not (self.path / "config.json").exists():
            return
        try:
            averaged = "averaged" in read_json(self.path / "state.json")
        except CheckpointError:
            averaged = False
        if averaged:
            raise ConfigError(f"--out {self.path} is an averaged checkpoint (attnseq average): it has no optimizer "
                              "state or position to resume from; use it with eval, translate or export "
                              f"(--ckpt {self.path}), and train in a new --out")
        raise ConfigError(f"--out {self.path} is a checkpoint directory, not a run directory; give the run "
                          "directory that holds best/ and last/, or a new one")

    def _remove_temporaries(self) -> None:
        """Checkpoints (``.NAME.tmp-PID/``) and files (``.NAME.XXXX.tmp``, a lock's ``.lock.tmp-PID``) that a
        killed run was writing, and stale locks a killed takeover had set aside (``.lock.stale-PID``)."""
        for stale in [*self.path.glob(".*.tmp-*"), *self.path.glob(".*.tmp"), *self.path.glob(".lock.stale-*")]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    # -- resuming ------------------------------------------------------------------------
    def resume_config(self) -> dict:
        """config.json of the checkpoint a resume continues from (last/, else best/), read once."""
        if self._config is None:
            ckpt = resolve(self.path, prefer="last")
            self._config = load_checkpoint_config(ckpt)
            self._resume_from = ckpt
        return self._config

    def saved_options(self) -> dict | None:
        """The training options of the run to resume (config.json's "train" section, which
        ``resolve_config`` takes on --resume), or None when there is none to read yet."""
        try:
            saved = self.resume_config()["train"]
        except (CheckpointError, KeyError, TypeError):
            return None                 # nothing to resume (yet): a fresh start, or the Trainer reports it
        return saved if isinstance(saved, dict) else None

    def load_last(self, device: str = "cpu") -> Checkpoint:
        """The checkpoint to resume from, verified, with its optimizer arrays (not yet checked: ``restore``)."""
        config = self.resume_config()
        return load_from(self._resume_from, config, device, with_optimizer=True)

    @staticmethod
    def restore(ck: Checkpoint, optimizer) -> TrainState:
        """Load ``ck``'s optimizer.npz into ``optimizer`` (names, shapes and dtypes checked against
        ``optimizer.expected_arrays()``) and return its checked state.json."""
        check_arrays(ck.path / "optimizer.npz", ck.optimizer, optimizer.expected_arrays())
        optimizer.load_state_dict(ck.optimizer)
        return TrainState.from_json(ck.state, ck.path / "state.json")

    def load_best(self, device: str = "cpu") -> Checkpoint:
        return load_checkpoint(self.path, device=device, prefer="best")

    def best_epoch(self) -> int | None:
        """The epoch best/ was saved at (its state.json), or None when there is none to read."""
        try:
            epoch = read_json(resolve(self.path, prefer="best") / "state.json").get("epoch")
        except CheckpointError:
            return None
        return epoch if isinstance(epoch, int) else None

    def read_metrics(self) -> list[dict]:
        """The rows of metrics.jsonl (torn or malformed lines, and lines that are no JSON object, left
        out); [] when there is none. Everything that reads the file reads it here."""
        try:
            lines = (self.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    # -- kept epoch checkpoints ----------------------------------------------------------------
    def epoch_dir(self, epoch: int) -> Path:
        return self.path / f"epoch-{epoch:04d}"

    def step_dir(self, step: int) -> Path:
        return self.path / f"step-{step:07d}"

    def kept(self) -> list[tuple[int, Path]]:
        """The kept checkpoints as (epoch, directory) for ``epoch-NNNN/`` and (step, directory) for
        ``step-NNNNNNN/``, oldest first: by that number, or where a run kept both kinds (``--keep-every``
        changed on a resume) by the step each was saved at (an interrupted swap's ``NAME.old`` stands in
        for its missing ``NAME``)."""
        found: dict[str, tuple[int, Path]] = {}
        for d in sorted([*self.path.glob("epoch-*"), *self.path.glob("step-*")]):
            name = d.name.removesuffix(".old")
            m = self.EPOCH_DIR.fullmatch(name) or self.STEP_DIR.fullmatch(name)
            if m is None or not (d / "config.json").exists():
                continue
            if name not in found or found[name][1].name.endswith(".old"):
                found[name] = (int(m[1]), d)
        mixed = len({name[:4] for name in found}) > 1
        return sorted(found.values(), key=lambda kept: (_saved_step(kept[1]) if mixed else 0, kept[0]))

    def _prune(self, keep: int) -> None:
        """Remove all but the newest ``keep`` (>= 1) kept checkpoints."""
        for _, d in self.kept()[:-keep]:
            d = d.with_name(d.name.removesuffix(".old"))
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d.with_name(d.name + ".old"), ignore_errors=True)

    # -- writing ---------------------------------------------------------------------------
    def save(self, model, optimizer, src_tok: Tokenizer, tgt_tok: Tokenizer, train_config: dict,
             state: TrainState, best: bool, progress: EpochProgress | None = None, keep: int = 0,
             by_step: bool = False) -> None:
        """Save last/ (and first best/, when ``best``); ``progress`` for a checkpoint inside an epoch.
        At an epoch's end with ``keep`` > 0, also ``epoch-NNNN/`` (before last/), keeping the newest ``keep``;
        with ``by_step``, ``step-NNNNNNN/`` instead, at an epoch's end or inside one.
        A failure is a CheckpointError; the previous checkpoints stay intact."""
        st = asdict(state) if progress is None else dict(asdict(state), in_epoch=asdict(progress))
        args = (model, optimizer, src_tok, tgt_tok, train_config, st)
        keep = keep if progress is None or by_step else 0
        kept = self.step_dir(state.step) if by_step else self.epoch_dir(state.epoch)
        try:  # best first: a kill in between leaves last/ behind, so the epoch is redone and best/ saved again
            if best:
                save_checkpoint(self.path / "best", *args)
                faults.point("between-best-and-last")
            if keep:
                save_checkpoint(kept, *args)
            save_checkpoint(self.path / "last", *args)
            if keep:
                self._prune(keep)
        except OSError as e:
            raise CheckpointError(f"could not save a checkpoint in {self.path}: {e.strerror or e}. "
                                  "The previous checkpoint is intact.") from None

    def append_metrics(self, row: dict) -> None:
        """Rewrite metrics.jsonl with ``row`` added (atomically); rows of the epochs being redone are dropped."""
        keep = [old for old in self.read_metrics() if not _epoch_at_or_after(old, row["epoch"])]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep + [row]))

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.path / "result.json", json.dumps(result, indent=2) + "\n")
