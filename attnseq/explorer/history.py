"""The explorer with an epoch slider: a run's tracked examples, and their attention across its training.

``explore_history(run)`` is ``explore`` on the examples a run tracked (``RUN/attention_history.npz``,
``attnseq.run.history``), decoded by its checkpoint as usual, plus the history for the page's slider: the
page's JSON gains ::

    "history": {"labels": [str], "steps": [int], "epochs": [float], "validation": [bool]}     # one per snapshot
    examples[i]["history"]: {"tokens": [str],                   # the reference's tokens, eos included
                             "entries": [{"w": sparse rows, "probs": [float], "text": str, "correct": bool}]}

``w`` is the attention over the reference at that snapshot (teacher forcing), in the thousandths-and-offset
rows of ``sparse_rows``; ``probs`` each reference token's probability then; ``text`` the model's greedy
output then. Dragging the slider to a snapshot draws its weights in the heatmap; its last position is
the checkpoint's own output, the page as it is without a history.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..run.history import AttentionHistory, history_path
from . import Exploration, explore, sparse_rows


def explore_history(run, *, beam: int = 1, device: str = "cpu", title: str | None = None,
                    **options) -> Exploration:
    """The explorer page of the examples ``run`` tracked (a run directory, or its best/ or last/), decoded
    by its checkpoint (``explore``'s options: beam, n_best, alpha, batch_size, max_len, sampling, guards),
    with an epoch slider over their attention across training."""
    path = history_path(run)
    history = AttentionHistory.load(path)
    if not history.entries:
        raise ConfigError(f"{path}: no snapshots yet (the first is taken after --track-every steps, or at the "
                          "first validation)")
    examples = history.examples
    name = Path(str(run)).name
    search = f"beam {beam}" if beam > 1 else "greedy"
    page = explore(run, [e["src"] for e in examples], [e["ref"] for e in examples], beam=beam, device=device,
                   **options, title=title or f"attnseq explorer: {name}, attention across training",
                   meta=f"model {run} · {len(examples)} validation examples tracked in {path.name}, "
                        f"{len(history.entries)} snapshots · {search}")
    add_history(page.data, history)
    return page


def add_history(data: dict, history: AttentionHistory) -> None:
    """Put ``history`` into an explorer page's ``data`` (made by ``explore`` from its examples, in order)."""
    if len(data["examples"]) != len(history.examples):
        raise ValueError(f"the page has {len(data['examples'])} examples, the history {len(history.examples)}")
    entries = history.entries
    for k, (ex, tracked) in enumerate(zip(data["examples"], history.examples)):
        if ex["src_tokens"] != tracked["src_tokens"]:
            raise ConfigError(f"the history tracked {tracked['src']!r} as {len(tracked['src_tokens'])} tokens, "
                              f"the checkpoint reads it as {len(ex['src_tokens'])}: a checkpoint of another run?")
        want = tracked.get("ref_norm", tracked["ref"])
        ex["history"] = dict(tokens=list(tracked["tgt_tokens"]), entries=[
            dict(w=sparse_rows(e.weights[k]), probs=[round(float(p), 4) for p in e.probs[k]], text=e.outputs[k],
                 correct=e.outputs[k] == want) for e in entries])
    data["history"] = dict(labels=[history.label(e) for e in entries], steps=[e.step for e in entries],
                           epochs=[e.epoch for e in entries], validation=[e.validation for e in entries])
