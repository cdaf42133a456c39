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

state.json's schema is ``attnseq.run.train_state``; the run directory that holds the checkpoints,
``attnseq.run.rundir``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import faults
from ..nn.backend import to_numpy
from ..errors import CheckpointError
from ..data.io import atomic_write_bytes, atomic_write_text
from ..nn.model import AttentionSeq2seq
from ..nn.output_length import CONFIG_KEY as OUTPUT_RULE_KEY, saved_rule
from ..data.tokenizers import Tokenizer, load_tokenizer

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


def chosen(run: str | Path) -> str:
    """Which checkpoint run directory ``run`` chose by validation: "averaged" when its result.json says
    RUN/averaged/ scored higher on valid than best/ (``"chosen"``, or an older result.json's
    ``averaged.better_than_best``) and averaged/ is there; else "best" (also with no or an unreadable
    result.json: a run still training, or one from before averaging)."""
    run = Path(run)
    try:
        result = json.loads((run / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "best"
    if not isinstance(result, dict):
        return "best"
    averaged = result.get("averaged")
    better = result.get("chosen") == "averaged" if "chosen" in result else \
        isinstance(averaged, dict) and averaged.get("better_than_best") is True
    return "averaged" if better and (run / "averaged" / "config.json").exists() else "best"


def resolve(path: str | Path, prefer: str = "chosen") -> Path:
    """A checkpoint dir means itself. A run dir means, by default (``prefer`` "chosen"), the checkpoint
    it chose by validation (``chosen``: averaged/ or best/, else last/); with ``prefer`` "best" its
    best/ (else last/), with "last" its last/ (else best/)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "weights.npz").exists() or (path / "config.json").exists():
        return path
    if prefer == "chosen":
        if chosen(path) == "averaged":
            return path / "averaged"
        prefer = "best"
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
                    prefer: str = "chosen") -> Checkpoint:
    """Load and verify a checkpoint, or the one a run dir means (``resolve``: the run's choice, or with
    ``prefer`` its best/ or last/). Raises CheckpointError naming the problem."""
    ckpt = resolve(path, prefer)
    return load_from(ckpt, load_checkpoint_config(ckpt), device, with_optimizer)


def load_from(ckpt: Path, config: dict, device: str = "cpu", with_optimizer: bool = False) -> Checkpoint:
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
