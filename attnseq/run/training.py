"""The trainer: the loop over epochs and steps, with the valid split scored and checkpoints saved at epoch ends.

``train(cfg)`` is what ``attnseq train`` and ``scripts/train.py`` call. ``cfg`` is a plain dict keyed by
the options of ``attnseq.run.config`` (``batch_size`` for ``--batch-size``); ``train`` fills in the
defaults, and on ``--resume`` the run's saved options. Around the loop, each in its module: the run
directory and its lock (``rundir``), state.json (``train_state``), best/ and ``--patience``
(``selection``), the lr (``schedules``), signals (``stopping``), ``--max-minutes`` (``budget``: the run's
last step, which the lr schedule anneals to), the log lines (``report``), what is recorded besides
checkpoints (``tracking``: the attention of a few valid examples across training, TensorBoard) and the
end of the run, where the test split is scored once (``finish``).

Long runs: ``--save-every`` also saves ``last/`` inside an epoch, with how far into the epoch's batch
order it is (``EpochProgress``), so ``--resume`` continues from that step and ends exactly where an
uninterrupted run would. A stop signal finishes the current step, saves ``last/`` and raises
``TrainingStopped`` (the CLI exits 130 or 143).

Started by ``mpiexec`` as several ranks, the Trainer of each rank asks its group (``distributed``: who owns
the run directory, what runs a step, rank 0's clock, the stop signals, the valid split in parts); alone,
every answer is what one process does.
"""
from __future__ import annotations

import math
import shlex
import time
from pathlib import Path

import numpy as np

from . import distributed, faults, report, selection
from ..data.batching import Encoded, batch_order, padding_fraction, take
from ..data.corpus import load_data
from ..errors import NonFiniteError, TrainingStopped
from ..nn.optim import NonFiniteGradient
from ..nn.output_length import OutputLengthRule
from .budget import TimeBudget
from .config import resolve_config, save_interval
from .evaluation import evaluate, normalized_refs
from .finish import EndOfRun
from .parallel import DataParallel
from .rundir import RunDir
from .schedules import build_schedule
from .stopping import StopSignals
from .tracking import Tracking, require
from .train_state import EpochProgress, TrainState
from .trainer_setup import TrainerSetup, dropout_rng


