"""The trainer: epochs over the training data, evaluation, checkpoints, metrics, early stopping.

``train(cfg)`` is what ``attnseq train`` and ``scripts/train.py`` call. ``cfg`` is a plain dict
keyed by the options of ``attnseq.run.config`` (``batch_size`` for ``--batch-size``); ``train``
fills in the defaults. Everything on disk goes through ``RunDir``.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import faults
from ..data.batching import Encoded, batch_order, encode_pairs, padding_fraction, take
from ..data.corpus import build_tokenizers, load_data
from ..errors import NonFiniteError
from ..nn.layers import Dropout
from ..nn.model import AttentionSeq2seq
from ..nn.optim import NonFiniteGradient, build_optimizer
from .checkpoint import RunDir, TrainState
from .config import resolve_config
from .evaluation import evaluate
from .parallel import for_training


def _dropout_rng(model) -> np.random.Generator:
    return next(m.rng for _, m in model.named_modules() if isinstance(m, Dropout))


class Trainer:
    """One run's model, optimizer, data and counters; ``run()`` trains to the end.

    ``cfg`` is a resolved config (``resolve_config``). ``run_dir`` is the RunDir of ``cfg["out"]``
    when the caller has one (it keeps the config.json that resolving a ``--resume`` already read).
    """

    def __init__(self, cfg: dict, log=print, run_dir: RunDir | None = None):
        self.cfg, self.log = cfg, log
        self.run_dir = run_dir if run_dir is not None else RunDir(cfg["out"])
        self.out = self.run_dir.path
        self.t_start = time.perf_counter()
        self.rng = np.random.default_rng(cfg["seed"])
        # best/ is chosen by valid exact match, ties broken by lower valid loss
        self.epoch, self.step, self.best, self.bad_epochs, self.skipped = 0, 0, [-1.0, -math.inf], 0, 0
        resuming = self._open_run_dir()
        if resuming:
            self._resume()
        self.data = self._load_data()
        if not resuming:
            self._new_model()
        self.sets = {name: self._encode(pairs, name) for name, pairs in self.data.items() if pairs}
        self.runner = for_training(self.model, cfg["threads"], cfg["batch_size"])  # the model, or row shards on threads
        if resuming:
            self.log(f"resumed {self.out} at epoch {self.epoch}, step {self.step}")

    # -- setting up ------------------------------------------------------------------------
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
        self.epoch, self.step, self.best = state.epoch, state.step, state.best
        self.bad_epochs, self.skipped = state.bad_epochs, state.nonfinite_skipped
        self.rng.bit_generator.state = state.rng
        _dropout_rng(self.model).bit_generator.state = state.dropout_rng

    def _load_data(self) -> dict[str, list]:
        data = load_data(self.cfg)
        if self.cfg["data"] is None and self.cfg["valid"] is None:
            self.log(f"note: no --valid given; {len(data['valid'])} pairs of {self.cfg['train']} held out to validate")
        return data

    def _new_model(self) -> None:
        """Tokenizers trained on the training split, a fresh model on cfg's device, and its optimizer."""
        cfg = self.cfg
        self.src_tok, self.tgt_tok = build_tokenizers(cfg, self.data["train"])
        self.model = AttentionSeq2seq(self.src_tok.vocab_size, self.tgt_tok.vocab_size, cfg["wordvec_size"],
                                      cfg["hidden_size"], dropout=cfg["dropout"], init=cfg["init"],
                                      dtype=cfg["dtype"], seed=cfg["seed"])
        if cfg["device"] != "cpu":
            self.model.to(cfg["device"])
        self.opt = self._build_optimizer()

    def _build_optimizer(self):
        cfg = self.cfg
        return build_optimizer(cfg["optimizer"], self.model, cfg["lr"], clip=cfg["clip"],
                               weight_decay=cfg["weight_decay"])

    def _encode(self, pairs, name) -> Encoded:
        enc = encode_pairs(pairs, self.src_tok, self.tgt_tok, self.cfg["reverse_source"],
                           self.cfg["max_len"] if name == "train" else None)
        if enc.dropped:
            self.log(f"note: {enc.dropped} {name} pairs longer than --max-len {self.cfg['max_len']} were left out")
        return enc

    # -- one epoch ---------------------------------------------------------------------------
    def train_epoch(self) -> dict:
        from tqdm import tqdm
        data, cfg = self.sets["train"], self.cfg
        self.model.train()
        batches = batch_order(data.src_len, cfg["batch_size"], self.rng, cfg["bucket"], cfg["bucket_jitter"],
                              then_by=data.tgt_len)
        pad_frac = padding_fraction(data, batches)
        t0, seen, total_loss, n_loss = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}/{cfg['epochs']}", unit="batch", leave=False,
                   dynamic_ncols=True, disable=None, mininterval=0.5)
        for idx in bar:
            src, tgt = take(data, idx)
            loss = self.runner.forward(src, tgt)
            self.step += 1
            faults.point("train-step")
            if not self._step(loss):
                continue
            total_loss += float(loss)
            n_loss += 1
            seen += len(idx)
            if self.step % 10 == 0:
                bar.set_postfix(loss=f"{total_loss / n_loss:.4f}",
                                samples_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        bar.close()
        dt = time.perf_counter() - t0
        return dict(train_loss=total_loss / max(n_loss, 1), epoch_time_s=dt, samples_per_s=seen / dt,
                    padding_fraction=pad_frac)

    def _step(self, loss) -> bool:
        """Backward and update, unless the loss or the gradient norm is NaN/inf: then stop, or skip the batch."""
        loss_v = float(loss)
        if math.isfinite(loss_v):
            self.runner.backward()
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
        try:
            return self._run()
        finally:
            if self.runner is not self.model:
                self.runner.close()

    def _run(self) -> dict:
        while self.epoch < self.cfg["epochs"]:
            stats = self.train_epoch()
            self.epoch += 1
            valid = self._evaluate(self.model, self.sets["valid"])
            improved = self._track_best(valid)
            row = self._metrics_row(stats, valid)
            self.opt.lr *= self.cfg["lr_decay"]
            self.run_dir.append_metrics(row)
            self.run_dir.save(self.model, self.opt, self.src_tok, self.tgt_tok, dict(self.cfg), self._state(),
                              best=improved)
            self._report(row, valid)
            if self.bad_epochs >= self.cfg["patience"]:
                self.log(f"early stop: no better valid exact match (or loss) for {self.cfg['patience']} epochs")
                break
        return self.finish()

    def _evaluate(self, model, data: Encoded, predictions: bool = True) -> dict:
        scores = evaluate(model, data, self.tgt_tok, self.cfg["eval_batch_size"], bool(self.cfg["bleu"]))
        if not predictions:
            scores.pop("predictions")
        return scores

    def _track_best(self, valid: dict) -> bool:
        """True when this epoch beats best/ (exact match, then loss); counts the epochs that do not."""
        score = [valid["exact_match"], -valid["loss"]]
        if score > self.best:
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    def _metrics_row(self, stats: dict, valid: dict) -> dict:
        """One metrics.jsonl row: the epoch's training stats, valid (and test) scores, lr before decay."""
        row = dict(epoch=self.epoch, step=self.step, **stats, lr=self.opt.lr,
                   **{f"valid_{k}": v for k, v in valid.items() if k != "predictions"},
                   nonfinite_skipped=self.skipped, elapsed_s=time.perf_counter() - self.t_start)
        if "test" in self.sets:
            t0 = time.perf_counter()
            test = self._evaluate(self.model, self.sets["test"], predictions=False)
            row.update({f"test_{k}": v for k, v in test.items()}, test_eval_s=time.perf_counter() - t0)
        return row

    def _state(self) -> TrainState:
        return TrainState(epoch=self.epoch, step=self.step, best=self.best, bad_epochs=self.bad_epochs,
                          nonfinite_skipped=self.skipped, rng=self.rng.bit_generator.state,
                          dropout_rng=_dropout_rng(self.model).bit_generator.state)

    def _report(self, row: dict, valid: dict) -> None:
        line = (f"epoch {row['epoch']}/{self.cfg['epochs']}  loss {row['train_loss']:.4f}  "
                f"valid: loss {row['valid_loss']:.4f}  tok acc {100 * row['valid_token_accuracy']:.2f}%  "
                f"exact {100 * row['valid_exact_match']:.2f}%")
        if "valid_bleu" in row:
            line += f"  BLEU {row['valid_bleu']:.1f}"
        if "test_exact_match" in row:
            line += f"  | test exact {100 * row['test_exact_match']:.2f}%"
        line += f"  ({row['epoch_time_s']:.1f} s, {row['samples_per_s']:.0f} samples/s)"
        self.log(line)
        pairs = self.sets["valid"].pairs
        for k in range(min(self.cfg["examples"], len(pairs))):
            src, ref = pairs[k]
            hyp = valid["predictions"][k]
            ok = hyp == self.tgt_tok.decode(self.tgt_tok.encode(ref))
            self.log(f"  {'✓' if ok else '✗'} {src} → {hyp}" + ("" if ok else f"   (want {ref})"))

    # -- the end -------------------------------------------------------------------------------
    def finish(self) -> dict:
        """Evaluate ``best/`` on the test split (if any), write result.json and return the final metrics."""
        result = dict(run=str(self.out), epochs=self.epoch, steps=self.step, best_valid_exact_match=self.best[0],
                      wall_s=time.perf_counter() - self.t_start, examples=self.sets["valid"].pairs[:4])
        if "test" in self.sets:
            result.update(self._test_best())
        self.run_dir.write_result(result)
        return result

    def _test_best(self) -> dict:
        """{"test": ..., "test_long": ...} of best/: the test split, and its sources longer than any in train."""
        best = self.run_dir.load_best(self.cfg["device"])
        t0 = time.perf_counter()
        test = self._evaluate(best.model, self.sets["test"], predictions=False)
        out = {"test": dict(test, eval_s=time.perf_counter() - t0)}
        msg = (f"test ({test['n']} pairs, best/): exact {100 * test['exact_match']:.2f}%  "
               f"tok acc {100 * test['token_accuracy']:.2f}%  loss {test['loss']:.4f}")
        if "bleu" in test:
            msg += f"  BLEU {test['bleu']:.1f}  chrF {test['chrf']:.1f}"
        self.log(msg)
        test_long = self._test_long()
        if test_long is not None:
            lm = out["test_long"] = self._evaluate(best.model, test_long, predictions=False)
            self.log(f"test, sources longer than any in train ({lm['n']} pairs): exact "
                     f"{100 * lm['exact_match']:.2f}%" + (f"  BLEU {lm['bleu']:.1f}" if "bleu" in lm else ""))
        return out

    def _test_long(self) -> Encoded | None:
        """Test pairs whose source is longer (in tokens) than every training source, if there are any."""
        test, longest = self.sets["test"], int(self.sets["train"].src_len.max())
        keep = [p for p, n in zip(test.pairs, test.src_len) if n > longest]
        if not keep:
            return None
        return encode_pairs(keep, self.src_tok, self.tgt_tok, self.cfg["reverse_source"])


def train(cfg: dict, log=print) -> dict:
    """Train from a config dict (keys: ``attnseq.run.config.OPTIONS``); returns the final metrics."""
    out = cfg.get("out")
    run_dir = RunDir(out) if isinstance(out, str) else None     # shared, so a --resume reads config.json once
    return Trainer(resolve_config(cfg, run_dir), log, run_dir).run()
