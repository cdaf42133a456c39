"""The model behind the app: a translator, the server's limits, the batcher that feeds it, the metrics.

``Service`` knows nothing of HTTP. ``check`` turns a request body into a ``TranslateRequest`` (or a
``RequestError``); ``translate`` queues its texts and awaits their rows; ``run_batch`` is what the
batcher's thread calls: one ``translate`` of every gathered sentence, turned into JSON-ready dicts
there, off the event loop. Any ``TranslatorBase`` serves: attnseq's ``Translator`` or
``attnseq.export.OnnxTranslator``, whose searches are ``attnseq.run.decoding``'s.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import time

from pathlib import Path

import numpy as np

from .. import __version__
from ..nn.output_length import LEGACY_RULE, OutputLengthRule, output_limit
from ..nn.search import Ensemble
from ..run.decoding import EVAL_BATCH_SIZE
from ..run.parallel import usable_cores
from .batcher import Batcher, Closed, QueueFull
from .limits import ERROR_CLASSES, Limits, RequestError, SearchKey, TranslateRequest, flag, parse_body, parse_request
from .metrics import Metrics

ROWS_PER_THREAD = 16        # a gathered batch is split over the cores down to this many rows each


def engine_of(translator) -> str:
    """"onnxruntime" for an export's translator, else "attnseq"."""
    return "onnxruntime" if hasattr(translator, "manifest") else "attnseq"


def member(path, options: dict, rule: OutputLengthRule) -> dict:
    """One member as GET /v1/model shows it: the directory's name (a run's too for best/ and last/), its
    model options and output-length rule; never the path on the server."""
    p = Path(path)
    return {"name": f"{p.parent.name}/{p.name}" if p.name in ("best", "last") else p.name,
            "options": dict(options), "max_output_len": rule.to_json()}


def members_of(translator) -> list[dict]:
    """The checkpoints (or exports) the translator runs: one, or an ensemble's members in order."""
    if hasattr(translator, "exports"):
        return [member(e.directory, e.manifest["model"], e.graphs.output_len_rule) for e in translator.exports]
    return [member(c.path, c.model.config.to_dict(), c.model.output_len_rule)
            for c in getattr(translator, "checkpoints", ())]         # none for a stand-in translator (tests)


def ensemble_of(translator) -> dict | None:
    """An ensemble's combination ({mode, weights}, weights summing to 1), or None for one model."""
    engine = getattr(translator, "engine", None)
    if not isinstance(engine, Ensemble):
        return None
    return {"mode": engine.mode, "weights": [round(float(w), 6) for w in engine.weights]}


def output_rule(translator) -> OutputLengthRule:
    """The rule the searches stop by when a request gives none: the engine's (an ensemble's: its members'
    largest slope and offset)."""
    return getattr(getattr(translator, "engine", None), "output_len_rule", None) or LEGACY_RULE


