"""Checkpoints: a directory of data, never code.

Layout of one checkpoint directory (``RUN/best/`` or ``RUN/last/``)::

    weights.npz      parameters keyed by layer path (decoder.lstm.Wh ...)
    optimizer.npz    optimizer slots keyed "path/slot", plus t and lr
    config.json      model config, training config, tokenizer kinds, format version, and
                     max_output_len: the longest output, {"scale", "offset"} (see nn.output_length)
    state.json       epoch, step, best metric, RNG states, patience left
    src_vocab.json, tgt_vocab.json (+ .spm.model for sentencepiece)

Arrays load with ``allow_pickle=False``; names, shapes and dtypes are checked
against the model the config describes, and the vocabularies against the
embedding sizes. A directory is written complete under a temporary name and
then swapped in by rename, so ``best/`` and ``last/`` are never half-written.

A run directory (``RunDir``) holds ``best/``, ``last/``, ``metrics.jsonl``, ``result.json``, with
``--keep-last K`` the last K epoch-end checkpoints ``epoch-NNNN/`` and, while a trainer runs there,
``.lock``; the trainer reaches all of them through it.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import time
import warnings
import weakref
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import faults
from ..nn.backend import to_numpy
from ..errors import CheckpointError, ConfigError
from ..data.io import atomic_write_bytes, atomic_write_text
from ..nn.model import AttentionSeq2seq
from ..nn.output_length import CONFIG_KEY as OUTPUT_RULE_KEY, saved_rule
from ..data.tokenizers import Tokenizer, load_tokenizer
from .schedules import check_state
from .selection import LEGACY_METRIC, SELECT_BY

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: AttentionSeq2seq
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    config: dict            # the whole config.json
    state: dict             # state.json
    optimizer: dict | None  # optimizer.npz arrays, when asked for
    path: Path


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: to_numpy(v) for k, v in arrays.items()})
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, model, optimizer, src_tok: Tokenizer, tgt_tok: Tokenizer,
                    train_config: dict, state: dict) -> Path:
    """Write a complete checkpoint to ``directory`` atomically (temp dir, then rename swap)."""
    final = Path(directory)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        atomic_write_bytes(tmp / "weights.npz", _npz_bytes(model.state_dict()))
        faults.point("save-weights-written")
        if optimizer is not None:
            atomic_write_bytes(tmp / "optimizer.npz", _npz_bytes(optimizer.state_dict()))
        config = dict(format_version=FORMAT_VERSION, model=model.config.to_dict(), train=train_config,
                      src_tokenizer=src_tok.kind, tgt_tokenizer=tgt_tok.kind)
        config[OUTPUT_RULE_KEY] = model.output_len_rule.to_json()  # the longest output (nn.output_length)
        atomic_write_text(tmp / "config.json", json.dumps(config, indent=2))
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=2))
        src_tok.save(tmp, "src_vocab")
        tgt_tok.save(tmp, "tgt_vocab")
        _fsync_dir(tmp)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``. Between the two renames only ``final.old`` exists; readers fall back to it."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        if not final.exists():      # an earlier swap was cut short: old is the good copy
            os.rename(old, final)
        else:
            shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    faults.point("swap-between-renames")
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def resolve(path: str | Path, prefer: str = "best") -> Path:
    """A run dir means its ``best/`` (else ``last/``); a checkpoint dir means itself."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "weights.npz").exists() or (path / "config.json").exists():
        return path
    order = [prefer] + [n for n in ("best", "last") if n != prefer]
    for name in order:
        for cand in (path / name, path / f"{name}.old"):
            if (cand / "config.json").exists():
                return cand
    raise CheckpointError(f"{path}: not a checkpoint (no config.json) and no best/ or last/ inside")


