"""Attention heatmaps and learning curves, drawn with matplotlib's Agg backend into files.

Everything here draws from arrays, tokens and metric rows it is given; loading a
checkpoint, translating or reading a run's files is the caller's part (``cli``).
``plot_attention(weights, src_tokens, tgt_tokens, ax=None)`` is the notebook
API; ``attnseq plot-attention`` and the end of ``attnseq train`` use the grid
version. Nothing opens a window.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .data.io import atomic_write_bytes
from .errors import ConfigError

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
        _set_title(ax, title, len(src_tokens))
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return ax if fig is None else fig


def _set_title(ax, title: str, n_src: int) -> None:
    """A heatmap's title, wrapped to about the panel's width (``n_src`` source tokens)."""
    import textwrap
    ax.set_title(textwrap.fill(title, width=max(40, int(3 * n_src) + 20)), fontsize=9)


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


def figure_rgb(fig, dpi: int = 80) -> np.ndarray:
    """A figure as an RGB array (H, W, 3) uint8 (the figure is closed)."""
    from matplotlib.image import imread
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return (imread(io.BytesIO(buf.getvalue()))[..., :3] * 255).round().astype(np.uint8)


ANIMATIONS = {"gif": "pillow", "mp4": "ffmpeg"}


def save_attention_animation(examples: list[dict], frames: list[dict], out, fps: int = 4, dpi: int = 70) -> Path:
    """Heatmaps that change from frame to frame, as an animated GIF (Pillow) or MP4 (ffmpeg), by suffix.

    ``examples``: [{src_tokens, tgt_tokens}], one panel each; ``frames``: [{"caption": str, "titles": [one per
    panel], "weights": [one (len(tgt_tokens), len(src_tokens)) array per panel]}]. The cells carry no numbers
    (too small to read in a frame, and costly to draw); the last frame is held a second longer. Each frame is
    drawn once, straight into matplotlib's writer; the file is written under a temporary name, then renamed.
    """
    from matplotlib import animation
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ANIMATIONS:
        raise ConfigError(f"--out {out}: an animation is a .gif or an .mp4")
    if not animation.writers.is_available(ANIMATIONS[fmt]):
        raise ConfigError(f"--out {out}: an MP4 needs ffmpeg, which matplotlib cannot find; install ffmpeg, "
                          "or write a .gif" if fmt == "mp4" else f"--out {out}: matplotlib has no Pillow writer")
    if not frames:
        raise ValueError("no frames to animate")
    first = frames[0]
    fig = plot_attention_grid([dict(ex, weights=w, title=t) for ex, w, t in
                               zip(examples, first["weights"], first["titles"])])
    panels = [ax for ax in fig.axes if ax.images][:len(examples)]
    for ax in panels:
        for text in list(ax.texts):
            text.remove()
    caption = fig.suptitle(first["caption"], fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=f".tmp.{fmt}")
    os.close(fd)
    os.chmod(tmp, 0o644)
    writer = animation.writers[ANIMATIONS[fmt]](fps=fps)
    try:
        with writer.saving(fig, tmp, dpi):
            for i in list(range(len(frames))) + [len(frames) - 1] * fps:     # hold the last frame a second
                for ax, w, t in zip(panels, frames[i]["weights"], frames[i]["titles"]):
                    ax.images[0].set_data(np.asarray(w, dtype=float))
                    _set_title(ax, t, np.shape(w)[1])
                caption.set_text(frames[i]["caption"])
                writer.grab_frame()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _plt().close(fig)
    return out


def curves_figure(rows: list[dict], title: str = "", best_epoch: int | None = None,
                  averaged: dict | None = None):
    """The Figure of ``plot_curves``: loss per epoch (train and valid), then the valid scores in %
    (token accuracy, exact match, BLEU). ``best_epoch`` marks best/'s epoch on both panels;
    ``averaged`` (result.json's "averaged": its "epochs" and "valid" scores) shades the averaged epochs
    and marks averaged/'s valid scores at the last of them."""
    if not rows:
        raise ValueError("no epochs to plot")
    plt = _plt()
    ep = [r["epoch"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [r["train_loss"] for r in rows], "o-", label="train")
    a1.plot(ep, [r["valid_loss"] for r in rows], "o-", label="valid")
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss (per token)")
    for key, label, style in (("valid_token_accuracy", "valid token acc", "o-"),
                              ("valid_exact_match", "valid exact match", "o-"),
                              ("test_exact_match", "test exact match", "o-"),     # old runs' rows only
                              ("valid_bleu", "valid BLEU", "s--")):
        have = [r for r in rows if key in r]    # a run resumed across versions holds a key in some rows only
        if have:
            scale = 1 if key == "valid_bleu" else 100
            a2.plot([r["epoch"] for r in have], [scale * r[key] for r in have], style, label=label)
    _mark_checkpoints(a1, a2, rows, best_epoch, averaged)
    from matplotlib.ticker import MaxNLocator
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2.set_xlabel("epoch")
    a2.set_ylabel("% (BLEU: 0-100)")
    a2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


CURVE_SCORES = (("exact_match", 100), ("bleu", 1), ("token_accuracy", 100))     # valid scores, and their % scale


def _mark_checkpoints(a1, a2, rows: list[dict], best_epoch: int | None, averaged: dict | None) -> None:
    """best/: a dotted line at its epoch, and stars on its valid loss and scores; averaged/: its epochs
    shaded, and diamonds at its valid loss and scores."""
    best = next((r for r in rows if r.get("epoch") == best_epoch), None)
    if best is not None:
        for ax in (a1, a2):
            ax.axvline(best_epoch, color="0.4", linestyle=":", linewidth=1)
        a1.plot([best_epoch], [best["valid_loss"]], "*", color="black", markersize=11,
                label=f"best/ (epoch {best_epoch})")
        points = [scale * best[f"valid_{k}"] for k, scale in CURVE_SCORES if f"valid_{k}" in best]
        a2.plot([best_epoch] * len(points), points, "*", color="black", markersize=11,
                label=f"best/ (epoch {best_epoch})")
    if averaged and averaged.get("epochs") and isinstance(averaged.get("valid"), dict):
        first, last, valid = averaged["epochs"][0], averaged["epochs"][-1], averaged["valid"]
        label = f"averaged/ (epochs {first}-{last})"
        for ax in (a1, a2):
            ax.axvspan(first - 0.5, last + 0.5, color="tab:purple", alpha=0.08)
        a1.plot([last], [valid["loss"]], "D", color="tab:purple", label=label)
        points = [scale * valid[k] for k, scale in CURVE_SCORES if k in valid]
        a2.plot([last] * len(points), points, "D", color="tab:purple", label=label)
    a1.legend(fontsize=8)


def plot_curves(rows: list[dict], out, title: str = "", best_epoch: int | None = None,
                averaged: dict | None = None) -> Path:
    """Loss and valid scores per epoch from metric rows (one dict per epoch, as in RUN/metrics.jsonl), best/
    and averaged/ marked (``curves_figure``), saved as PNG, SVG or PDF."""
    return save_figure(curves_figure(rows, title, best_epoch, averaged), out)
