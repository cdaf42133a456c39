"""The longest output a model decodes: ``OutputLengthRule``, model metadata saved with its checkpoint.

The longest output for a batch whose longest source has Ts tokens is ``output_limit(Ts, max_len,
rule)``, the one place every decoder (attnseq's, and the ONNX runtime's) asks: ``max_len`` when a
caller gives one (tokens, or an ``OutputLengthRule`` of its own), else ``rule``: a model's
``output_len_rule`` (the one ``OutputLengthRule.fit`` drew from its training split, saved in
config.json under ``max_output_len``) or an export manifest's; else ``LEGACY_RULE``, 2 * Ts + 10,
what checkpoints written before the rule was fitted keep (``saved_rule``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

RATIO_QUANTILE = 0.99       # the slope follows this quantile of output/source length; rarer ratios raise the offset
MIN_MARGIN = 10             # tokens beyond the longest training output the rule allows at least ...
MARGIN_SHARE = 0.1          # ... or this share of the longest training output, if more
_RULE_TEXT = re.compile(r"\s*(?:(\d+)\s*\*\s*ts\s*(?:([+-])\s*(\d+))?|(\d+))\s*", re.IGNORECASE)


@dataclass(frozen=True)
class OutputLengthRule:
    """The longest output, in tokens (eos included), for a batch whose longest source has Ts tokens:
    ``scale * Ts + offset``; scale 0 is a fixed limit. Linear, so an ONNX manifest records it as it is."""
    scale: int
    offset: int

    def __post_init__(self):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.scale, self.offset)):
            raise ValueError(f"output length rule: scale and offset must be integers, "
                             f"got {self.scale!r}, {self.offset!r}")
        if self.scale < 0 or self.scale + self.offset < 1:
            raise ValueError(f"output length rule {self.text} must give at least one token: scale >= 0 and "
                             "scale + offset >= 1")

    def __call__(self, src_len: int) -> int:
        return self.scale * int(src_len) + self.offset

    @property
    def text(self) -> str:
        """"7 * Ts + 10", or "60" for a fixed limit."""
        if self.scale == 0:
            return str(self.offset)
        return f"{self.scale} * Ts {'-' if self.offset < 0 else '+'} {abs(self.offset)}"

    @classmethod
    def parse(cls, value) -> "OutputLengthRule":
        """``--max-output-len``: "60" or 60 (that many tokens, whatever the source), "3*Ts+5" (3 tokens
        per source token, plus 5), or a rule already. ValueError saying what it takes otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(0, value)
        m = _RULE_TEXT.fullmatch(value) if isinstance(value, str) else None
        if m is None:
            raise ValueError(f"expected N (tokens) or S*Ts+O (S tokens per source token, plus O), "
                             f"e.g. 60 or 3*Ts+5, got {value!r}")
        if m[4] is not None:
            return cls(0, int(m[4]))
        return cls(int(m[1]), (-1 if m[2] == "-" else 1) * int(m[3] or 0))

    @classmethod
    def fit(cls, src_len, out_len) -> "OutputLengthRule":
        """The rule for a training split: src_len (M,) source tokens, out_len (M,) the output tokens each
        target needs (its tokens and eos).

        scale: the 99th percentile of out_len / src_len, rounded up, and at least 2; offset: the least
        with which scale * Ts + offset covers every pair, plus a margin (10 tokens, or a tenth of the
        longest output if more), and at least 10. So no training pair comes near the limit, the rule
        never gives less than ``LEGACY_RULE`` (2 * Ts + 10), and a few odd pairs (a one-word source with
        a long target) raise the offset by a constant rather than the slope for every length.
        """
        src, out = np.asarray(src_len, dtype=np.int64), np.asarray(out_len, dtype=np.int64)
        if src.size == 0 or src.shape != out.shape or src.min() < 1 or out.min() < 1:
            raise ValueError("OutputLengthRule.fit needs one positive source and output length per pair")
        ratio = float(np.quantile(out / src, RATIO_QUANTILE))
        scale = max(LEGACY_RULE.scale, math.ceil(ratio - 1e-9))         # 1e-9: 6.000000001 from rounding is 6
        margin = max(MIN_MARGIN, math.ceil(MARGIN_SHARE * int(out.max())))
        return cls(scale, max(LEGACY_RULE.offset, int((out - scale * src).max()) + margin))

    def to_json(self) -> dict:
        return dict(scale=self.scale, offset=self.offset, rule=self.text)

    @classmethod
    def from_json(cls, value, where: str) -> "OutputLengthRule":
        """A rule as ``to_json`` wrote it (``rule`` is for people and not read); CheckpointError naming ``where``."""
        try:
            return cls(value["scale"], value["offset"])
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{where}: expected {{\"scale\": int, \"offset\": int}} giving at least one "
                                  f"token, got {value!r} ({e})") from None


LEGACY_RULE = OutputLengthRule(2, 10)   # before rules were fitted: what a checkpoint without one keeps
CONFIG_KEY = "max_output_len"           # config.json's key for a checkpoint's rule (as the ONNX manifest's)


def saved_rule(config: dict, where) -> OutputLengthRule:
    """A checkpoint's rule from its parsed config.json (``where``): its ``max_output_len``, or
    ``LEGACY_RULE`` for a checkpoint written before rules were fitted. CheckpointError when malformed."""
    if config.get(CONFIG_KEY) is None:
        return LEGACY_RULE
    return OutputLengthRule.from_json(config[CONFIG_KEY], f"{where}: {CONFIG_KEY}")


def default_max_len(src_len: int, rule: OutputLengthRule | None = None) -> int:
    """The longest output for a batch whose longest source has ``src_len`` tokens by ``rule``
    (a model's ``output_len_rule``; an export's manifest's); None: ``LEGACY_RULE``, 2 * Ts + 10."""
    return (rule or LEGACY_RULE)(src_len)


def output_limit(src_len: int, max_len=None, rule: OutputLengthRule | None = None) -> int:
    """Where every decoder stops a batch whose longest source has ``src_len`` tokens: ``max_len`` when
    given (tokens, or an ``OutputLengthRule``: a caller's override), else ``default_max_len(src_len, rule)``."""
    if max_len is None:
        return default_max_len(src_len, rule)
    if isinstance(max_len, OutputLengthRule):
        return max_len(src_len)
    return int(max_len)