class Trainer(TrainerSetup):
    """One run's model, optimizer, data and counters; ``run()`` trains to the end.

    ``cfg`` is a resolved config (``resolve_config``). ``run_dir`` is the RunDir of ``cfg["out"]``
    when the caller has one (it keeps the config.json that ``saved_options`` already read for a ``--resume``).
    Building a Trainer takes the run directory's lock (a ConfigError if another trainer holds it);
    ``run()`` releases it, whatever happens. ``group``: the processes it trains with
    (``distributed.SOLO``, or an MPI job's ranks: ``attnseq.run.ranks``).
    """

    def __init__(self, cfg: dict, log=print, run_dir: RunDir | None = None, group=None, clock=None):
        require(cfg)                                    # --tensorboard without its extra: one line, nothing written
        self.cfg, self.log = cfg, log
        self.group = group if group is not None else distributed.SOLO
        self.budget = TimeBudget(cfg["max_minutes"], clock or time.perf_counter)   # clock: tests pass their own
        self.run_dir = run_dir if run_dir is not None else RunDir(cfg["out"])
        self.out = self.run_dir.path
        self.t_start = time.perf_counter()
        self.rng = np.random.default_rng(cfg["seed"])
        self.epoch, self.step, self.skipped = 0, 0, 0
        self.best = selection.Best(cfg["select_by"])    # best/'s score by --select-by, and the epochs since
        self.schedule = build_schedule(cfg)
        self.progress: EpochProgress | None = None      # a mid-epoch checkpoint's, until its epoch resumes
        self.save_every = save_interval(cfg["save_every"])
        self.stopped_by: str | None = None
        self.stop, self.runner = StopSignals(), None
        self.tracking = Tracking()                      # attention history, TensorBoard (run/tracking.py)
        self.run_dir.lock()                             # released by run(), or here if setting up fails
        try:
            self._set_up()
        except BaseException:
            self.run_dir.unlock()
            raise

    # -- setting up (the steps: ``TrainerSetup``, in trainer_setup.py) ------------------------------------
    def _set_up(self) -> None:
        resuming = self._open_run_dir()
        if resuming:
            self._resume()
        data = self._load_data()
        if not resuming:
            self._new_model(data["train"])
        self.sets = {name: self._encode(pairs, name) for name, pairs in data.items() if pairs}
        if not resuming:                                # a resumed model keeps its checkpoint's rule
            self._fit_output_rule(self.sets["train"])
        del data                                        # the pairs' text lives on only in valid's and test's Encoded
        self.runner = self.group.runner(self.model, self.cfg["threads"], self.cfg["batch_size"])  # model or shards
        if resuming:
            where = f", batch {self.progress.batches_done} of epoch {self.epoch + 1}" if self.progress else ""
            self.log(f"resumed {self.out} at epoch {self.epoch}, step {self.step}{where}")
        if self.group.is_root:                          # rank 0 alone records; the others' directory is gone
            self.tracking = Tracking.start(self.cfg, self.out, self.sets["valid"], self.src_tok, self.tgt_tok,
                                           self.step, self.log)
        self.budget.setup_done()
        self.last_save = time.perf_counter()

    def _load_data(self) -> dict[str, list]:
        data = load_data(self.cfg)
        if self.cfg["data"] is None and self.cfg["valid"] is None:
            self.log(f"note: no --valid given; {len(data['valid'])} pairs of {self.cfg['train']} held out to validate")
        return data

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        """One pass over the training data in a fresh batch order, or the rest of a resumed epoch's."""
        data, cfg = self.sets["train"], self.cfg
        self.model.train()
        self.epoch_rng = self.rng.bit_generator.state   # the epoch's batch order is drawn from this state
        batches = batch_order(data.src_len, cfg["batch_size"], self.rng, cfg["bucket"], cfg["bucket_jitter"],
                              then_by=data.tgt_len)
        self.schedule.total_steps = cfg["epochs"] * len(batches)
        progress = self._epoch_progress(len(batches))
        self.batches = len(batches)
        t0, time_before = time.perf_counter(), progress.time_s
        bar = report.EpochBar(len(batches), progress.batches_done, f"epoch {self.epoch + 1}/{cfg['epochs']}",
                              show=None if self.group.is_root else False)
        for idx in batches[progress.batches_done:]:
            self._plan(progress.batches_done)
            self._train_batch(data, idx, progress)
            progress.batches_done += 1
            progress.time_s = time_before + time.perf_counter() - t0
            bar.update(self.step, progress)
            if self._budget_ended():
                break
            self._between_steps(progress)
        bar.close()
        dt = max(progress.time_s, 1e-9)
        return dict(train_loss=progress.loss_sum / max(progress.loss_batches, 1), epoch_time_s=dt,
                    samples_per_s=progress.samples / dt, padding_fraction=padding_fraction(data, batches))

    def _epoch_progress(self, n_batches: int) -> EpochProgress:
        """Zero sums for a new epoch, or the sums of the mid-epoch checkpoint being resumed."""
        cfg, progress, self.progress = self.cfg, self.progress, None
        if progress is not None and not progress.order_matches(n_batches, cfg):
            self.log(f"note: --batch-size, --bucket or --bucket-jitter changed since the checkpoint, "
                     f"{progress.batches_done} batches into epoch {self.epoch + 1}; that epoch starts over "
                     "in a new batch order")
            progress = None
        if progress is None:
            progress = EpochProgress(batches=n_batches, batch_size=cfg["batch_size"], bucket=cfg["bucket"],
                                     bucket_jitter=cfg["bucket_jitter"])
        return progress

    def _train_batch(self, data: Encoded, idx, progress: EpochProgress) -> None:
        """Forward, backward and update on rows ``idx``; its loss and pairs join ``progress``'s sums."""
        src, tgt = take(data, idx)
        loss = self.runner.forward(src, tgt)
        self.step += 1
        self.budget.step_done()
        faults.point("train-step")
        if self._step(loss):
            progress.loss_sum += float(loss)
            progress.loss_batches += 1
            progress.samples += len(idx)
            self.tracking.step(self.model, self.step, float(loss), self.opt.lr,
                               self.epoch + (progress.batches_done + 1) / progress.batches)

    def _plan(self, done: int) -> None:
        """Before each step: the run's last step, which the lr schedule anneals to: with --max-minutes
        the budget's estimate (``TimeBudget.last_step``; ``done`` batches of this epoch trained) by rank 0's
        clock, the same on every rank (so they set the same lr and stop at the same step), else --epochs'."""
        cap = self.cfg["epochs"] * self.batches
        self.schedule.total_steps = (self.group.root_decides(self.budget.last_step, self.step, done, self.batches, cap)
                                     if self.budget.active else cap)

    def _budget_ended(self) -> bool:
        """Whether the step just taken is the budget's last (the epoch then ends there)."""
        if self.budget.ended(self.step, self.schedule.total_steps, self.cfg["epochs"] * self.batches):
            self.stopped_by = "max_minutes"
        return self.stopped_by is not None

    def _keep_due(self) -> bool:
        """--keep-every N: whether this step is a multiple of N within the run's last K·N steps (K = --keep-last)."""
        n = self.cfg["keep_every"]
        return n > 0 and self.step % n == 0 and self.step > self.schedule.total_steps - self.cfg["keep_last"] * n

    def _between_steps(self, progress: EpochProgress) -> None:
        """Save last/ when --save-every says so (and a kept step checkpoint when --keep-every does); on a stop
        signal, save it and raise TrainingStopped."""
        stopping = self._stopping()
        more = progress.batches_done < progress.batches        # else the epoch's end saves at once
        keep = more and self._keep_due()
        if stopping or (more and (self._save_due() or keep)):
            self._save(progress=progress, keep_step=keep)
            faults.point("mid-epoch-saved")
        if stopping:
            raise self._stopped(mid_epoch=True)

    def _save_due(self) -> bool:
        if self.save_every is None:
            return False
        kind, every = self.save_every
        if kind == "steps":
            return self.step % every == 0
        return self.group.root_clock(time.perf_counter() - self.last_save >= every)    # rank 0's clock decides

    def _stopping(self, now: bool = False) -> bool:
        """Whether SIGINT or SIGTERM came (to any rank of the group: as the last step carried them, or
        ``now``, at an epoch's end, asking them all); ``self.stop.signum`` is then the signal."""
        signum = (self.group.signal_now if now else self.group.step_signal)(self.stop.signum)
        if signum is not None:
            self.stop.signum = signum
        return signum is not None

    def _step(self, loss) -> bool:
        """Backward and update, unless the loss or the gradient norm is NaN/inf: then stop, or skip the batch."""
        loss_v = float(loss)
        if math.isfinite(loss_v):
            self.runner.backward()
            self.schedule.before_step(self.opt, self.step)
            try:
                self.opt.step()                 # FiniteGuard raises before any parameter changes
                return True
            except NonFiniteGradient as e:
                what = f"gradient norm is {e.args[0]}"
        else:
            what = f"loss is {loss_v}"
        if self.cfg["skip_nonfinite"]:
            self.skipped += 1
            self.log(f"warning: step {self.step}: {what}; batch skipped ({self.skipped} so far)")
            return False
        raise NonFiniteError(f"step {self.step} (epoch {self.epoch + 1}): {what}. Training stopped; the last "
                             f"good checkpoint in {self.out} is untouched. Try a lower --lr or --clip, "
                             "or --skip-nonfinite")

    # -- epochs, evaluation, checkpoints ----------------------------------------------------
    def run(self) -> dict:
        """Train to the last epoch (or an early stop), then ``finish``. Releases the run directory's lock."""
        try:
            with self.stop:
                self._run_epochs()
            self.group.alone()                          # the end is rank 0's alone; the others return None
            return self.finish() if self.group.is_root else None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the runner's threads, close the attention tracking and release the run directory's lock."""
        if self.runner is not None and self.runner is not self.model:
            self.runner.close()
        self.tracking.close()
        self.run_dir.unlock()

    def _run_epochs(self) -> None:
        cfg = self.cfg
        while self.epoch < cfg["epochs"] and self.best.bad_epochs < cfg["patience"] and self.stopped_by is None:
            stats = self.train_epoch()
            self.epoch += 1
            if isinstance(self.runner, DataParallel):
                self.runner.release()                               # its scratch memory, while evaluating
            self.budget.eval_started()
            valid = self._evaluate(self.model, self.sets["valid"], together=True)
            self.budget.eval_done()
            improved = self.best.update(valid)
            row = self._metrics_row(stats, valid)
            self.tracking.validated(self.model, self.epoch, self.step, row)
            note = self.schedule.epoch_end(self.opt, improved)     # --lr-decay, or plateau's cut
            self.run_dir.append_metrics(row)
            ending = self.epoch >= cfg["epochs"] or self.best.bad_epochs >= cfg["patience"] or bool(self.stopped_by)
            self._save(best=improved, keep_step=ending or self._keep_due())
            self._report(row, valid)
            if note:
                self.log(note)
            if self.budget.active:
                self.log(self.budget.note(self.schedule.total_steps, self.batches))
            if self.best.bad_epochs >= cfg["patience"]:
                tie = "" if self.best.by == "loss" else " (or loss)"
                self.log(f"early stop: no better {selection.NAMES[self.best.by]}{tie} for {cfg['patience']} epochs")
            if self._stopping(now=True):
                raise self._stopped(mid_epoch=False)

    def _save(self, best: bool = False, progress: EpochProgress | None = None, keep_step: bool = False) -> None:
        """last/ (and best/, and with --keep-last epoch-NNNN/, or with --keep-every and ``keep_step``
        step-NNNNNNN/): at an epoch's end, or inside one with ``progress`` (state.rng: the epoch's start). The
        tracked attention and TensorBoard go to disk first."""
        self.tracking.persist()
        by_step = self.cfg["keep_every"] > 0
        keep = self.cfg["keep_last"] if keep_step or not by_step else 0
        self.run_dir.save(self.model, self.opt, self.src_tok, self.tgt_tok, dict(self.cfg),
                          self._state(mid_epoch=progress is not None), best=best, progress=progress,
                          keep=keep, by_step=by_step)
        self.last_save = time.perf_counter()

    def _stopped(self, mid_epoch: bool) -> TrainingStopped:
        """The stop after a signal, last/ saved: one line saying where, and how to resume."""
        where = f"in epoch {self.epoch + 1} at step {self.step}" if mid_epoch else \
            f"after epoch {self.epoch} (step {self.step})"
        return TrainingStopped(f"stopped {where}; checkpoint in {self.out / 'last'} — resume with: "
                               f"attnseq train --out {shlex.quote(str(self.out))} --resume", self.stop.signum)

    def _evaluate(self, model, data: Encoded, predictions: bool = True, together: bool = False) -> dict:
        """``evaluate``'s scores; ``together``: by every rank of the group (if more than one), each scoring a part."""
        bleu = bool(self.cfg["bleu"]) or self.best.by == "bleu"
        limit = self.cfg["max_output_len"]                 # None: the model's own rule
        scores = (self.group.evaluate if together and self.group.size > 1 else evaluate)(
            model, data, self.tgt_tok, self.cfg["eval_batch_size"], bleu,
            max_len=OutputLengthRule.parse(limit) if limit else None)
        if not predictions:
            scores.pop("predictions")
        return scores

    def _metrics_row(self, stats: dict, valid: dict) -> dict:
        """One metrics.jsonl row: the epoch's training stats, valid scores, lr before decay (no test
        scores: the test split is scored once, at the end, on what validation chose)."""
        return dict(epoch=self.epoch, step=self.step, **stats, lr=self.opt.lr,
                    **{f"valid_{k}": v for k, v in valid.items() if k != "predictions"},
                    nonfinite_skipped=self.skipped, elapsed_s=time.perf_counter() - self.t_start)

    def snapshot(self, directory: Path) -> Path:
        """Where the run stands (model, optimizer, tokenizers, counters, random states, a resumed epoch's
        progress) as the checkpoint ``directory/last``, which a Trainer resumes from: the start rank 0 of
        an MPI job sends the others. -> that checkpoint's directory."""
        self.opt.init_state()                           # a run that has not trained yet: its zeros
        RunDir(directory).save(self.model, self.opt, self.src_tok, self.tgt_tok, dict(self.cfg), self._state(),
                               best=False, progress=self.progress)
        return Path(directory) / "last"

    def _state(self, mid_epoch: bool = False) -> TrainState:
        rng = self.epoch_rng if mid_epoch else self.rng.bit_generator.state
        return TrainState(epoch=self.epoch, step=self.step, best=self.best.score, bad_epochs=self.best.bad_epochs,
                          nonfinite_skipped=self.skipped, rng=rng,
                          dropout_rng=dropout_rng(self.model).bit_generator.state,
                          best_metric=self.best.by, schedule=self.schedule.state_dict(),
                          budget=self.budget.snapshot())

    def _report(self, row: dict, valid: dict) -> None:
        pairs = self.sets["valid"].pairs[:self.cfg["examples"]]
        wanted = normalized_refs(self.tgt_tok, [ref for _, ref in pairs])
        examples = [(src, ref, want, hyp) for (src, ref), want, hyp in zip(pairs, wanted, valid["predictions"])]
        for line in report.epoch_lines(row, self.cfg["epochs"], examples):
            self.log(line)

    # -- the end -------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Score best/ (and averaged/) on the test split, once (``EndOfRun``); write result.json and return it."""
        result = dict(run=str(self.out), epochs=self.epoch, steps=self.step, select_by=self.best.by,
                      **self.best.value(), wall_s=time.perf_counter() - self.t_start,
                      examples=self.sets["valid"].pairs[:4])
        if self.stopped_by is not None:
            result["stopped"] = self.stopped_by
        end = EndOfRun(self.cfg, self.run_dir, self.sets, self.src_tok, self.tgt_tok,
                       lambda model, data: self._evaluate(model, data, predictions=False), self.log)
        result.update(end.scores(self.best))
        self.run_dir.write_result(result)
        return result


def train(cfg: dict, log=print) -> dict:
    """Train from a config dict (keys: ``attnseq.run.config.OPTIONS``); returns the final metrics.

    Called from the main thread, SIGINT and SIGTERM stop it gracefully meanwhile (``TrainingStopped``,
    last/ saved); the caller's own handlers are back when it returns or raises. Started by ``mpiexec``
    with several ranks, every rank calls it and they train as one run (``attnseq.run.ranks``): rank 0
    returns the metrics, the others None.
    """
    group = distributed.world()                                # SOLO, unless mpiexec started several ranks
    if group.size > 1:
        return group.train(cfg, log, Trainer)                   # the result on rank 0, None on the others
    out = cfg.get("out")
    run_dir = RunDir(out) if isinstance(out, str) else None     # shared, so a --resume reads config.json once
    saved = run_dir.saved_options() if run_dir is not None and cfg.get("resume") else None
    return Trainer(resolve_config(cfg, saved), log, run_dir).run()
