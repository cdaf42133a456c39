"""Setting a Trainer up: a fresh model and its tokenizers, or a run resumed from its last checkpoint, and
the splits encoded. ``TrainerSetup`` holds these steps of ``attnseq.run.training.Trainer``, which calls
them from ``_set_up``; they read and set the Trainer's own attributes (cfg, run_dir, model, opt,
schedule, budget, counters)."""
from __future__ import annotations

import numpy as np

from . import selection
from ..data.batching import Encoded, encode_pairs
from ..data.corpus import build_tokenizers
from ..nn.layers import Dropout
from ..nn.model import AttentionSeq2seq
from ..nn.optim import build_optimizer
from ..nn.output_length import OutputLengthRule
from .config import model_config
from .train_state import EpochProgress


def dropout_rng(model) -> np.random.Generator:
    return next(m.rng for _, m in model.named_modules() if isinstance(m, Dropout))


class TrainerSetup:
    """The Trainer's setting-up steps (a mixin of ``Trainer``)."""

    def _fit_output_rule(self, train: Encoded) -> None:
        """The longest output the model's decoding allows, fitted to the training split's lengths
        (``OutputLengthRule.fit``); it goes into config.json with the model."""
        self.model.output_len_rule = rule = OutputLengthRule.fit(train.src_len, train.tgt_len - 1)  # - bos
        self.log(f"longest output: {rule.text} tokens for a Ts-token source (fitted to the training split; "
                 f"--max-output-len overrides)")

    def _open_run_dir(self) -> bool:
        """Get --out ready; True when there is a checkpoint to resume from."""
        resuming = self.run_dir.prepare(self.cfg["resume"])
        if self.cfg["resume"] and not resuming:
            self.log(f"note: {self.out} has no checkpoint yet; starting from scratch")
        return resuming

    def _resume(self) -> None:
        """Model, tokenizers, optimizer and counters from the last checkpoint, all checked before any data loads."""
        ck = self.run_dir.load_last(self.cfg["device"])
        self.model, self.src_tok, self.tgt_tok = ck.model, ck.src_tok, ck.tgt_tok
        self.opt = self._build_optimizer()
        state = self.run_dir.restore(ck, self.opt)
        self.epoch, self.step, self.skipped = state.epoch, state.step, state.nonfinite_skipped
        self.best = selection.Best(self.best.by, state.best, state.bad_epochs)
        self.rng.bit_generator.state = state.rng
        dropout_rng(self.model).bit_generator.state = state.dropout_rng
        self.progress = EpochProgress.from_json(ck.state, ck.path / "state.json")
        if state.schedule and state.schedule.get("name") == self.schedule.name:
            self.schedule.load_state_dict(state.schedule)
        if self.budget.active:
            if state.budget is not None:
                self.budget.resume(state.budget)
            self.log(self.budget.resumed_note(state.budget is not None))
        if state.best_metric != self.best.by:
            self.log(self.best.rechoose(state.best_metric, self.run_dir.read_metrics(), self.run_dir.best_epoch()))
        saved = ck.config.get("train")
        self._apply_changed_lr(saved.get("lr") if isinstance(saved, dict) else None)

    def _apply_changed_lr(self, saved) -> None:
        """A --resume with another --lr than the run's: the optimizer takes it now (optimizer.npz
        brought back the old one, which the constant schedule would otherwise keep), said in the log."""
        new = self.cfg["lr"]
        if not isinstance(saved, (int, float)) or saved == new:
            return
        self.opt.lr = new
        self.log(f"note: --lr changed from {saved:g} to {new:g}")

    def _new_model(self, train_pairs) -> None:
        """Tokenizers trained on the training split, a fresh model on cfg's device, and its optimizer."""
        cfg = self.cfg
        self.src_tok, self.tgt_tok = build_tokenizers(cfg, train_pairs)
        self.model = AttentionSeq2seq.from_config(model_config(cfg, self.src_tok.vocab_size, self.tgt_tok.vocab_size))
        if cfg["device"] != "cpu":
            self.model.to(cfg["device"])
        self.opt = self._build_optimizer()

    def _build_optimizer(self):
        cfg = self.cfg
        return build_optimizer(cfg["optimizer"], self.model, cfg["lr"], clip=cfg["clip"],
                               weight_decay=cfg["weight_decay"])

    def _encode(self, pairs, name) -> Encoded:
        """The split as id matrices; the training split's compact (uint16 ids) and without its text."""
        train = name == "train"
        enc = encode_pairs(pairs, self.src_tok, self.tgt_tok, self.cfg["reverse_source"],
                           self.cfg["max_len"] if train else None, keep_pairs=not train, compact=train)
        if enc.dropped:
            self.log(f"note: {enc.dropped} {name} pairs longer than --max-len {self.cfg['max_len']} were left out")
        return enc