def read_json(path: Path, what: str = "") -> dict:
    """A JSON object file, or one CheckpointError naming it; ``what`` is said when the file is missing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: missing {path.name}{what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_npz(path: Path) -> dict:
    """All arrays of an ``.npz`` file, refusing pickled (object) arrays and corrupt files."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: missing {path.name}") from None
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise CheckpointError(f"{path}: holds an object array, which would need unpickling; refused") from None
        raise CheckpointError(f"{path}: corrupt or not an .npz file ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated .npz file ({e})") from None


def check_arrays(path: Path, arrays: dict, expected: dict) -> None:
    """Names, shapes and dtypes of ``arrays`` must match ``expected`` (name -> array)."""
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: array names do not match the model: "
                              f"missing {missing[:5]}, unexpected {extra[:5]}")
    for name, ref in expected.items():
        a = arrays[name]
        if a.shape != ref.shape:
            raise CheckpointError(f"{path}: {name} has shape {a.shape}, the model needs {ref.shape}")
        if a.dtype != ref.dtype:
            raise CheckpointError(f"{path}: {name} has dtype {a.dtype}, the model needs {ref.dtype}")


def load_checkpoint_config(path: str | Path) -> dict:
    """Just the config.json of a checkpoint directory."""
    return read_json(Path(path) / "config.json")


def load_checkpoint(path: str | Path, device: str = "cpu", with_optimizer: bool = False,
                    prefer: str = "best") -> Checkpoint:
    """Load and verify a checkpoint (or a run dir's best/). Raises CheckpointError naming the problem."""
    ckpt = resolve(path, prefer)
    return _load(ckpt, load_checkpoint_config(ckpt), device, with_optimizer)


def _load(ckpt: Path, config: dict, device: str, with_optimizer: bool) -> Checkpoint:
    """The checkpoint in directory ``ckpt`` whose config.json, already parsed, is ``config``."""
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{ckpt / 'config.json'}: format_version {config.get('format_version')!r}, "
                              f"this attnseq reads {FORMAT_VERSION}")
    try:
        model = AttentionSeq2seq.from_config(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt / 'config.json'}: bad model config ({e})") from None
    weights = read_npz(ckpt / "weights.npz")
    check_arrays(ckpt / "weights.npz", weights, model.state_dict())
    for a in weights.values():
        if not np.isfinite(a).all():
            raise CheckpointError(f"{ckpt / 'weights.npz'}: holds NaN or inf values")
    model.load_state_dict(weights)
    model.output_len_rule = saved_rule(config, ckpt / "config.json")   # 2 * Ts + 10 for one saved without
    src_tok, tgt_tok = load_tokenizer(ckpt, "src_vocab"), load_tokenizer(ckpt, "tgt_vocab")
    for side, tok, key in (("source", src_tok, "src_vocab_size"), ("target", tgt_tok, "tgt_vocab_size")):
        if tok.vocab_size != model.config[key]:
            raise CheckpointError(f"{ckpt}: the {side} vocabulary has {tok.vocab_size} entries "
                                  f"but the weights expect {model.config[key]}")
    state = read_json(ckpt / "state.json")
    optimizer = read_npz(ckpt / "optimizer.npz") if with_optimizer else None
    if device != "cpu":
        model.to(device)
    return Checkpoint(model, src_tok, tgt_tok, config, state, optimizer, ckpt)


# -- a run directory -------------------------------------------------------------------------------
@dataclass
class TrainState:
    """state.json: where a run stands after an epoch.

    ``best`` is [primary, -valid loss] of best/ (compared as a list: the primary first), the primary
    being the valid score ``best_metric`` names (``attnseq.run.selection``: exact match, BLEU or
    -loss; state.json from before it holds exact match and no name). ``rng`` and ``dropout_rng``
    are the bit generator states of the batch order and of dropout; ``schedule`` the lr schedule's
    state (its name, and plateau's scale and count).
    """
    epoch: int
    step: int
    best: list
    bad_epochs: int
    nonfinite_skipped: int
    rng: dict
    dropout_rng: dict
    best_metric: str = LEGACY_METRIC
    schedule: dict | None = None

    @classmethod
    def from_json(cls, st: dict, path: Path) -> "TrainState":
        """Checked field by field; a missing or malformed one is a CheckpointError naming it."""
        values = {}
        for name, parse in _STATE_FIELDS.items():
            if name not in st and name not in _STATE_OPTIONAL:
                raise CheckpointError(f"{path}: missing or malformed field {name!r} (not there); "
                                      "cannot resume from it")
            try:
                values[name] = parse(st.get(name, _STATE_OPTIONAL.get(name)))
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{path}: missing or malformed field {name!r} ({e}); "
                                      "cannot resume from it") from None
        return cls(**values)


