"""How the ranks of an MPI job start one run together (``Ranks.train`` calls ``start_trainer``).

1. Every rank was started with the same options (``same_options``): else one line naming the rank
   and the option.
2. Rank 0 alone sets up as one process does: it takes the run directory's lock, resumes from ``last/``
   or builds the tokenizers and a fresh model, loads and encodes the data.
3. It sends the others where the run stands, as a checkpoint (``Trainer.snapshot``: weights, optimizer
   state, tokenizers, counters, random states, how far into an epoch): each unpacks it in a private
   temporary directory and *resumes* from it (``FollowerRunDir``), so every rank holds the same model
   and state, whatever its ``-n`` was before; then it loads and encodes the data itself.
4. Every rank must read the same data (``same_data``: a fingerprint of each encoded split).
5. numba's on-disk cache: rank 0 compiles the kernels first (``compile_in_turn``), the others load them.

At each step a failure on any rank stops every rank with one line (``Ranks.settle``).
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .config import config_keys, resolve_config
from ..errors import one_line
from .rundir import RunDir


class FollowerRunDir(RunDir):
    """The run directory as a rank other than 0 holds it: rank 0's start, unpacked in a private temporary
    directory, to resume from. It locks nothing and writes nothing: rank 0 owns the real one."""

    def lock(self) -> None:
        pass

    def unlock(self) -> None:
        pass

    def prepare(self, resume: bool) -> bool:
        return True

    def save(self, *args, **kwargs) -> None:
        pass

    def append_metrics(self, row: dict) -> None:
        pass

    def write_result(self, result: dict) -> None:
        pass


def start_trainer(group, cfg: dict, log, trainer_class):
    """This rank's Trainer, its start agreed with the other ranks (the module's steps 1-5)."""
    same_options(group, cfg)
    trainer, device, error = None, None, None
    if group.is_root:
        try:
            trainer, device = _root_trainer(group, cfg, log, trainer_class)
        except Exception as e:
            error = e
    group.settle(error)
    try:
        trainer = _share_start(group, trainer, device, trainer_class)
        same_data(group, trainer)
        compile_in_turn(group, trainer)
    except BaseException:
        if trainer is not None:
            trainer.close()
        raise
    return trainer


def same_options(group, cfg: dict) -> None:
    """Every rank's options (flags and --config file, as given) must be rank 0's."""
    given = [{k: v for k, v in c.items() if v is not None} for c in group.allgather_json(cfg)]
    keys = config_keys()
    for r, theirs in enumerate(given):
        differ = sorted(k for k in set(theirs) | set(given[0]) if theirs.get(k) != given[0].get(k))
        if differ:
            what = ", ".join(f"{keys[k].flag_name if k in keys else k} {_given(theirs, k)} "
                             f"(rank 0: {_given(given[0], k)})" for k in differ[:3])
            group.settle(ValueError(f"rank {r} of {group.size} was started with other options than rank 0: "
                                    f"{what}; start every rank with the same command"))


def _given(cfg: dict, key: str) -> str:
    return repr(cfg[key]) if key in cfg else "not given"


def _root_trainer(group, cfg: dict, log, trainer_class):
    """Rank 0's Trainer, set up as ``training.train`` sets one up -> (trainer, the --device asked for)."""
    out = cfg.get("out")
    run_dir = RunDir(out) if isinstance(out, str) else None
    saved = run_dir.saved_options() if run_dir is not None and cfg.get("resume") else None
    resolved = resolve_config(cfg, saved)
    device = resolved["device"]
    return trainer_class(dict(resolved, device=group.local_device(device)), log, run_dir, group=group), device


def _share_start(group, trainer, device, trainer_class):
    """Rank 0 sends its start as a checkpoint's files (sizes as JSON, then the bytes in one broadcast);
    the other ranks resume from it. -> this rank's Trainer."""
    manifest, blob, error = None, None, None
    if group.is_root:
        try:
            manifest, blob = _pack_start(trainer, device)
        except Exception as e:
            error, manifest = e, {"failed": True}
    manifest = group.bcast_json(manifest)
    if manifest.get("failed"):
        group.settle(error)
    buf = blob if group.is_root else np.empty(sum(size for _, size in manifest["files"]), np.uint8)
    group.comm.Bcast(buf, root=0)
    if not group.is_root:
        try:
            trainer = _follower(group, manifest, buf, trainer_class)
        except Exception as e:
            error = e
    group.settle(error)
    return trainer


