"""One step of the GRU cell: as the book writes it, and fast, in place, on two paths.

Shapes: N batch, D input size, H hidden size. Parameters Wx (D, 3H), Wh (H, 3H), b (3H), three
(., H) column blocks each, in the book's order [z, r, h~] (*Deep Learning from Scratch 2*,
appendix C, ``GRU``). One step of the cell, in every version::

    z  = sigmoid(x Wx_z + h_prev Wh_z + b_z)           update gate
    r  = sigmoid(x Wx_r + h_prev Wh_r + b_r)           reset gate
    h~ = tanh(x Wx_h + (r * h_prev) Wh_h + b_h)        candidate state
    h  = (1 - z) * h_prev + z * h~

The reset gate acts on h_prev before its product with Wh_h (ONNX's GRU with
``linear_before_reset=0``; cuDNN and PyTorch apply it after). So a step takes two products
with Wh: h_prev Wh_zr first, then (r * h_prev) Wh_h once r is known.

1. The reference cell, ``gru_cell_reference`` and ``gru_cell_reference_backward``, is the
   book's GRU for one step, sigmoid and tanh by name, fresh arrays, its weight gradients
   included. Tests use it as the oracle for everything below.
2. The fast cell, in two halves around the second product, in place on preallocated arrays:
   ``gates_forward`` writes z, r and r * h_prev from xa = x Wx + b and hzr = h_prev Wh_zr;
   ``state_forward`` writes h~ and h from xa and hh = (r * h_prev) Wh_h. Backwards,
   ``state_backward`` writes the gradients of the z and h~ pre-activations and h_prev's
   share through (1 - z); ``gates_backward``, given drh = da_h Wh_h^T, the r pre-activation's
   and h_prev's share through r * h_prev. On numpy arrays with the kernels on
   (``kernels.fused_gru``) they run the compiled ``gru_*`` kernels (``kernels/gru_cpu.py``);
   otherwise (cupy, or numpy without numba) their xp twins ``gru_*_``.
"""
from __future__ import annotations

from .backend import get_array_module, ignore_overflow
from .lstm_cell import sigmoid, tanh, tanh_


def split3(a):
    """(N, 3H) -> its three (N, H) blocks (z, r, h~), as views."""
    H = a.shape[-1] // 3
    return a[..., :H], a[..., H:2 * H], a[..., 2 * H:]


# -- the reference cell: the book, one step ------------------------------------------------

def gru_cell_reference(x, h_prev, Wx, Wh, b):
    """The book's GRU.forward: x (N, D), h_prev (N, H) -> h_next (N, H) and the cache
    (x, h_prev, z, r, h_hat) for the backward."""
    Wxz, Wxr, Wxh = split3(Wx)
    Whz, Whr, Whh = split3(Wh)
    bz, br, bh = split3(b)
    z = sigmoid(x @ Wxz + h_prev @ Whz + bz)
    r = sigmoid(x @ Wxr + h_prev @ Whr + br)
    h_hat = tanh(x @ Wxh + (r * h_prev) @ Whh + bh)
    h_next = (1 - z) * h_prev + z * h_hat
    return h_next, (x, h_prev, z, r, h_hat)


def gru_cell_reference_backward(dh_next, cache, Wx, Wh):
    """The book's GRU.backward: dh_next (N, H) -> dx (N, D), dh_prev (N, H) and the weight
    gradients (dWx, dWh, db) of this step."""
    xp = get_array_module(dh_next)
    Wxz, Wxr, Wxh = split3(Wx)
    Whz, Whr, Whh = split3(Wh)
    x, h_prev, z, r, h_hat = cache

    dh_hat = dh_next * z
    dh_prev = dh_next * (1 - z)

    dt = dh_hat * (1 - h_hat ** 2)                                 # through tanh
    dbh = dt.sum(axis=0)
    dWhh = (r * h_prev).T @ dt
    dhr = dt @ Whh.T
    dWxh = x.T @ dt
    dx = dt @ Wxh.T
    dh_prev += r * dhr

    dz = dh_next * h_hat - dh_next * h_prev                         # the update gate
    dt = dz * z * (1 - z)
    dbz = dt.sum(axis=0)
    dWhz = h_prev.T @ dt
    dh_prev += dt @ Whz.T
    dWxz = x.T @ dt
    dx += dt @ Wxz.T

    dr = dhr * h_prev                                               # the reset gate
    dt = dr * r * (1 - r)
    dbr = dt.sum(axis=0)
    dWhr = h_prev.T @ dt
    dh_prev += dt @ Whr.T
    dWxr = x.T @ dt
    dx += dt @ Wxr.T

    dWx = xp.concatenate([dWxz, dWxr, dWxh], axis=1)
    dWh = xp.concatenate([dWhz, dWhr, dWhh], axis=1)
    db = xp.concatenate([dbz, dbr, dbh])
    return dx, dh_prev, (dWx, dWh, db)


# -- the fast cell: the xp twins of the compiled kernels -------------------------------------

