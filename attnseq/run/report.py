"""What a training run shows: the progress bar of an epoch, then one line per epoch (with a few valid
examples marked ✓/✗) and one per score at the end. The lines are strings: the trainer and
``attnseq.run.finish`` pass them to their ``log``."""
from __future__ import annotations

import shlex


class EpochBar:
    """The progress bar of one epoch (tqdm, on stderr, only where that is a terminal): batches done of
    ``total`` (``done`` already, for a resumed epoch), and every 10 steps the running loss and samples/s.
    ``show`` False: none (an MPI rank other than 0)."""

    def __init__(self, total: int, done: int, desc: str, show: bool | None = None):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=done, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                        disable=None if show is None else not show, mininterval=0.5)

    def update(self, step: int, progress) -> None:
        """One batch more; ``progress`` is the epoch's ``EpochProgress`` after it, ``step`` the global step."""
        self.bar.update()
        if step % 10 == 0:
            self.bar.set_postfix(loss=f"{progress.loss_sum / max(progress.loss_batches, 1):.4f}",
                                 samples_s=f"{progress.samples / max(progress.time_s, 1e-9):.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def epoch_lines(row: dict, epochs: int, examples) -> list[str]:
    """The epoch's line from its metrics.jsonl ``row``, then one per ``examples`` item
    (source, reference, normalised reference, prediction)."""
    line = (f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.4f}  "
            f"valid: loss {row['valid_loss']:.4f}  tok acc {100 * row['valid_token_accuracy']:.2f}%  "
            f"exact {100 * row['valid_exact_match']:.2f}%")
    if "valid_bleu" in row:
        line += f"  BLEU {row['valid_bleu']:.1f}"
    line += f"  ({row['epoch_time_s']:.1f} s, {row['samples_per_s']:.0f} samples/s)"
    lines = [line]
    for src, ref, want, hyp in examples:
        ok = hyp == want
        lines.append(f"  {'✓' if ok else '✗'} {src} → {hyp}" + ("" if ok else f"   (want {ref})"))
    return lines


def scores_text(m: dict) -> str:
    """exact match, loss and (when computed) BLEU and chrF of one evaluation, for a log line."""
    text = f"exact {100 * m['exact_match']:.2f}%  loss {m['loss']:.4f}"
    return text + (f"  BLEU {m['bleu']:.1f}  chrF {m['chrf']:.1f}" if "bleu" in m else "")


def test_line(test: dict) -> str:
    """best/ on the test split."""
    msg = (f"test ({test['n']} pairs, best/): exact {100 * test['exact_match']:.2f}%  "
           f"tok acc {100 * test['token_accuracy']:.2f}%  loss {test['loss']:.4f}")
    if "bleu" in test:
        msg += f"  BLEU {test['bleu']:.1f}  chrF {test['chrf']:.1f}"
    return msg


def test_long_line(m: dict) -> str:
    """best/ on the test sources longer than any in train."""
    return (f"test, sources longer than any in train ({m['n']} pairs): exact {100 * m['exact_match']:.2f}%"
            + (f"  BLEU {m['bleu']:.1f}" if "bleu" in m else ""))


def extra_test_line(file: str, what: str, m: dict) -> str:
    """best/ on one of the built-in task's extra test sets (the date data's test-short)."""
    return f"{file} ({m['n']} pairs, {what}): exact {100 * m['exact_match']:.2f}%"


def averaged_line(averaged: dict, by_name: str) -> str:
    """averaged/ (``finish``'s "averaged" entry) on valid and test, and whether it beats best/ by ``by_name``."""
    better = averaged["better_than_best"]
    what = "epochs" if "epochs" in averaged else "steps"
    first, last = averaged[what][0], averaged[what][-1]
    return (f"averaged/ ({what} {first}-{last}): valid {scores_text(averaged['valid'])}"
            + (f"  | test {scores_text(averaged['test'])}" if "test" in averaged else "")
            + f"  -- {'better' if better else 'not better'} than best/ by {by_name}")


def chosen_line(run, name: str, by_name: str) -> str:
    """The run's last line: which checkpoint ``--ckpt RUN`` means, ``name`` "averaged" or "best"."""
    run = shlex.quote(str(run))
    if name == "averaged":
        return (f"--ckpt {run} means {run}/averaged/: it scored higher than best/ by {by_name} "
                f"(--ckpt {run}/best names best/)")
    return f"--ckpt {run} means {run}/best/"
