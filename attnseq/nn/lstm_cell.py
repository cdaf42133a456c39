"""One step of the LSTM cell: as the book writes it, and fast, in place, on two paths.

Shapes: N batch, H hidden size. The pre-activations a = x Wx + h_prev Wh + b are (N, 4H):
four (N, H) blocks, one per gate. One step of the cell, in every version::

    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)     input, forget, output gates
    g       = tanh(a_g)                                    candidate cell value
    c       = f * c_prev + i * g
    h       = o * tanh(c)

Gate order. The parameters keep their blocks in the order [i, f, o, g] (saved
checkpoints depend on it); *Deep Learning from Scratch 2* (ch. 6) uses [f, g, i, o].
Column blocks of Wx (D, 4H), Wh (H, 4H) and b (4H):

    gate  activation   columns here   columns in the book (block)
    i     sigmoid      0:H            2H:3H  (2)
    f     sigmoid      H:2H           0:H    (0)
    o     sigmoid      2H:3H          3H:4H  (3)
    g     tanh         3H:4H          H:2H   (1)

so weights in the book's order become ours by taking its blocks in the order
(2, 0, 3, 1). The forget gate's bias (the f block of b) starts at 1.

1. The reference cell, ``lstm_cell_reference`` and ``lstm_cell_reference_backward``,
   is the book's LSTM for one step, sigmoid and tanh by name, fresh arrays. Tests
   use it as the oracle for everything below.
2. The fast cell, ``cell_forward`` and ``cell_backward``: one step in place on
   preallocated arrays, from the pre-activations in two halves, xa = x Wx + b and
   ha = h_prev Wh. On numpy arrays with the kernels on (``kernels.fused``) they run the
   compiled ``lstm_cell_forward`` / ``lstm_cell_backward`` (``kernels/cpu.py``), one
   pass over memory each; otherwise (cupy, or numpy without numba) their xp twins
   ``lstm_cell_forward_`` / ``lstm_cell_backward_``, array operations written with ``xp``.

The gate-scale trick (the xp twins). sigmoid(a) = 1 / (1 + exp(-a)) and
tanh(a) = 2 sigmoid(2a) - 1, so a single exp over all 4H columns serves every
gate once the pre-activations are multiplied by -1 (i, f, o) and -2 (g): ``activate_gates_``.
"""
from __future__ import annotations

from .backend import get_array_module, ignore_overflow


def split_gates(a):
    """(N, 4H) -> its four (N, H) blocks (i, f, o, g), as views."""
    H = a.shape[1] // 4
    return a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]


# -- the reference cell: the book, one step ------------------------------------------------

def sigmoid(x):
    return 1.0 / (1.0 + get_array_module(x).exp(-x))


def tanh(x):
    return get_array_module(x).tanh(x)


def lstm_cell_reference(a, c_prev):
    """One step as the book writes it: a (N, 4H) pre-activations, c_prev (N, H)
    -> h (N, H), c (N, H), gates (i, f, o, g) each (N, H) for the backward."""
    a_i, a_f, a_o, a_g = split_gates(a)
    i, f, o, g = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o), tanh(a_g)
    c = f * c_prev + i * g
    h = o * tanh(c)
    return h, c, (i, f, o, g)


def lstm_cell_reference_backward(dh, dc, c_prev, c, gates):
    """The book's LSTM.backward for one step.

    dh, dc (N, H) the gradients reaching h and c; c_prev, c, gates as in the forward
    -> da (N, 4H) the gradient of the pre-activations, dc_prev (N, H). The products
    follow from da: dWx = x.T da, dWh = h_prev.T da, db = da summed over N,
    dx = da Wx.T, dh_prev = da Wh.T.
    """
    i, f, o, g = gates
    tanh_c = tanh(c)
    ds = dc + dh * o * (1 - tanh_c ** 2)                           # the gradient reaching c, all paths
    di = ds * g * i * (1 - i)
    df = ds * c_prev * f * (1 - f)
    do = dh * tanh_c * o * (1 - o)
    dg = ds * i * (1 - g ** 2)
    return get_array_module(dh).concatenate([di, df, do, dg], axis=1), ds * f


# -- the fast cell: one step, in place, on preallocated arrays ---------------------------------

