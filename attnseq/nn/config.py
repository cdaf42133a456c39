"""``ModelConfig``: what an ``AttentionSeq2seq`` is made of, typed and checked, written down once.

Its fields: the vocabulary and layer sizes, dropout, init, dtype, seed and special ids of the book's
model, then the options beyond it (``OPTIONS``), each with the book's value as its default. Who reads it:

- ``AttentionSeq2seq`` is built from it (``model.config``; its keywords and ``from_config`` make one);
- ``attnseq train``'s option table takes its model rows' types, defaults and choices from the fields
  (``attnseq.run.config.model_row``);
- a checkpoint's config.json "model" section is ``to_dict()``, read back by ``from_dict``, where a
  missing key means its default, so checkpoints from before an option existed load as they were;
- the ONNX export reads the model's options through it (``attnseq.export.spec``).

Field metadata: ``choices`` where a value is one of a few names; ``option`` on the options beyond the
book's model.
"""
import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .attention import SCORES
from .encoders import CELLS
from .layers import INIT_SCHEMES
from ..data.tokenizers import BOS_ID, EOS_ID, PAD_ID

DTYPES = ("float32", "float64")


def _option(default, choices=None):
    return field(default=default, metadata=dict(option=True, choices=choices))


@dataclass(frozen=True)
class ModelConfig:
    """The model's options. Checked when made: a bad value is a ValueError naming it (an unknown
    name, through ``from_dict``, a TypeError, as for any keyword); values become plain int, float,
    bool or str (dtype its name), so ``to_dict()`` is JSON as it is."""
    src_vocab_size: int
    tgt_vocab_size: int
    wordvec_size: int = 16
    hidden_size: int = 256
    dropout: float = 0.0
    init: str = field(default="xavier", metadata=dict(choices=INIT_SCHEMES))
    dtype: str = field(default="float32", metadata=dict(choices=DTYPES))
    seed: int = 0
    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    # -- beyond the book's model; see AttentionSeq2seq for what each does
    encoder_layers: int = _option(1)
    decoder_layers: int = _option(1)
    bidirectional: bool = _option(False)
    attention: str = _option("dot", SCORES)
    input_feeding: bool = _option(False)
    label_smoothing: float = _option(0.0)
    tie_embeddings: bool = _option(False)
    cell: str = _option("lstm", tuple(CELLS))

    def __post_init__(self):
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {self.init!r}")
        for name in ("src_vocab_size", "tgt_vocab_size", "wordvec_size", "hidden_size", "encoder_layers",
                     "decoder_layers"):
            _check_count(name, getattr(self, name))
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        for name in ("bidirectional", "input_feeding", "tie_embeddings"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.attention not in SCORES:
            raise ValueError(f"attention must be one of {', '.join(SCORES)}, got {self.attention!r}")
        eps = self.label_smoothing
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
            raise ValueError(f"label_smoothing must be a number in [0, 1), got {eps!r}")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even for a bidirectional encoder (each direction gets "
                             f"hidden_size // 2), got {self.hidden_size}")
        for f in dataclasses.fields(self):                          # plain Python values: JSON as they are
            object.__setattr__(self, f.name, dtype.name if f.name == "dtype" else f.type(getattr(self, f.name)))

    @classmethod
    def options(cls) -> dict:
        """The options beyond the book's model, with the book's values: {name: default}."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("option")}

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """From a dict of fields (config.json's "model"; keys left out take their defaults). An unknown
        key is a TypeError naming it, as an unknown keyword is."""
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"AttentionSeq2seq got unknown option(s) {', '.join(unknown)}; "
                            f"its options are {', '.join(cls.options())}")
        return cls(**values)

    def to_dict(self) -> dict:
        """{field: value}, what config.json's "model" holds."""
        return dataclasses.asdict(self)

    def __getitem__(self, name: str):
        """``config["hidden_size"]``: read access by name, as for the dict the model's config once was."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)


def _check_count(name: str, v) -> None:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
