"""The training pipeline: data, tokenizers, model, optimizer, epochs, checkpoints, metrics.

``train(config)`` is what ``attnseq train`` and ``scripts/train.py`` call. The
config is a plain dict whose keys are the CLI flags with underscores
(``batch_size`` for ``--batch-size``); ``resolve_config`` fills in defaults.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from . import faults
from ..nn.backend import check_device
from ..data.batching import Encoded, batch_order, encode_pairs, padding_fraction, take
from .checkpoint import check_arrays, load_checkpoint, load_checkpoint_config, resolve, save_checkpoint
from ..data.corpus import build_tokenizers, load_data
from ..errors import CheckpointError, ConfigError, NonFiniteError
from .evaluation import EVAL_BATCH_SIZE, evaluate
from ..data.io import atomic_write_text
from ..nn.layers import Dropout
from ..nn.model import AttentionSeq2seq
from ..nn.optim import OPTIMIZERS, ClipGradNorm, WeightDecay, global_norm
from .parallel import for_training

DEFAULTS = dict(
    data=None, train=None, valid=None, test=None, source_lang=None, target_lang=None, out=None,
    epochs=10, batch_size=128, wordvec_size=16, hidden_size=256, optimizer="adam", lr=1e-3,
    clip=5.0, dropout=0.0, weight_decay=0.0, lr_decay=1.0, patience=3, seed=0, device="cpu", threads=0,
    dtype="float32", init="xavier", reverse_source=False, bucket=True, bucket_jitter=0.0, tokenizer=None,
    vocab_size=8000, shared_vocab=False, max_len=None, eval_batch_size=EVAL_BATCH_SIZE, examples=3,
    skip_nonfinite=False, resume=False, quick=False, bleu=None, swap_sides=False,
)
# What a built-in task changes; `quick` trades epochs for a newcomer's first few minutes.
TASK_DEFAULTS = {
    # date: lengths track the date's style, so pure length buckets hold one style each; jitter mixes them
    "date": dict(epochs=6, lr=3e-3, tokenizer="char", bleu=False, bucket_jitter=8.0),
    "addition": dict(epochs=30, lr=3e-3, lr_decay=0.95, batch_size=64, patience=6, tokenizer="char", bleu=False),
    "toy-en-ko": dict(epochs=8, tokenizer="sentencepiece", vocab_size=1000, wordvec_size=128,
                      lr=2e-3, batch_size=64, patience=3, bleu=True, max_len=60),
    # any other parallel corpus (--data DIR or --train FILE): subwords, BLEU
    "corpus": dict(epochs=20, tokenizer="sentencepiece", vocab_size=8000, wordvec_size=128, lr=2e-3,
                   batch_size=64, patience=4, bleu=True, max_len=100),
}
QUICK_EPOCHS = {"date": 2}      # --quick: a newcomer's first look; 3 epochs elsewhere
NON_RESUMABLE = ("data", "train", "valid", "test", "swap_sides", "tokenizer", "vocab_size", "shared_vocab", "wordvec_size",
                 "hidden_size", "dtype", "init", "reverse_source", "seed", "optimizer", "max_len")


def resolve_config(cfg: dict) -> dict:
    """Defaults, then the built-in task's defaults, then what the user set (keys not None)."""
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    user = {k: v for k, v in cfg.items() if v is not None}
    if user.get("resume") and user.get("out"):
        user = _with_saved_config(user)
    out = dict(DEFAULTS)
    task = user.get("data")
    out.update(TASK_DEFAULTS.get(task if task in TASK_DEFAULTS else "corpus"))
    if user.get("quick"):
        out["epochs"] = QUICK_EPOCHS.get(task, 3)
    out.update(user)
    if out["out"] is None:
        raise ConfigError("--out RUN_DIR is required")
    if out["data"] is None and out["train"] is None:
        raise ConfigError("give --data NAME|DIR, or --train FILE (with --valid FILE)")
    if out["data"] is not None and out["train"] is not None:
        raise ConfigError("--data and --train are alternatives; give one")
    if out["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {out['optimizer']!r}")
    for key in ("epochs", "batch_size", "wordvec_size", "hidden_size", "eval_batch_size", "vocab_size"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer, got {out[key]!r}")
    if not isinstance(out["threads"], int) or out["threads"] < 0:
        raise ConfigError(f"--threads must be 0 (one per core) or a positive integer, got {out['threads']!r}")
    if not (isinstance(out["lr"], (int, float)) and out["lr"] > 0):
        raise ConfigError(f"--lr must be positive, got {out['lr']!r}")
    if not 0 <= out["dropout"] < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {out['dropout']}")
    if out["tokenizer"] not in (None, "char", "word", "sentencepiece"):
        raise ConfigError(f"--tokenizer must be char, word or sentencepiece, got {out['tokenizer']!r}")
    check_device(out["device"])
    return out


def _with_saved_config(user: dict) -> dict:
    """For --resume: options not given now come from the run being resumed; data and model ones must agree."""
    try:
        saved = load_checkpoint_config(resolve(user["out"], prefer="last"))["train"]
    except (CheckpointError, KeyError, TypeError):
        return user                     # nothing to resume (yet): a fresh start, or Trainer reports it
    changed = [k for k in NON_RESUMABLE if k in user and k in saved and user[k] != saved[k]]
    if changed:
        raise ConfigError(f"--resume: {', '.join('--' + k.replace('_', '-') for k in changed)} differ from the run "
                          f"in {user['out']}; resume with the same options or start a new --out")
    return {**{k: v for k, v in saved.items() if k in DEFAULTS and v is not None}, **user}


# -- the loop ---------------------------------------------------------------------------
def _dropout_rng(model) -> np.random.Generator:
    return next(m.rng for _, m in model.named_modules() if isinstance(m, Dropout))


class _NonFiniteGradient(Exception):
    pass


class FiniteGuard:
    """Optimizer hook, run last: stops the update when the gradient norm is NaN or inf.

    It reuses the norm ClipGradNorm just computed (or computes it when there is no clipping).
    """

    def __init__(self, clip: ClipGradNorm | None):
        self.clip = clip

    def __call__(self, params, grads):
        norm = self.clip.last_norm if self.clip is not None else global_norm(grads)
        if not math.isfinite(float(norm)):
            raise _NonFiniteGradient(float(norm))


def make_optimizer(cfg, model):
    hooks = []
    if cfg["weight_decay"]:
        hooks.append(WeightDecay(cfg["weight_decay"]))
    clip = ClipGradNorm(cfg["clip"]) if cfg["clip"] and cfg["clip"] > 0 else None
    if clip is not None:
        hooks.append(clip)
    hooks.append(FiniteGuard(clip))
    return OPTIMIZERS[cfg["optimizer"]](model, lr=cfg["lr"], hooks=hooks)


class Trainer:
    """Holds one run's model, optimizer, data and counters; ``run()`` trains to the end."""

    def __init__(self, cfg: dict, log=print):
        self.log = log
        self.out = Path(cfg["out"])
        self.t_start = time.perf_counter()
        resume_from = self._prepare_out_dir(cfg)
        ck = None if resume_from is None else load_checkpoint(resume_from, device=cfg["device"], with_optimizer=True)
        self.cfg = cfg
        self.data = load_data(cfg)
        if cfg["data"] is None and cfg["valid"] is None:
            self.log(f"note: no --valid given; {len(self.data['valid'])} pairs of {cfg['train']} held out to validate")
        if ck is not None:
            self.model, self.src_tok, self.tgt_tok = ck.model, ck.src_tok, ck.tgt_tok
        else:
            self._new_model(cfg)
        self.sets = {name: self._encode(pairs, name) for name, pairs in self.data.items() if pairs}
        self.opt = make_optimizer(cfg, self.model)
        self.runner = for_training(self.model, cfg["threads"], cfg["batch_size"])    # the model, or row shards on threads
        self.rng = np.random.default_rng(cfg["seed"])
        # best/ is chosen by valid exact match, ties broken by lower valid loss
        self.epoch, self.step, self.best, self.bad_epochs, self.skipped = 0, 0, [-1.0, -math.inf], 0, 0
        if ck is not None:
            self._restore(ck)

    def _new_model(self, cfg) -> None:
        """Tokenizers trained on the training split, and a fresh model on cfg's device."""
        self.src_tok, self.tgt_tok = build_tokenizers(cfg, self.data["train"])
        self.model = AttentionSeq2seq(self.src_tok.vocab_size, self.tgt_tok.vocab_size, cfg["wordvec_size"],
                                      cfg["hidden_size"], dropout=cfg["dropout"], init=cfg["init"],
                                      dtype=cfg["dtype"], seed=cfg["seed"])
        if cfg["device"] != "cpu":
            self.model.to(cfg["device"])

    def _prepare_out_dir(self, cfg) -> Path | None:
        out = self.out
        has_ckpt = any((out / n / "config.json").exists() for n in ("last", "last.old", "best", "best.old"))
        if has_ckpt and not cfg["resume"]:
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot write there ({e.strerror or e})") from None
        for stale in out.glob(".*.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if cfg["resume"] and has_ckpt:
            return resolve(out, prefer="last")
        if cfg["resume"]:
            self.log(f"note: {out} has no checkpoint yet; starting from scratch")
        return None

    def _encode(self, pairs, name) -> Encoded:
        enc = encode_pairs(pairs, self.src_tok, self.tgt_tok, self.cfg["reverse_source"],
                           self.cfg["max_len"] if name == "train" else None)
        if enc.dropped:
            self.log(f"note: {enc.dropped} {name} pairs longer than --max-len {self.cfg['max_len']} were left out")
        return enc

    def _restore(self, ck) -> None:
        check_arrays(ck.path / "optimizer.npz", ck.optimizer, self.opt.expected_arrays())
        self.opt.load_state_dict(ck.optimizer)
        st = ck.state
        try:
            self.epoch, self.step, self.best = int(st["epoch"]), int(st["step"]), list(st["best"])
            self.bad_epochs, self.skipped = int(st["bad_epochs"]), int(st.get("nonfinite_skipped", 0))
            self.rng.bit_generator.state = st["rng"]
            _dropout_rng(self.model).bit_generator.state = st["dropout_rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{ck.path / 'state.json'}: missing or malformed field ({e!r}); "
                                  "cannot resume from it") from None
        self.log(f"resumed {self.out} at epoch {self.epoch}, step {self.step}")

    # -- one epoch -------------------------------------------------------------------
    def train_epoch(self) -> dict:
        from tqdm import tqdm
        data, cfg, model = self.sets["train"], self.cfg, self.model
        model.train()
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
            except _NonFiniteGradient as e:
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
        cfg = self.cfg
        while self.epoch < cfg["epochs"]:
            stats = self.train_epoch()
            self.epoch += 1
            valid = evaluate(self.model, self.sets["valid"], self.tgt_tok, cfg["eval_batch_size"], bool(cfg["bleu"]))
            score = [valid["exact_match"], -valid["loss"]]
            improved = score > self.best
            if improved:
                self.best, self.bad_epochs = score, 0
            else:
                self.bad_epochs += 1
            row = dict(epoch=self.epoch, step=self.step, **stats, lr=self.opt.lr,
                       **{f"valid_{k}": v for k, v in valid.items() if k != "predictions"},
                       nonfinite_skipped=self.skipped, elapsed_s=time.perf_counter() - self.t_start)
            if "test" in self.sets:
                t0 = time.perf_counter()
                test = evaluate(self.model, self.sets["test"], self.tgt_tok, cfg["eval_batch_size"], bool(cfg["bleu"]))
                row.update({f"test_{k}": v for k, v in test.items() if k != "predictions"},
                           test_eval_s=time.perf_counter() - t0)
            self.opt.lr *= cfg["lr_decay"]
            self._append_metrics(row)
            self._save(improved)
            self._report(row, valid)
            if self.bad_epochs >= cfg["patience"]:
                self.log(f"early stop: no better valid exact match (or loss) for {cfg['patience']} epochs")
                break
        return self.finish()

    def _state(self) -> dict:
        return dict(epoch=self.epoch, step=self.step, best=self.best, bad_epochs=self.bad_epochs,
                    nonfinite_skipped=self.skipped, rng=self.rng.bit_generator.state,
                    dropout_rng=_dropout_rng(self.model).bit_generator.state)

    def _save(self, improved: bool) -> None:
        cfg = {k: v for k, v in self.cfg.items()}
        state = self._state()
        try:  # best first: a kill in between leaves last/ behind, so the epoch is redone and best/ saved again
            if improved:
                save_checkpoint(self.out / "best", self.model, self.opt, self.src_tok, self.tgt_tok, cfg, state)
                faults.point("between-best-and-last")
            save_checkpoint(self.out / "last", self.model, self.opt, self.src_tok, self.tgt_tok, cfg, state)
        except OSError as e:
            raise CheckpointError(f"could not save a checkpoint in {self.out}: {e.strerror or e}. "
                                  "The previous checkpoint is intact.") from None

    def _append_metrics(self, row: dict) -> None:
        """Rewrite metrics.jsonl with this row added (atomically); rows of epochs being redone are dropped."""
        path = self.out / "metrics.jsonl"
        rows = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    old = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if old.get("epoch", 0) < row["epoch"]:
                    rows.append(line)
        rows.append(json.dumps(row))
        atomic_write_text(path, "\n".join(rows) + "\n")

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

    def finish(self) -> dict:
        """Evaluate ``best/`` on the test split (if any) and return the final metrics."""
        result = dict(run=str(self.out), epochs=self.epoch, steps=self.step, best_valid_exact_match=self.best[0],
                      wall_s=time.perf_counter() - self.t_start, examples=self.sets["valid"].pairs[:4])
        if "test" in self.sets:
            best = load_checkpoint(self.out, device=self.cfg["device"])
            t0 = time.perf_counter()
            test = evaluate(best.model, self.sets["test"], self.tgt_tok, self.cfg["eval_batch_size"],
                            bool(self.cfg["bleu"]))
            test.pop("predictions")
            result["test"] = dict(test, eval_s=time.perf_counter() - t0)
            test_long = self._test_long()
            if test_long is not None:
                long_m = evaluate(best.model, test_long, self.tgt_tok, self.cfg["eval_batch_size"], bool(self.cfg["bleu"]))
                long_m.pop("predictions")
                result["test_long"] = long_m
            msg = (f"test ({test['n']} pairs, best/): exact {100 * test['exact_match']:.2f}%  "
                   f"tok acc {100 * test['token_accuracy']:.2f}%  loss {test['loss']:.4f}")
            if "bleu" in test:
                msg += f"  BLEU {test['bleu']:.1f}  chrF {test['chrf']:.1f}"
            self.log(msg)
            if "test_long" in result:
                lm = result["test_long"]
                self.log(f"test, sources longer than any in train ({lm['n']} pairs): exact "
                         f"{100 * lm['exact_match']:.2f}%" + (f"  BLEU {lm['bleu']:.1f}" if "bleu" in lm else ""))
        atomic_write_text(self.out / "result.json", json.dumps(result, indent=2) + "\n")
        return result

    def _test_long(self):
        """Test pairs whose source is longer (in tokens) than every training source, if there are any."""
        if "test" not in self.sets:
            return None
        test, longest = self.sets["test"], int(self.sets["train"].src_len.max())
        keep = [p for p, n in zip(test.pairs, test.src_len) if n > longest]
        if not keep:
            return None
        return encode_pairs(keep, self.src_tok, self.tgt_tok, self.cfg["reverse_source"])


def train(cfg: dict, log=print) -> dict:
    """Train from a config dict (see ``DEFAULTS``); returns the final metrics."""
    return Trainer(resolve_config(cfg), log).run()
