"""Tokenizers: text <-> token ids, one interface for the whole pipeline.

- ``CharTokenizer``: one token per character (date, addition).
- ``WordTokenizer``: whitespace-separated words.
- ``SentencePieceTokenizer``: subwords from a sentencepiece model (translation).

Every tokenizer reserves ids 0..3 for ``<pad>``, ``<bos>``, ``<eos>`` and
``<unk>``. Unknown characters, words or pieces map to ``<unk>``, never to an
error. ``encode`` returns ids without bos/eos; ``decode`` drops special tokens.
Each saves itself into a checkpoint directory and loads back from it.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from ..errors import CheckpointError, ConfigError
from .io import atomic_write_bytes, atomic_write_text

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
SPM_MAX_SENTENCES = 200_000     # sentencepiece learns its pieces from at most this many texts (a fixed sample)


class Tokenizer:
    kind = "base"

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def pieces(self, ids) -> list[str]:
        """Readable token strings for ids (for plots): specials as <eos>, <unk>."""
        raise NotImplementedError

    def tokenize(self, text: str) -> list[str]:
        return self.pieces(self.encode(text))

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def save(self, directory: Path, name: str) -> None:
        raise NotImplementedError


def _strip_specials(ids) -> list[int]:
    out = []
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


class VocabTokenizer(Tokenizer):
    """A tokenizer over an explicit token list; ``split``/``join`` define the unit."""

    def __init__(self, tokens: list[str]):
        if tokens[:4] != SPECIALS:
            raise ValueError("a vocabulary must start with <pad>, <bos>, <eos>, <unk>")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary must not repeat a token")

    @classmethod
    def build(cls, texts, max_size: int | None = None, min_freq: int = 1):
        """Most frequent units first (ties alphabetical), after the specials."""
        counts = Counter(u for text in texts for u in cls.split(text))
        units = sorted((u for u, c in counts.items() if c >= min_freq and u not in SPECIALS),
                       key=lambda u: (-counts[u], u))
        if max_size is not None:
            units = units[:max(0, max_size - len(SPECIALS))]
        return cls(SPECIALS + units)

    @staticmethod
    def split(text: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def join(units: list[str]) -> str:
        raise NotImplementedError

    def encode(self, text):
        get = self.index.get
        return [get(u, UNK_ID) for u in self.split(text)]

    def decode(self, ids):
        return self.join([self.tokens[i] if i < len(self.tokens) else UNK for i in _strip_specials(ids)])

    def pieces(self, ids):
        return [self.tokens[int(i)] if int(i) < len(self.tokens) else UNK for i in ids]

    @property
    def vocab_size(self):
        return len(self.tokens)

    def save(self, directory, name):
        atomic_write_text(Path(directory) / f"{name}.json",
                          json.dumps({"kind": self.kind, "tokens": self.tokens}, ensure_ascii=False, indent=0))


class CharTokenizer(VocabTokenizer):
    kind = "char"

    @staticmethod
    def split(text):
        return list(text)

    @staticmethod
    def join(units):
        return "".join(units)


class WordTokenizer(VocabTokenizer):
    kind = "word"

    @staticmethod
    def split(text):
        return text.split()

    @staticmethod
    def join(units):
        return " ".join(units)


class SentencePieceTokenizer(Tokenizer):
    """Subwords from a trained sentencepiece model (ids 0..3 are pad, bos, eos, unk)."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm
        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        ids = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (PAD_ID, BOS_ID, EOS_ID, UNK_ID):
            raise ValueError(f"sentencepiece model has special ids {ids}; attnseq needs (0, 1, 2, 3)")

    @classmethod
    def train(cls, texts, vocab_size: int = 8000, model_type: str = "unigram",
              max_sentences: int | None = SPM_MAX_SENTENCES):
        """Train on texts. Every character is kept, so the vocabulary grows (with a warning) to hold them all.

        More than ``max_sentences`` texts (a big corpus): the pieces are learnt from a random sample of
        that many (seeded, so the same texts give the same vocabulary), plus one line holding the
        characters only the rest have; time and memory stay bounded.
        """
        import io
        import warnings

        import sentencepiece as spm
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ConfigError("sentencepiece: no non-empty text to train on")
        distinct = {c for c in set("".join(texts)) if not c.isspace()}
        chars = len(distinct) + len(SPECIALS) + 1
        if max_sentences is not None and len(texts) > max_sentences:
            texts = _sample_keeping_chars(texts, max_sentences, distinct)
        if vocab_size < chars:
            warnings.warn(f"--vocab-size {vocab_size} cannot hold the {chars - len(SPECIALS) - 1} distinct "
                          f"characters of the training text; using {chars}", stacklevel=2)
            vocab_size = chars
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
                model_type=model_type, character_coverage=1.0, pad_id=PAD_ID, bos_id=BOS_ID,
                eos_id=EOS_ID, unk_id=UNK_ID, pad_piece=PAD, bos_piece=BOS, eos_piece=EOS, unk_piece=UNK,
                hard_vocab_limit=False, minloglevel=2, num_threads=1, normalization_rule_name="identity")
        except RuntimeError as e:
            raise ConfigError(f"sentencepiece could not train a {vocab_size}-piece vocabulary: "
                              f"{str(e).splitlines()[0]}") from None
        return cls(buf.getvalue())

    def encode(self, text):
        return list(self.sp.encode(text))

    def decode(self, ids):
        return self.sp.decode(_strip_specials(ids))

    def pieces(self, ids):
        return [self.sp.id_to_piece(int(i)) if 0 <= int(i) < self.vocab_size else UNK for i in ids]

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def save(self, directory, name):
        atomic_write_bytes(Path(directory) / f"{name}.spm.model", self.proto)
        atomic_write_text(Path(directory) / f"{name}.json", json.dumps({"kind": self.kind}))


def _sample_keeping_chars(texts: list[str], n: int, chars: set[str]) -> list[str]:
    """``n`` of ``texts`` at random (seed 0), and a line of the ``chars`` none of them has."""
    sample = random.Random(0).sample(texts, n)
    missing = chars - set("".join(sample))
    return sample + (["".join(sorted(missing))] if missing else [])


TOKENIZERS = {"char": CharTokenizer, "word": WordTokenizer, "sentencepiece": SentencePieceTokenizer}


def load_tokenizer(directory: str | Path, name: str) -> Tokenizer:
    """Load ``{name}.json`` (and ``{name}.spm.model``) from a checkpoint directory."""
    path = Path(directory) / f"{name}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        kind = meta["kind"]
        if kind == "sentencepiece":
            return SentencePieceTokenizer((Path(directory) / f"{name}.spm.model").read_bytes())
        if kind not in ("char", "word"):
            raise CheckpointError(f"{path}: unknown tokenizer kind {kind!r}")
        tokens = meta["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise CheckpointError(f"{path}: 'tokens' must be a list of strings")
        return TOKENIZERS[kind](tokens)
    except CheckpointError:
        raise
    except FileNotFoundError as e:
        raise CheckpointError(f"{directory}: missing vocabulary file {Path(e.filename).name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: malformed JSON ({e})") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: bad vocabulary ({e})") from None
