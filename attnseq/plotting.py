"""Attention heatmaps and learning curves, drawn with matplotlib's Agg backend into files.

``plot_attention(weights, src_tokens, tgt_tokens, ax=None)`` is the notebook
API; ``attnseq plot-attention`` and the end of ``attnseq train`` use the grid
version. Nothing opens a window.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .data.io import atomic_write_bytes, read_pairs

ANNOTATE_MAX_CELLS = 160


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def readable(piece: str) -> str:
    """A token as a label: spaces visible, sentencepiece's word marker as a middle dot, Hangul romanised
    when no installed font can draw it."""
    if piece == " ":
        return "␣"
    if piece == "<eos>":
        return "<eos>"
    piece = piece.replace("▁", "·")
    return piece if _has_hangul_font() else romanize_hangul(piece)


_FONT = {}


def _has_hangul_font() -> bool:
    if "hangul" not in _FONT:
        from matplotlib import font_manager
        names = {f.name for f in font_manager.fontManager.ttflist}
        found = [n for n in ("Noto Sans CJK KR", "NanumGothic", "Noto Sans KR", "UnDotum", "Baekmuk Gulim") if n in names]
        _FONT["hangul"] = found[0] if found else None
        if found:
            import matplotlib
            matplotlib.rcParams["font.family"] = ["DejaVu Sans", found[0]]
    return _FONT["hangul"] is not None


_L = ["g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "", "j", "jj", "ch", "k", "t", "p", "h"]
_V = ["a", "ae", "ya", "yae", "eo", "e", "yeo", "ye", "o", "wa", "wae", "oe", "yo", "u", "wo", "we", "wi",
      "yu", "eu", "ui", "i"]
_T = ["", "k", "k", "k", "n", "n", "n", "t", "l", "k", "m", "l", "l", "l", "p", "l", "m", "p", "p", "t", "t",
      "ng", "t", "t", "k", "t", "p", "t"]


def romanize_hangul(text: str) -> str:
    """Revised Romanization, syllable by syllable (no sound-change rules): 학교 -> hakgyo."""
    out = []
    for ch in text:
        code = ord(ch) - 0xAC00
        if 0 <= code < 11172:
            out.append(_L[code // 588] + _V[(code % 588) // 28] + _T[code % 28])
        else:
            out.append(ch)
    return "".join(out)


def plot_attention(weights, src_tokens, tgt_tokens, ax=None, title: str | None = None, colorbar: bool = True):
    """Heatmap of weights (len(tgt_tokens), len(src_tokens)): source along x, output along y.

    Returns the Axes when ``ax`` is given, else a new Figure holding it.
    """
    plt = _plt()
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(tgt_tokens), len(src_tokens)):
        raise ValueError(f"weights: shape {w.shape} does not match {len(tgt_tokens)} output x "
                         f"{len(src_tokens)} source tokens")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(src_tokens) + 2), max(3.0, 0.32 * len(tgt_tokens) + 1.5)))
    im = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(src_tokens)), [readable(t) for t in src_tokens], rotation=90, fontsize=8)
    ax.set_yticks(range(len(tgt_tokens)), [readable(t) for t in tgt_tokens], fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if w.size <= ANNOTATE_MAX_CELLS:
        for (i, j), v in np.ndenumerate(w):
            ax.text(j, i, "1" if v >= 0.995 else f"{v:.2f}"[1:], ha="center", va="center", fontsize=6,
                    color="black" if v > 0.6 else "white")
    if title:
        import textwrap
        ax.set_title(textwrap.fill(title, width=max(40, int(3 * len(src_tokens)) + 20)), fontsize=9)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return ax if fig is None else fig


def plot_attention_grid(examples: list[dict], ncols: int | None = None):
    """Several heatmaps in one Figure; each example has weights, src_tokens, tgt_tokens and title."""
    plt = _plt()
    n = len(examples)
    if n == 0:
        raise ValueError("no examples to plot")
    ncols = ncols or (n if n <= 2 else 2 if n == 4 else 3)
    nrows = math.ceil(n / ncols)
    w = max(len(e["src_tokens"]) for e in examples)
    h = max(len(e["tgt_tokens"]) for e in examples)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * (0.3 * w + 2.2), nrows * (0.3 * h + 1.8)), squeeze=False)
    for ax, ex in zip(axes.flat, examples):
        plot_attention(ex["weights"], ex["src_tokens"], ex["tgt_tokens"], ax=ax, title=ex.get("title"))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def save_figure(fig, out: str | Path) -> Path:
    """Write a figure as PNG, SVG or PDF (by suffix), atomically."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ConfigError(f"--out {out}: use a .png, .svg or .pdf file name")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    _plt().close(fig)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    atomic_write_bytes(out, buf.getvalue())
    return out