def _score(value) -> list:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value)):
        raise ValueError(f"expected [score, -loss], got {value!r}")
    return list(value)


def _metric(value) -> str:
    if value not in SELECT_BY:
        raise ValueError(f"expected one of {', '.join(SELECT_BY)}, got {value!r}")
    return value


def _schedule(value) -> dict | None:
    return None if value is None else check_state(value)


def _rng_state(value) -> dict:
    np.random.PCG64().state = value         # what default_rng() takes, or TypeError/ValueError
    return value


_STATE_FIELDS = dict(epoch=int, step=int, best=_score, bad_epochs=int, nonfinite_skipped=int,
                     rng=_rng_state, dropout_rng=_rng_state, best_metric=_metric, schedule=_schedule)
# absent from state.json written before they existed
_STATE_OPTIONAL = dict(nonfinite_skipped=0, best_metric=LEGACY_METRIC, schedule=None)


@dataclass
class EpochProgress:
    """state.json's "in_epoch": how far a mid-epoch checkpoint is into its epoch (absent at epoch ends).

    The epoch's batch order is the one ``batch_order`` draws from TrainState's ``rng`` (in a mid-epoch
    checkpoint, the generator's state at the epoch's start); ``batches_done`` of its ``batches`` are
    trained. ``batch_size``, ``bucket`` and ``bucket_jitter`` made that order. The rest are the
    epoch's running sums so far: the training loss summed over ``loss_batches`` batches, the pairs
    trained on, and the seconds spent.
    """
    batches_done: int = 0
    batches: int = 0
    batch_size: int = 0
    bucket: bool = True
    bucket_jitter: float = 0.0
    loss_sum: float = 0.0
    loss_batches: int = 0
    samples: int = 0
    time_s: float = 0.0

    @classmethod
    def from_json(cls, st: dict, path: Path) -> "EpochProgress | None":
        """The "in_epoch" of state.json ``st``, checked, or None at an epoch end."""
        raw = st.get("in_epoch")
        if raw is None:
            return None
        try:
            out = cls(**{name: _PROGRESS_TYPES[name](raw[name]) for name in _PROGRESS_TYPES})
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: missing or malformed field 'in_epoch' ({e!r}); "
                                  "cannot resume from it") from None
        if not 0 <= out.batches_done <= out.batches:
            raise CheckpointError(f"{path}: 'in_epoch' has {out.batches_done} of {out.batches} batches done; "
                                  "cannot resume from it")
        return out

    def order_matches(self, batches: int, cfg: dict) -> bool:
        """True when ``batches`` batches drawn under ``cfg`` make the order this progress was counted in."""
        return (self.batches, self.batch_size, self.bucket, self.bucket_jitter) == (
            batches, cfg["batch_size"], cfg["bucket"], cfg["bucket_jitter"])


def _strict_bool(v) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"expected true or false, got {v!r}")
    return v


_PROGRESS_TYPES = dict(batches_done=int, batches=int, batch_size=int, bucket=_strict_bool, bucket_jitter=float,
                       loss_sum=float, loss_batches=int, samples=int, time_s=float)


