"""``attnseq average``: the mean of the weights of a run's last K kept checkpoints, as one checkpoint.

A run trained with ``--keep-last K`` keeps its last K epoch-end checkpoints as ``RUN/epoch-NNNN/`` (with
``--keep-every N``, its last K taken every N steps, ``RUN/step-NNNNNNN/``).
Their weights, averaged array by array (summed in float64, then cast back to the parameters' dtype),
make a checkpoint that ``eval``, ``translate``, ``explore``, ``export`` and ``plot-attention`` take
like any other (``--ckpt DIR``). It holds no optimizer state: it is a model to use, not a position in
a run, so ``attnseq train --out DIR --resume`` refuses it. Its state.json says what was averaged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError
from ..nn.backend import to_numpy
from .checkpoint import Checkpoint, check_arrays, load_checkpoint, save_checkpoint
from .rundir import RunDir


def average_run(run: str | Path, last: int, out: str | Path) -> Path:
    """Average the newest ``last`` kept checkpoints of run directory ``run`` into ``out`` -> ``out``.

    ConfigError when fewer than ``last`` are kept or ``out`` is taken; CheckpointError when they
    differ in model config, tokenizers, or array names, shapes and dtypes.
    """
    if not isinstance(last, int) or last < 1:
        raise ConfigError(f"--last must be a positive integer, got {last!r}")
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise ConfigError(f"{rd.path}: no such run directory")
    kept = rd.kept()
    if len(kept) < last:
        names = ", ".join(p.name for _, p in kept) or "none"
        raise ConfigError(f"{rd.path} keeps {len(kept)} epoch checkpoint(s) ({names}); --last {last} needs "
                          f"{last} (train with --keep-last {last} or more)")
    _check_out(Path(out), rd.path)
    return average_checkpoints([p for _, p in kept[-last:]], out, source=str(rd.path))


def average_checkpoints(paths: list[Path], out: str | Path, source: str = "") -> Path:
    """The element-wise mean of the weights of checkpoints ``paths`` (oldest first), saved in ``out``
    with the newest one's config and tokenizers."""
    total: dict[str, np.ndarray] = {}
    first = newest = None
    steps = []
    for path in paths:
        ck = load_checkpoint(path)
        steps.append(ck.state.get("step"))
        weights = {k: to_numpy(v) for k, v in ck.model.state_dict().items()}
        if first is None:
            first = ck
        else:
            _check_same(first, ck, weights)
        for k, a in weights.items():
            if k in total:
                total[k] += a                                   # float64 sums
            else:
                total[k] = a.astype(np.float64)
        newest = ck
    mean = {k: (s / len(paths)).astype(newest.model.state_dict()[k].dtype) for k, s in total.items()}
    newest.model.load_state_dict(mean)
    state = dict(epoch=newest.state.get("epoch"), step=newest.state.get("step"),
                 averaged=dict(run=source, checkpoints=[p.name for p in paths],
                               epochs=[_epoch_of(p) for p in paths], steps=steps))
    return save_checkpoint(out, newest.model, None, newest.src_tok, newest.tgt_tok, newest.config.get("train", {}),
                           state)


def _epoch_of(path: Path) -> int | None:
    m = RunDir.EPOCH_DIR.fullmatch(path.name.removesuffix(".old"))
    return int(m[1]) if m else None


def _check_same(first: Checkpoint, ck: Checkpoint, weights: dict) -> None:
    """``ck`` must have ``first``'s model config, tokenizer kinds and vocabularies, and array shapes."""
    a, b = first.config.get("model"), ck.config.get("model")
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in diff[:3])
        raise CheckpointError(f"{first.path.name} and {ck.path.name} have different model configs ({shown}); "
                              "cannot average them")
    for side, x, y in (("source", first.src_tok, ck.src_tok), ("target", first.tgt_tok, ck.tgt_tok)):
        if x.kind != y.kind or x.vocab_size != y.vocab_size or _vocab(x) != _vocab(y):
            raise CheckpointError(f"{first.path.name} and {ck.path.name} have different {side} vocabularies; "
                                  "cannot average them")
    check_arrays(ck.path / "weights.npz", weights, first.model.state_dict())


def _vocab(tok) -> list[str]:
    return tok.pieces(list(range(tok.vocab_size)))


def _check_out(out: Path, run: Path) -> None:
    """``out`` must be new, empty, or an earlier average (replaced), and not the run or inside a checkpoint."""
    if out.resolve() == run.resolve():
        raise ConfigError(f"--out {out} is the run directory; give a new directory for the average")
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    try:
        averaged = (out / "config.json").exists() and "averaged" in load_checkpoint(out).state   # itself, not a run
    except CheckpointError:
        averaged = False
    if not averaged:
        raise ConfigError(f"--out {out} exists and is not an earlier average; give a new or empty directory")
