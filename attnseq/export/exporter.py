"""A checkpoint -> an export directory: two ONNX graphs, the tokenizer files and manifest.json.

The directory is written complete under a temporary name next to ``out`` and renamed into
place. ``out`` may be new, empty, or an earlier export (which is replaced); anything else is
refused. Before anything is written the graphs are run once in onnxruntime on a small padded
batch and compared with attnseq's own forward pass, so a model the graphs do not describe
exactly is never exported.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .. import __version__
from ..data.io import atomic_write_bytes
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from ..errors import CheckpointError, ConfigError
from ..nn.backend import to_numpy
from ..nn.output_length import OutputLengthRule
from ..nn.search import log_softmax
from ..run.checkpoint import load_checkpoint
from ..run.inference import DEFAULT_MAX_INPUT
from .spec import (DECODER_STEP, ENCODER, GRAPH_FILES, KNOWN_MODEL_KEYS, MANIFEST, TOKENIZER_NAMES, build_manifest,
                   is_export_dir, require, rule_entry)

SELF_CHECK_TOL = 1e-3           # largest |log-prob difference| the export accepts (float32 graphs)


def export_onnx(ckpt: str | Path, out: str | Path, *, cast_float32: bool = False, max_output_len=None) -> Path:
    """Export the checkpoint ``ckpt`` (a run dir means the one it chose, ``checkpoint.resolve``) to ``out``.

    A float64 checkpoint is refused unless ``cast_float32`` (the graphs are float32). The
    manifest's output-length rule is the checkpoint's own (the model's ``output_len_rule``: the one in
    its config.json, 2 * Ts + 10 for a checkpoint saved without one) unless ``max_output_len`` (tokens,
    "S*Ts+O" or an ``OutputLengthRule``, as ``--max-output-len``) replaces it. Raises
    ``MissingExtraError`` without onnx/onnxruntime, ``ConfigError`` for an option the export
    cannot express or an unusable ``out``, ``CheckpointError`` for a bad checkpoint.
    """
    require("onnx")
    require("onnxruntime")
    from .onnx_graphs import build_graphs
    out = Path(out)
    _check_out(out)
    ck = load_checkpoint(ckpt)
    weights = exportable_weights(ck.model, ck.path / "config.json", cast_float32)
    config = ck.model.config
    graphs = {g: m.SerializeToString() for g, m in build_graphs(weights, config).items()}
    self_check(ck.model, graphs)
    files = {GRAPH_FILES[g]: data for g, data in graphs.items()}
    tokenizers = _copy_tokenizers(ck, files)
    train = ck.config.get("train", {})
    state = ck.state if isinstance(ck.state, dict) else {}
    provenance = dict(attnseq_version=__version__, checkpoint=str(ck.path), epoch=state.get("epoch"),
                      step=state.get("step"), checkpoint_dtype=config.dtype)
    max_input_len = train.get("max_len") or DEFAULT_MAX_INPUT
    rule = manifest_rule(ck.model, max_output_len)
    manifest = build_manifest(config, tokenizers, bool(train.get("reverse_source", False)), max_input_len,
                              rule, files, provenance)
    files[MANIFEST] = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
    _write_dir(out, files)
    return out


def manifest_rule(model, override=None) -> dict:
    """The manifest's ``max_output_len``: ``override`` (tokens, "S*Ts+O" or an ``OutputLengthRule``) or the
    model's own rule, which is linear by construction, so the manifest records it exactly."""
    rule = model.output_len_rule if override is None else OutputLengthRule.parse(override)
    return rule_entry(rule)


def _copy_tokenizers(ck, files: dict) -> dict:
    """Add the checkpoint's tokenizer files to ``files`` (name -> bytes) -> the manifest's ``tokenizers``."""
    tokenizers = {}
    for side, tok in (("source", ck.src_tok), ("target", ck.tgt_tok)):
        name = TOKENIZER_NAMES[side]
        names = [f"{name}.json"] + ([f"{name}.spm.model"] if tok.kind == "sentencepiece" else [])
        for f in names:
            files[f] = _read(ck.path / f)
        tokenizers[side] = dict(kind=tok.kind, name=name, files=names)
    return tokenizers


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: missing {path.name}") from None


def exportable_weights(model, where: Path, cast_float32: bool = False) -> dict:
    """The model's parameters as float32 numpy arrays, or a ConfigError naming what cannot be exported."""
    config = model.config
    unknown = sorted(set(config.to_dict()) - KNOWN_MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: model option(s) {', '.join(unknown)} are not supported by the ONNX export "
                          f"(it would translate differently); not exported")
    ids = (config.pad_id, config.bos_id, config.eos_id)
    if ids != (PAD_ID, BOS_ID, EOS_ID):
        raise ConfigError(f"{where}: special ids pad/bos/eos {ids}; the export supports {(PAD_ID, BOS_ID, EOS_ID)}")
    weights = {k: to_numpy(v) for k, v in model.state_dict().items()}   # build_graphs refuses any left unread
    if config.dtype != "float32":
        if not cast_float32:
            raise ConfigError(f"{where}: model option dtype {config.dtype}: the ONNX graphs are float32 "
                              f"(onnxruntime's LSTM has no float64); export with --float32 (cast_float32) "
                              f"to convert")
        weights = {k: v.astype(np.float32) for k, v in weights.items()}
    return weights


def self_check(model, graphs: dict, tol: float = SELF_CHECK_TOL) -> float:
    """Run the serialized graphs on a padded batch and compare log-probabilities with the model's own
    (teacher forcing). -> the largest difference; ConfigError when it is over ``tol``."""
    from .runtime import OnnxSeq2seq
    rng = np.random.default_rng(0)
    Vs, Vt = model.config.src_vocab_size, model.config.tgt_vocab_size
    lengths = [6, 4, 1]
    src = np.zeros((len(lengths), max(lengths)), dtype=np.int64)   # (N, Ts), right-padded
    for row, n in enumerate(lengths):
        src[row, :n] = rng.integers(1, Vs, n)
    tgt = np.concatenate([np.full((len(lengths), 1), BOS_ID), rng.integers(0, Vt, (len(lengths), 4))], axis=1)
    with model.eval_mode():
        want = to_numpy(log_softmax(model.logits(src, np.concatenate([tgt, tgt[:, :1]], axis=1))))  # (N, 5, V)
    runner = OnnxSeq2seq(graphs[ENCODER], graphs[DECODER_STEP])
    memory, state, mask = runner.encode(src)
    step = runner.step_fn(memory, mask)
    worst = 0.0
    for t in range(tgt.shape[1]):
        logp, state, _ = step(tgt[:, t], state)
        worst = max(worst, float(np.abs(logp - want[:, t]).max()))
    if not worst <= tol:
        raise ConfigError(f"ONNX export self-check failed: log-probabilities differ from attnseq's by {worst:.3g} "
                          f"(> {tol}); the graphs do not describe this model; not exported")
    return worst


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not is_export_dir(out):
        raise ConfigError(f"--out {out}: not empty and not an earlier attnseq ONNX export; "
                          f"give a new or empty directory")


def _write_dir(out: Path, files: dict) -> None:
    """Write ``files`` (name -> bytes) into ``out`` all at once: a temp dir beside it, then renames."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        if out.exists():
            os.rename(out, old)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