def examples_from_translations(texts, translations, refs=None) -> list[dict]:
    out = []
    for k, (text, tr) in enumerate(zip(texts, translations)):
        mark = ""
        if refs is not None:
            mark = "  ✓" if tr.text == refs[k] else f"  ✗ (want {refs[k]})"
        out.append(dict(weights=tr.weights, src_tokens=tr.src_tokens, tgt_tokens=tr.out_tokens,
                        title=f"{readable(text)} → {readable(tr.text)}{mark}"))
    return out


def plot_texts(ckpt, texts: list[str], out, refs=None, device: str = "cpu", beam: int = 1) -> Path:
    from .run.inference import Translator
    tr = Translator(ckpt, device)
    results = tr.translate(texts, beam=beam)
    return save_figure(plot_attention_grid(examples_from_translations(texts, results, refs)), out)


def plot_curves(run, out) -> Path:
    """Loss and accuracy per epoch from RUN/metrics.jsonl."""
    path = Path(run) / "metrics.jsonl"
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (is {run} a run directory?)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: malformed line ({e})") from None
    rows = [r for r in rows if "epoch" in r]
    if not rows:
        raise ConfigError(f"{path}: no epochs recorded yet")
    plt = _plt()
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    a1.plot(ep, [r["valid_loss"] for r in rows], "o-", label="valid")
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss (per token)")
    a1.legend()
    for key, label in (("valid_token_accuracy", "valid token acc"), ("valid_exact_match", "valid exact match"),
                       ("test_exact_match", "test exact match")):
        if key in rows[0]:
            a2.plot(ep, [100 * r[key] for r in rows], "o-", label=label)
    if "valid_bleu" in rows[0]:
        a2.plot(ep, [r["valid_bleu"] for r in rows], "s--", label="valid BLEU")
    a2.set_xlabel("epoch")
    a2.set_ylabel("%")
    a2.legend()
    fig.suptitle(str(run))
    fig.tight_layout()
    return save_figure(fig, out)


def run_plot_attention(args) -> int:
    texts, refs = list(args.text or []), None
    if args.data:
        pairs = read_pairs(args.data)
        if args.wrong_only:
            from .run.inference import Translator
            tr = Translator(args.ckpt, args.device)
            outs = tr.translate([s for s, _ in pairs])
            pairs = [p for p, o in zip(pairs, outs) if o.text != p[1]]
            if not pairs:
                print(f"attnseq plot-attention: every example in {args.data} is right; nothing to plot")
                return 0
        pairs = pairs[:args.n]
        texts += [s for s, _ in pairs]
        refs = [None] * len(args.text or []) + [t for _, t in pairs] if not args.text else None
    if not texts:
        raise ConfigError("give --text \"...\" (repeatable) or --data FILE")
    out = plot_texts(args.ckpt, texts, args.out, refs, args.device, args.beam)
    print(out)
    return 0


def add_plot_attention_command(sub) -> None:
    p = sub.add_parser("plot-attention", help="draw attention heatmaps for texts or examples from a data file")
    p.add_argument("--ckpt", required=True, metavar="RUN")
    p.add_argument("--text", action="append", metavar="TEXT", help="a source text (repeatable)")
    p.add_argument("--data", metavar="FILE", help="take examples from a TSV/question_answer file")
    p.add_argument("--n", type=int, default=6, help="how many examples from --data (6)")
    p.add_argument("--wrong-only", action="store_true", help="only examples the model gets wrong")
    p.add_argument("--out", required=True, metavar="FILE.png|.svg|.pdf")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_plot_attention)