def decode_batch_size(n: int, cores: int) -> int:
    """Rows per decoding batch for ``n`` gathered sentences: split over the cores, ROWS_PER_THREAD or more each."""
    threads = max(1, min(cores, n // ROWS_PER_THREAD))
    return max(1, math.ceil(n / threads))


def hypothesis(text: str, score, cand=None) -> dict:
    """One output as the API gives it; ``cand`` (a ``Candidate``) adds tokens, probabilities and attention."""
    out = {"text": text, "score": None if score is None else round(float(score), 6)}
    if cand is not None:
        probs = np.asarray(cand.probs, dtype=np.float64)
        out.update(tokens=list(cand.out_tokens), probs=np.round(probs, 6).tolist(),
                   logprob=round(float(np.log(np.maximum(probs, 1e-300)).sum()), 6),
                   attention=np.round(np.asarray(cand.weights, dtype=np.float64), 4).tolist())
    return out


def translation(tr, attention: bool) -> dict:
    """A ``Translation`` as the API gives it: text, score, the n best (and with ``attention``, src_tokens)."""
    cands = tr.candidates if attention else [None] * len(tr.nbest)
    nbest = [hypothesis(text, score, c) for (text, score), c in zip(tr.nbest, cands)]
    out = {"text": tr.text, "score": nbest[0]["score"], "nbest": nbest}
    if attention:
        out["src_tokens"] = list(tr.src_tokens)
    return out


class Service:
    """``translator`` (a TranslatorBase) behind ``limits``; ``name`` is what /v1/model calls the model.

    ``limits.max_input_len`` None takes the translator's own (its run's --max-len, else 200); a number
    becomes the translator's too, so no text the limit lets through is ever truncated.
    """

    def __init__(self, translator, limits: Limits | None = None, name: str = "model"):
        limits = (limits or Limits()).check()
        if limits.max_input_len is None:
            limits = dataclasses.replace(limits, max_input_len=int(translator.max_input_len))
        translator.max_input_len = limits.max_input_len
        self.translator, self.limits, self.name = translator, limits, name
        self.members, self.ensemble = members_of(translator), ensemble_of(translator)
        self.rule = output_rule(translator)
        self.output_cap = self.rule(limits.max_input_len)
        self.cores = usable_cores()
        self.draining = False                       # set on SIGTERM: new requests get 503
        self.active = 0                             # HTTP requests being answered
        self.batcher = Batcher(self.run_batch, limits.max_batch, limits.max_wait_ms / 1000, limits.max_queue)
        self.metrics = Metrics(self.batcher.depth, lambda: self.active,
                               {"engine": engine_of(translator), "model": name, "version": __version__},
                               ERROR_CLASSES)
        self.batcher.on_batch = self.metrics.on_batch

    def info(self) -> dict:
        """GET /v1/model: the model's options (an ensemble's first member's), its members, vocabularies,
        tokenizers, output-length rule and the limits."""
        tr = self.translator
        return {"name": self.name, "engine": engine_of(tr), "attnseq_version": __version__,
                "options": self.members[0]["options"] if self.members else {},
                "members": self.members, "ensemble": self.ensemble, "reverse_source": bool(tr.reverse),
                "vocab_size": {"source": tr.src_tok.vocab_size, "target": tr.tgt_tok.vocab_size},
                "tokenizers": {"source": tr.src_tok.kind, "target": tr.tgt_tok.kind},
                "max_output_len": self.rule.to_json(),
                "limits": {**dataclasses.asdict(self.limits), "max_output_len": self.output_cap}}

    def check(self, body: bytes, content_type: str | None) -> TranslateRequest:
        """A request body -> TranslateRequest; RequestError for anything a limit or the schema refuses.
        Tokenizes each text (and prefix) to hold it to the limits: call it off the event loop."""
        req = parse_request(parse_body(body, content_type), self.limits, self.output_cap)
        tok, most = self.translator.src_tok, self.limits.max_input_len
        lengths = []
        for k, text in enumerate(req.texts):
            lengths.append(len(tok.encode(text)))
            if lengths[-1] > most:
                raise RequestError(422, "input_too_long", f"texts[{k}] has {lengths[-1]} tokens; this server takes "
                                                          f"at most {most} ({flag('max_input_len')})")
        return self.check_prefixes(req, lengths) if req.prefix is not None else req

    def check_prefixes(self, req: TranslateRequest, lengths: list[int]) -> TranslateRequest:
        """``req`` with its prefixes held to the output limit of their texts (422 for a prefix that leaves the
        model no token: the search would lengthen every output of its batch for it), and without them when
        none has a token (as ``translate`` takes them: no prefix at all)."""
        found = False
        for k, (p, text, n) in enumerate(zip(req.prefix, req.texts, lengths)):
            size = len(self.translator.tgt_tok.encode(p)) if p else 0
            most = output_limit(max(n, 1) if text.strip() else 1, req.max_output_len, self.rule)   # blank: <unk>
            if size >= most:
                raise RequestError(422, "out_of_range", f"prefix[{k}] has {size} tokens; an output of texts[{k}] "
                                                        f"may have {most} (max_output_len, else the model's rule): "
                                                        "leave the model at least one")
            found = found or size > 0
        return req if found else dataclasses.replace(req, prefix=None)

    async def translate(self, req: TranslateRequest, arrived: float) -> list[dict]:
        """The request's translations, in order, once the batcher has run them; RequestError for a full
        queue (503, Retry-After), a server shutting down (503) or no answer by --timeout (504)."""
        try:
            job = self.batcher.submit(req.key, list(zip(req.texts, req.prefix or [None] * len(req.texts))),
                                      solo=req.seeded)
        except QueueFull as e:
            raise RequestError(503, "queue_full", f"busy: {e.waiting} sentences are waiting "
                                                  f"({flag('max_queue')} {self.limits.max_queue}); retry after "
                                                  f"{e.retry_after} s", {"Retry-After": str(e.retry_after)}) from None
        except Closed:
            raise RequestError(503, "shutting_down", "the server is shutting down", {"Connection": "close"}) from None
        left = arrived + self.limits.timeout_s - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), max(left, 0.0))
        except asyncio.TimeoutError:
            self.batcher.cancel(job)
            raise RequestError(504, "timeout", f"no answer within {self.limits.timeout_s:g} s "
                                               f"({flag('timeout_s')})") from None
        except asyncio.CancelledError:              # the client went away: its sentences leave the queue
            self.batcher.cancel(job)
            raise

    def run_batch(self, key: SearchKey, items: list[tuple]) -> list[dict]:
        """One model call (on the batcher's thread): ``items`` (text, prefix or None) searched as ``key``
        says, length-sorted and spread over the cores by the translator. A seeded request comes alone and is
        decoded in ``translate``'s default batches, so that its samples are ``attnseq translate``'s."""
        options = dict(key.options)
        size = EVAL_BATCH_SIZE if options["seed"] is not None else decode_batch_size(len(items), self.cores)
        found = self.translator.translate([t for t, _ in items], beam=key.beam, n_best=key.n_best,
                                          max_len=key.max_output_len, details=key.attention, batch_size=size,
                                          prefix=[p for _, p in items] if key.prefixed else None, **options)
        return [translation(tr, key.attention) for tr in found]

    def warm_up(self) -> None:
        """One short greedy (with details) and one beam translation, so that the first client does not
        wait for the kernels to compile."""
        self.translator.translate(["0"], details=True)
        self.translator.translate(["0"], beam=2, n_best=2)

    def drain(self) -> None:
        """Stop taking requests (the app answers 503 to new ones) and run what is queued now, without
        waiting for more to join it (SIGINT/SIGTERM)."""
        self.draining = True
        self.batcher.close(timeout=0)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, stop the batcher's thread."""
        self.draining = True
        self.batcher.close(timeout)