def activate_gates_(a):
    """Pre-activations a (N, 4H) -> the gates [i, f, o, g], in place, through one exp (the gate-scale
    trick). exp may overflow to inf, and 1 / inf = 0 is the right sigmoid: run under ``ignore_overflow``."""
    xp = get_array_module(a)
    g = a[:, 3 * a.shape[1] // 4:]
    a *= -1.0
    g *= 2.0                                                        # -a for i, f, o; -2a for g
    xp.exp(a, out=a)
    a += 1.0
    xp.divide(1.0, a, out=a)                                        # sigmoid(a); sigmoid(2a) for g
    g *= 2.0
    g -= 1.0                                                        # tanh(a) = 2 sigmoid(2a) - 1
    return a


def tanh_(x, out):
    """out = tanh(x) = 2 / (1 + exp(-2x)) - 1, through one exp (numpy's tanh is slower)."""
    xp = get_array_module(x)
    xp.multiply(x, -2.0, out=out)
    xp.exp(out, out=out)
    out += 1.0
    xp.divide(2.0, out, out=out)                                    # divide beats reciprocal in numpy
    out -= 1.0
    return out


def lstm_cell_forward_(xa, ha, c_prev, gates, c, tc, h):
    """The xp twin of the compiled ``lstm_cell_forward``: one step from a = xa + ha (N, 4H).

    Writes the gates [i, f, o, g] (N, 4H) and the (N, H) c = f c_prev + i g, tc = tanh(c)
    and h = o tanh(c). gates may be xa or ha itself, c may be c_prev.
    """
    xp = get_array_module(gates)
    xp.add(xa, ha, out=gates)
    with ignore_overflow(xp):
        i, f, o, g = split_gates(activate_gates_(gates))
        xp.multiply(i, g, out=tc)                                   # tc as scratch
        xp.multiply(f, c_prev, out=c)
        c += tc                                                     # c = f * c_prev + i * g
        tanh_(c, tc)
        xp.multiply(o, tc, out=h)                                   # h = o * tanh(c)


def lstm_cell_backward_(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work=None):
    """The xp twin of the compiled ``lstm_cell_backward``: ``lstm_cell_reference_backward`` on the
    forward's saved arrays, with dh + dh_rec reaching h.

    dh (N, H) reaches h_t from above, dh_rec (N, H) from the next step, dc (N, H) c_t; gates (N, 4H),
    c_prev, tc = tanh(c_t) (N, H) from the forward. Writes da (N, 4H) and dc_prev (N, H), which may
    be dc. work (N, 4H) is scratch (made here when None). Whole-width operations where it can:
    numpy is slow on the (N, H) blocks of an (N, 4H) array.
    """
    xp = get_array_module(gates)
    N, H4 = gates.shape
    work = xp.empty_like(gates) if work is None else work
    i, f, o, g = split_gates(gates)
    di, df, do, dg = split_gates(da)
    dht, tmp = work.reshape(-1)[:N * H4 // 2].reshape(2, N, H4 // 4)   # two (N, H) scratch arrays
    xp.add(dh, dh_rec, out=dht)                                     # all of h_t's gradient
    xp.multiply(dht, tc, out=do)
    xp.multiply(tc, tc, out=tmp)
    xp.subtract(1.0, tmp, out=tmp)
    tmp *= o
    tmp *= dht
    ds = xp.add(dc, tmp, out=dc_prev)                               # ds = dc + dh o (1 - tanh(c)^2)
    xp.multiply(ds, g, out=di)
    xp.multiply(ds, c_prev, out=df)
    xp.multiply(ds, i, out=dg)
    xp.subtract(1.0, gates, out=work)                               # d gates / d a: s (1 - s) for i, f, o
    work *= gates
    dg_da = work[:, 3 * H4 // 4:]
    xp.multiply(g, g, out=dg_da)
    xp.subtract(1.0, dg_da, out=dg_da)                              # and 1 - g^2 for g
    da *= work
    dc_prev *= f                                                    # dc_prev = ds f


def cell_forward(k, xa, ha, c_prev, gates, c, tc, h):
    """One step forward on the compiled kernels ``k`` (from ``kernels.fused``), or with None on the
    xp path: the arguments of ``lstm_cell_forward_``. The compiled cell runs fastest with
    every output apart from the inputs."""
    if k is not None:
        k.lstm_cell_forward(xa, ha, c_prev, gates, c, tc, h)
    else:
        lstm_cell_forward_(xa, ha, c_prev, gates, c, tc, h)


def cell_backward(k, dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work=None):
    """One step back on the compiled kernels ``k``, or with None on the xp path: the arguments
    of ``lstm_cell_backward_`` (work: its scratch). The caller then takes dh_prev = da Wh^T."""
    if k is not None:
        k.lstm_cell_backward(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev)
    else:
        lstm_cell_backward_(dh, dh_rec, dc, gates, c_prev, tc, da, dc_prev, work)
