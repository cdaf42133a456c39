"""exp, tanh and sigmoid for the compiled kernels, specialised by dtype at compile time.

Polynomials instead of libm calls, which LLVM's vectorizer cannot put in SIMD lanes: in float32
Eigen's rational tanh (3e-7) serves tanh and, as tanh(x/2) / 2 + 1/2, sigmoid; in float64 Cephes'
exp and tanh are within 2 ulp of libm, and sigmoid is the book's 1 / (1 + exp(-x)), so float64
matches the numpy code to about 1e-15. Called outside numba they are the math module's.
Also ``jit``, the one set of numba options every kernel module compiles with.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
jit = njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")   # x / 0 is inf, not an exception
f32 = np.float32


# -- scalar math, specialised by dtype at compile time ------------------------------
# Polynomials instead of libm calls, which the vectorizer cannot put in SIMD lanes.
# Compiled apart without "reassoc", so LLVM keeps Cody-Waite's split ln2 exact, then
# inlined by LLVM into the loops (where they vectorize) with their own flags intact.
SCALAR_MATH = dict(jit_options={"fastmath": {"nsz", "arcp", "contract", "afn"}, "error_model": "numpy"})


def tanh(x):
    """tanh(x): Eigen's rational function in float32 (3e-7), Cephes' in float64 (2 ulp)."""
    return math.tanh(x)


def sigmoid(x):
    """1 / (1 + exp(-x)): as tanh(x/2) / 2 + 1/2 in float32 (2e-7), through exp in float64."""
    return 1.0 / (1.0 + math.exp(-x))


def exp(x):
    """exp(x) by Cephes' polynomials: float32 to 6e-8 relative, float64 to 2 ulp.

    Arguments below the smallest normal result give that result (1.2e-38 or 2e-308), not 0.
    """
    return math.exp(x)


def _bitcast(fromtype, totype, irtype):
    @intrinsic
    def bits_as(typingctx, n):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], irtype)
        return totype(fromtype), codegen
    return bits_as


_int32_bits_as_float32 = _bitcast(types.int32, types.float32, ir.FloatType())
_int64_bits_as_float64 = _bitcast(types.int64, types.float64, ir.DoubleType())

# Eigen's generic_fast_tanh_float: odd degree-13 over even degree-6, clamped where it reaches 1
# (without Eigen's tiny-x branch: near 0 it is x (1 - 1.3e-7), well inside float32's tolerance).
_T_CLAMP = f32(7.90531110763549805)
_A1, _A3 = f32(4.89352455891786e-03), f32(6.37261928875436e-04)
_A5, _A7 = f32(1.48572235717979e-05), f32(5.12229709037114e-08)
_A9, _A11, _A13 = f32(-8.60467152213735e-11), f32(2.00018790482477e-13), f32(-2.76076847742355e-16)
_B0, _B2 = f32(4.89352518554385e-03), f32(2.26843463243900e-03)
_B4, _B6 = f32(1.18534705686654e-04), f32(1.19825839466702e-06)
# Cephes expf: exp(x) = 2**k exp(r), |r| <= ln2/2, ln2 split in two for an exact k ln2.
_E_LO, _E_HI = f32(-87.33654), f32(88.37626)
_LOG2E, _LN2_HI, _LN2_LO = f32(1.44269504088896341), f32(0.693359375), f32(-2.12194440e-4)
_P0, _P1, _P2, _P3 = f32(1.9875691500e-4), f32(1.3981999507e-3), f32(8.3334519073e-3), f32(4.1665795894e-2)
_P4, _P5 = f32(1.6666665459e-1), f32(5.0000001201e-1)
_HALF, _ONE = f32(0.5), f32(1.0)
# Cephes exp (double): the same reduction, then a Pade form 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)).
_D_LO, _D_HI = -708.3, 709.0                                        # 2**k stays a normal double
_D_LOG2E, _D_LN2_HI, _D_LN2_LO = 1.4426950408889634, 6.93145751953125e-1, 1.42860682030941723212e-6
_DP0, _DP1, _DP2 = 1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1
_DQ0, _DQ1 = 3.00198505138664455042e-6, 2.52448340349684104192e-3
_DQ2, _DQ3 = 2.27265548208155028766e-1, 2.00000000000000000009e0
# Cephes tanh (double): x + x^3 P(x^2) / Q(x^2) below 0.625, 1 - 2 / (exp(2|x|) + 1) above.
_TP0, _TP1, _TP2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_TQ0, _TQ1, _TQ2 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3


def _is_f32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


def _is_f64(x):
    return isinstance(x, types.Float) and x.bitwidth == 64


@overload(exp, **SCALAR_MATH)
def _exp_impl(x):
    if _is_f32(x):
        def exp_f32(x):
            y = min(max(x, _E_LO), _E_HI)
            k = np.floor(y * _LOG2E + _HALF)                         # float32, an integer
            r = y - k * _LN2_HI
            r = r - k * _LN2_LO
            p = r * _P0 + _P1
            p = r * p + _P2
            p = r * p + _P3
            p = r * p + _P4
            p = r * p + _P5
            p = p * (r * r) + r + _ONE
            return p * _int32_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
        return exp_f32
    if _is_f64(x):
        def exp_f64(x):
            y = min(max(x, _D_LO), _D_HI)
            k = np.floor(y * _D_LOG2E + 0.5)
            r = y - k * _D_LN2_HI
            r = r - k * _D_LN2_LO
            rr = r * r
            p = r * ((_DP0 * rr + _DP1) * rr + _DP2)
            q = ((_DQ0 * rr + _DQ1) * rr + _DQ2) * rr + _DQ3
            return (1.0 + 2.0 * (p / (q - p))) * _int64_bits_as_float64((np.int64(k) + 1023) << 52)
        return exp_f64


@overload(tanh, **SCALAR_MATH)
def _tanh_impl(x):
    if _is_f32(x):
        def tanh_f32(x):
            y = min(max(x, -_T_CLAMP), _T_CLAMP)
            y2 = y * y
            p = y2 * _A13 + _A11
            p = y2 * p + _A9
            p = y2 * p + _A7
            p = y2 * p + _A5
            p = y2 * p + _A3
            p = y2 * p + _A1
            q = y2 * _B6 + _B4
            q = y2 * q + _B2
            q = y2 * q + _B0
            return y * p / q
        return tanh_f32
    if _is_f64(x):
        def tanh_f64(x):                                            # both branches, then a select
            z = abs(x)
            big = 1.0 - 2.0 / (exp(2.0 * z) + 1.0)
            big = big if x >= 0.0 else -big
            xx = x * x
            small = x + x * xx * ((_TP0 * xx + _TP1) * xx + _TP2) / (((xx + _TQ0) * xx + _TQ1) * xx + _TQ2)
            return big if z >= 0.625 else small
        return tanh_f64


@overload(sigmoid, **SCALAR_MATH)
def _sigmoid_impl(x):
    if _is_f32(x):
        return lambda x: _HALF * tanh(_HALF * x) + _HALF
    if _is_f64(x):
        return lambda x: 1.0 / (1.0 + exp(-x))