def _pack_start(trainer, device: str):
    """Rank 0: its run as a checkpoint's files -> ({"cfg", "device", "files": [[name, size]]}, bytes)."""
    with tempfile.TemporaryDirectory(prefix="attnseq-start-") as tmp:
        ckpt = trainer.snapshot(Path(tmp))
        files = sorted(p for p in ckpt.iterdir() if p.is_file())
        parts = [p.read_bytes() for p in files]
    manifest = dict(cfg=trainer.cfg, device=device, files=[[p.name, len(b)] for p, b in zip(files, parts)])
    return manifest, np.frombuffer(b"".join(parts), np.uint8).copy()


def _follower(group, manifest: dict, buf: np.ndarray, trainer_class):
    """A rank other than 0: rank 0's checkpoint into a temporary directory, resumed from (and the
    directory removed once loaded); its log silent."""
    tmp = Path(tempfile.mkdtemp(prefix=f"attnseq-rank{group.rank}-"))
    try:
        last, offset = tmp / "last", 0
        last.mkdir()
        for name, size in manifest["files"]:
            (last / Path(name).name).write_bytes(buf[offset:offset + size].tobytes())
            offset += size
        cfg = dict(manifest["cfg"], out=str(tmp), resume=True, device=group.local_device(manifest["device"]))
        return trainer_class(cfg, lambda *a, **k: None, FollowerRunDir(tmp), group=group)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(enc) -> str:
    """A split's encoded ids and lengths, hashed."""
    h = hashlib.sha256()
    for a in (enc.src, enc.src_len, enc.tgt, enc.tgt_len):
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _source(cfg: dict, split: str) -> str:
    if cfg["data"] is not None:
        return f"--data {cfg['data']}"
    if split == "valid" and cfg["valid"] is None:
        return f"held out of --train {cfg['train']}"
    return f"--{split} {cfg[split]}"


def same_data(group, trainer) -> None:
    """Every rank must have read and encoded the same splits as rank 0."""
    prints = group.allgather_json({name: fingerprint(enc) for name, enc in trainer.sets.items()})
    for r, theirs in enumerate(prints):
        for split in sorted(set(theirs) | set(prints[0])):
            if theirs.get(split) != prints[0].get(split):
                group.settle(ValueError(f"rank {r} of {group.size} read other {split} data than rank 0 "
                                        f"({_source(trainer.cfg, split)}): every rank must read the same files"))


def compile_in_turn(group, trainer) -> None:
    """numba compiles a kernel on its first call and caches it on disk, and processes compiling at once
    race on that cache (numba issue 10128). So rank 0 runs every kernel the run needs once, on a copy
    of the model, while the others wait; then they load them from the cache."""
    from ..nn import kernels
    error = None
    if group.is_root and trainer.model.xp is np and kernels.active() == "numba":
        try:
            warm_up(trainer)
        except Exception as e:
            error = ValueError(f"compiling the kernels: {one_line(e)}")
    group.settle(error)


def warm_up(trainer) -> None:
    """A training step (forward, backward, optimizer) and an evaluation of a few rows, on a fresh model
    of the same configuration (the run's own model, its generators and counters stay untouched)."""
    from ..data.batching import Encoded, take
    from ..nn.model import AttentionSeq2seq
    from ..nn.optim import build_optimizer
    from .evaluation import score_batches
    from .parallel import DataParallel
    cfg, model = trainer.cfg, trainer.model
    copy = AttentionSeq2seq.from_config(model.config)
    copy.output_len_rule = model.output_len_rule
    train = trainer.sets["train"]
    with DataParallel(copy, 1) as dp:
        dp.forward(*take(train, np.arange(min(4, len(train)))))
        dp.backward()
    build_optimizer(cfg["optimizer"], copy, cfg["lr"], clip=cfg["clip"], weight_decay=cfg["weight_decay"]).step()
    v = trainer.sets["valid"]
    score_batches(copy, Encoded(v.src[:4], v.src_len[:4], v.tgt[:4], v.tgt_len[:4], v.pairs[:4]), 4)