def gru_gates_forward_(xa, hzr, h_prev, gates, rh):
    """z, r = sigmoid(xa_zr + hzr) into gates[:, :2H]; rh = r * h_prev (N, H).

    xa (N, 3H) = x Wx + b, hzr (N, 2H) = h_prev Wh_zr, gates (N, 3H)."""
    xp = get_array_module(gates)
    H = h_prev.shape[1]
    zr = gates[:, :2 * H]
    xp.add(xa[:, :2 * H], hzr, out=zr)
    with ignore_overflow(xp):                                       # exp overflows to inf: 1 / inf = 0 is right
        zr *= -1.0
        xp.exp(zr, out=zr)
        zr += 1.0
        xp.divide(1.0, zr, out=zr)
    xp.multiply(zr[:, H:], h_prev, out=rh)


def gru_state_forward_(xa, hh, h_prev, gates, h):
    """h~ = tanh(xa_h + hh) into gates[:, 2H:]; h = h_prev + z (h~ - h_prev) (N, H).

    hh (N, H) = (r * h_prev) Wh_h; gates holds z from ``gru_gates_forward_``."""
    xp = get_array_module(gates)
    z, _, cand = split3(gates)
    xp.add(xa[:, 2 * z.shape[1]:], hh, out=cand)
    with ignore_overflow(xp):
        tanh_(cand, cand)
    xp.subtract(cand, h_prev, out=h)
    h *= z
    h += h_prev                                                     # (1 - z) h_prev + z h~


def gru_state_backward_(dh, dh_rec, gates, h_prev, da, dhp):
    """Back through h = (1 - z) h_prev + z h~ and h~'s tanh, with dh + dh_rec reaching h (N, H).

    Writes da_z = dh (h~ - h_prev) z (1 - z) and da_h = dh z (1 - h~^2) into da (N, 3H), and
    dhp = dh (1 - z), h_prev's share through (1 - z) (N, H); da's r block is scratch until
    ``gru_gates_backward_`` writes it."""
    xp = get_array_module(gates)
    z, _, cand = split3(gates)
    da_z, one_z, da_h = split3(da)
    xp.add(dh, dh_rec, out=dhp)                                     # all of h's gradient, for now
    xp.multiply(cand, cand, out=da_h)
    xp.subtract(1.0, da_h, out=da_h)
    da_h *= z
    da_h *= dhp                                                     # dh z (1 - h~^2)
    xp.subtract(cand, h_prev, out=da_z)
    da_z *= z
    da_z *= dhp
    xp.subtract(1.0, z, out=one_z)
    da_z *= one_z                                                   # dh (h~ - h_prev) z (1 - z)
    dhp *= one_z                                                    # dh (1 - z)


def gru_gates_backward_(drh, gates, h_prev, da, dhp):
    """Back through r: drh (N, H) = da_h Wh_h^T, the gradient reaching r * h_prev.

    Writes da_r = drh h_prev r (1 - r) into da (N, 3H) and adds r drh, h_prev's share through
    r * h_prev, to dhp (N, H). drh is spent (overwritten)."""
    xp = get_array_module(gates)
    _, r, _ = split3(gates)
    _, da_r, _ = split3(da)
    xp.multiply(r, r, out=da_r)
    xp.subtract(r, da_r, out=da_r)                                  # r (1 - r)
    da_r *= h_prev
    da_r *= drh
    drh *= r
    dhp += drh


# -- the fast cell: one call per half, compiled or xp ------------------------------------------

def gates_forward(k, xa, hzr, h_prev, gates, rh):
    """z, r and rh = r * h_prev on the compiled kernels ``k`` (``kernels.fused_gru``), or with None on
    the xp path: the arguments of ``gru_gates_forward_``. The caller then takes hh = rh Wh_h."""
    (k.gru_gates_forward if k is not None else gru_gates_forward_)(xa, hzr, h_prev, gates, rh)


def state_forward(k, xa, hh, h_prev, gates, h):
    """h~ and h on the compiled kernels ``k``, or with None on the xp path: ``gru_state_forward_``'s arguments."""
    (k.gru_state_forward if k is not None else gru_state_forward_)(xa, hh, h_prev, gates, h)


def state_backward(k, dh, dh_rec, gates, h_prev, da, dhp):
    """The z and h~ blocks of da, and dhp, compiled or xp: ``gru_state_backward_``'s arguments. The
    caller then takes drh = da_h Wh_h^T for ``gates_backward``."""
    (k.gru_state_backward if k is not None else gru_state_backward_)(dh, dh_rec, gates, h_prev, da, dhp)


def gates_backward(k, drh, gates, h_prev, da, dhp):
    """The r block of da, and r drh added to dhp, compiled or xp: ``gru_gates_backward_``'s arguments.
    The caller then takes dh_prev = da_zr Wh_zr^T + dhp."""
    (k.gru_gates_backward if k is not None else gru_gates_backward_)(drh, gates, h_prev, da, dhp)