# -- one trainer per run directory ---------------------------------------------------------------
def _process_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _running(holder: dict) -> bool:
    """Whether the process a lock file names still runs: always assumed for another host."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname():
        return True
    if not isinstance(pid, int) or pid <= 0:
        return False                                # garbage: no process holds it
    if pid == os.getpid():
        return True                                 # another trainer in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                         # alive, another user's
        return True
    started = holder.get("started")
    return started is None or _process_start(pid) in (None, started)     # else the pid was reused


def _read_lock(path: Path) -> dict | None:
    """The holder a lock file names ({"pid", "host", "started"}), or None when it is gone.
    An empty or garbled lock is a crashed writer's (``RunDir._create_lock`` links the lock into place
    whole), so stale; read again a few times first, for a filesystem without hard links, where a
    lock being created is empty for an instant."""
    for _ in range(3):
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return {"pid": -1, "host": socket.gethostname()}    # garbage, not a live trainer's lock: stale


def _epoch_at_or_after(row: dict, epoch: int) -> bool:
    """Whether a metrics.jsonl row is of ``epoch`` or later (a row without a numeric epoch is not)."""
    e = row.get("epoch", 0)
    return isinstance(e, (int, float)) and not isinstance(e, bool) and e >= epoch


def _unlink_if_ours(path: Path, pid: int) -> None:
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == pid and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


class RunDir:
    """A run directory: ``best/`` and ``last/`` checkpoints, ``metrics.jsonl`` and ``result.json``.

    Everything the trainer reads or writes there goes through here: ``prepare`` (refuse to
    overwrite a run, check it can be written, remove temporaries a killed run left), the checkpoint
    to resume from (``resume_config``, ``load_last``, ``restore``), ``save``, ``append_metrics``,
    ``write_result`` and ``load_best``. A checkpoint swap cut short leaves only ``NAME.old``:
    ``resolve`` reads it in ``NAME``'s place and the next ``save_checkpoint`` renames it back.

    ``save(..., keep=K)`` also keeps the last K epoch-end checkpoints as ``epoch-NNNN/`` (the
    epoch, 4 digits or more), pruning older ones; ``kept()`` lists them, oldest first.

    ``lock``/``unlock``: one trainer per run directory, through ``RUN/.lock``.
    """
    CHECKPOINTS = ("last", "best")
    LOCK = ".lock"
    EPOCH_DIR = re.compile(r"epoch-(\d{4,})")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._resume_from: Path | None = None
        self._config: dict | None = None
        self._release = None            # set while this RunDir holds RUN/.lock

    # -- the lock ----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take ``RUN/.lock`` (linked into place whole, holding this PID, host and process start time),
        creating the directory if need be. Call before ``prepare``, which removes temporaries.

        Held by a running process: ConfigError naming its PID. Left by a process that no longer
        runs on this host (a killed run): taken over, with a warning. Released by ``unlock``, at
        the latest when this process exits.
        """
        if self._release is not None:
            return
        path = self.path / self.LOCK
        self._mkdir()
        for _ in range(3):
            if self._create_lock(path):
                self._release = weakref.finalize(self, _unlink_if_ours, path, os.getpid())
                return
            holder = _read_lock(path)
            if holder is None:
                continue                            # released meanwhile: try again
            if _running(holder):
                where = f" on {holder.get('host')}" if holder.get("host") != socket.gethostname() else ""
                raise ConfigError(f"{self.path} is in use by another attnseq train (pid {holder['pid']}{where}); "
                                  f"wait for it or stop it (if none runs, delete {path})")
            self._take_over(path, holder)
        raise ConfigError(f"{self.path}: could not take {path}; other trainers keep starting there")

    def _create_lock(self, path: Path) -> bool:
        """Create the lock file holding this process, whole: written to ``.lock.tmp-PID``, then hard-linked
        to ``.lock`` (which fails if that exists), so no trainer ever reads a lock half-written.
        -> False if the lock exists (or our temporary was removed by the holder's ``prepare`` meanwhile)."""
        me = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), started=_process_start(os.getpid())))
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(me, encoding="utf-8")
            return self._link_lock(tmp, path, me)
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None
        finally:
            tmp.unlink(missing_ok=True)

    def _link_lock(self, tmp: Path, path: Path, me: str) -> bool:
        try:
            os.link(tmp, path)
        except (FileExistsError, FileNotFoundError):    # held, or the holder's prepare removed our temporary
            return False
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            return self._create_lock_in_place(path, me)
        return True

    def _create_lock_in_place(self, path: Path, me: str) -> bool:
        """``_create_lock`` on a filesystem without hard links (FAT, some network shares): the lock is
        created with O_EXCL and then written, so it is empty for an instant (``_read_lock`` waits that out)."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            raise ConfigError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None
        try:
            os.write(fd, me.encode())
        except OSError as e:
            path.unlink(missing_ok=True)
            raise ConfigError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _take_over(path: Path, holder: dict) -> None:
        """Remove a stale lock. It is renamed away first, so of two trainers taking it over at once
        only one removes it; a lock that turns out to be another's fresh one is put back."""
        aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = _read_lock(aside)
        if moved is not None and moved.get("pid") != holder.get("pid"):
            try:
                os.link(aside, path)
            except OSError:
                pass
        else:
            warnings.warn(f"{path.parent}: the lock of pid {holder['pid']} is stale (that process no longer "
                          "runs: a killed run?); taking it over", stacklevel=3)
        aside.unlink(missing_ok=True)

    def unlock(self) -> None:
        """Remove ``RUN/.lock`` if this RunDir holds it."""
        if self._release is not None:
            self._release()
            self._release = None

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

    def load_last(self, device: str = "cpu") -> Checkpoint:
        """The checkpoint to resume from, verified, with its optimizer arrays (not yet checked: ``restore``)."""
        config = self.resume_config()
        return _load(self._resume_from, config, device, with_optimizer=True)

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

    def kept(self) -> list[tuple[int, Path]]:
        """The kept epoch-end checkpoints as (epoch, directory), oldest first (an interrupted swap's
        ``epoch-NNNN.old`` stands in for its missing ``epoch-NNNN``)."""
        found: dict[int, Path] = {}
        for d in sorted(self.path.glob("epoch-*")):
            m = self.EPOCH_DIR.fullmatch(d.name.removesuffix(".old"))
            if m is None or not (d / "config.json").exists():
                continue
            epoch = int(m[1])
            if epoch not in found or found[epoch].name.endswith(".old"):
                found[epoch] = d
        return sorted(found.items())

    def _prune(self, keep: int) -> None:
        """Remove all but the newest ``keep`` (>= 1) kept epoch checkpoints."""
        for epoch, _ in self.kept()[:-keep]:
            d = self.epoch_dir(epoch)
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d.with_name(d.name + ".old"), ignore_errors=True)

    # -- writing ---------------------------------------------------------------------------
    def save(self, model, optimizer, src_tok: Tokenizer, tgt_tok: Tokenizer, train_config: dict,
             state: TrainState, best: bool, progress: EpochProgress | None = None, keep: int = 0) -> None:
        """Save last/ (and first best/, when ``best``); ``progress`` for a checkpoint inside an epoch.
        At an epoch's end with ``keep`` > 0, also ``epoch-NNNN/`` (before last/), keeping the newest ``keep``.
        A failure is a CheckpointError; the previous checkpoints stay intact."""
        st = asdict(state) if progress is None else dict(asdict(state), in_epoch=asdict(progress))
        args = (model, optimizer, src_tok, tgt_tok, train_config, st)
        keep = keep if progress is None else 0
        try:  # best first: a kill in between leaves last/ behind, so the epoch is redone and best/ saved again
            if best:
                save_checkpoint(self.path / "best", *args)
                faults.point("between-best-and-last")
            if keep:
                save_checkpoint(self.epoch_dir(state.epoch), *args)
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
