"""The end of a run: the test split, scored once, on what validation chose.

Until the last epoch ends, only the valid split is scored (``attnseq.run.selection`` chooses best/ by
it). Then ``EndOfRun.scores`` tests ``best/`` on the test split, on the test sources longer than any
in train (``test_long``) and on the built-in task's extra test sets (the date data's ``test_short``);
with ``--average-last K`` it averages the last K kept checkpoints into ``RUN/averaged/`` and
scores that on valid and test beside best/. Then it says which of the two the run chose, the one
``--ckpt RUN`` means (``attnseq.run.checkpoint.chosen``): averaged/ when it scored higher on valid, else
best/. Each score is one log line (``attnseq.run.report``), the choice the last; the dict goes into
result.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..data.batching import Encoded, encode_pairs
from ..data.corpus import shipped_dir
from ..data.datasets import EXTRA_TESTS, extra_tests
from ..data.tokenizers import Tokenizer
from . import report, selection
from .averaging import average_run
from .checkpoint import load_checkpoint
from .rundir import RunDir


@dataclass
class EndOfRun:
    """What the end of a run works with: its resolved ``cfg``, ``run_dir``, the encoded splits ``sets``
    (train, valid and, when there is one, test), the tokenizers, ``score`` (model, Encoded) -> the
    scores of ``attnseq.run.evaluation.evaluate`` without predictions, and ``log``."""
    cfg: dict
    run_dir: RunDir
    sets: dict[str, Encoded]
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    score: Callable[[object, Encoded], dict]
    log: Callable[[str], None]

    def scores(self, best: selection.Best) -> dict:
        """{"test", "test_long", "test_short", "averaged"}: those that apply, and "chosen", for result.json."""
        out = self.test_best() if "test" in self.sets else {}
        out.update(self.average_last(best))
        out["chosen"] = "averaged" if out.get("averaged", {}).get("better_than_best") else "best"
        self.log(report.chosen_line(self.run_dir.path, out["chosen"], selection.NAMES[best.by]))
        return out

    def test_best(self) -> dict:
        """{"test": ..., "test_long": ..., "test_short": ...} of best/: the test split (with the seconds it
        took, ``eval_s``), its sources longer than any in train, and the task's extra test sets."""
        model = self.run_dir.load_best(self.cfg["device"]).model
        t0 = time.perf_counter()
        test = dict(self.score(model, self.sets["test"]), eval_s=time.perf_counter() - t0)
        self.log(report.test_line(test))
        out = {"test": test}
        test_long = self._test_long()
        if test_long is not None:
            out["test_long"] = self.score(model, test_long)
            self.log(report.test_long_line(out["test_long"]))
        out.update(self._extra_tests(model))
        return out

    def _test_long(self) -> Encoded | None:
        """Test pairs whose source is longer (in tokens) than every training source, if there are any."""
        test, longest = self.sets["test"], int(self.sets["train"].src_len.max())
        keep = [p for p, n in zip(test.pairs, test.src_len) if n > longest]
        return self._encode(keep) if keep else None

    def _extra_tests(self, model) -> dict:
        """{"test_short": ...}: the built-in task's extra test sets (``EXTRA_TESTS``: the date data's
        test-short), each logged in one line; none when the sides are swapped."""
        name, out = self.cfg["data"], {}
        if name not in EXTRA_TESTS or self.cfg["swap_sides"]:
            return out
        for file, (what, pairs) in extra_tests(name, shipped_dir(name)).items():
            m = out[file.replace("-", "_")] = self.score(model, self._encode(pairs))
            self.log(report.extra_test_line(file, what, m))
        return out

    def _encode(self, pairs) -> Encoded:
        return encode_pairs(pairs, self.src_tok, self.tgt_tok, self.cfg["reverse_source"])

    def average_last(self, best: selection.Best) -> dict:
        """--average-last K: the mean of the last K kept checkpoints as RUN/averaged/ (what
        ``attnseq average`` writes), scored on valid and test -> {"averaged": scores} for result.json,
        {} when off or when fewer than K were kept. best/ stays the best epoch; ``better_than_best``:
        whether the average scores higher on valid, which makes it the run's choice."""
        k = self.cfg["average_last"]
        if not k:
            return {}
        kept = self.run_dir.kept()
        if len(kept) < k:
            self.log(f"--average-last {k}: only {len(kept)} checkpoint(s) kept, nothing averaged")
            return {}
        path = average_run(self.run_dir.path, k, self.run_dir.path / "averaged")
        model = load_checkpoint(path, self.cfg["device"]).model
        what = "epochs" if all(p.name.startswith("epoch-") for _, p in kept[-k:]) else "steps"
        out = {"valid": self.score(model, self.sets["valid"]), what: [n for n, _ in kept[-k:]]}
        if "test" in self.sets:
            out["test"] = self.score(model, self.sets["test"])
        averaged = dict(out, path=str(path), better_than_best=bool(best.beaten_by(out["valid"])))
        self.log(report.averaged_line(averaged, selection.NAMES[best.by]))
        return {"averaged": averaged}
