"""Convolution formulations that XLA:CPU runs fast: what CPU convs run without oneDNN.

XLA:CPU lowers a grouped or depthwise `conv_general_dilated` to a slow generic loop, and the
kernel gradient of *every* convolution (dense included) goes through a slow path too. These
formulations express the same convolution with operations XLA:CPU does run fast: fused
elementwise loops, dense convolutions and matrix products. Each one has three parts:

    forward(x, w, stride, groups, precision)        -> y
    input_grad(x, w, dy, stride, groups, precision)  -> dx
    kernel_grad(x, w, dy, stride, groups, precision) -> dw

Shapes: x is NHWC, w is HWIO with I = Cin // groups, padding (k - 1) // 2 on each side
(PyTorch semantics), output size (H - 1) // stride + 1. Low-precision inputs (bf16, f16) are
accumulated in float32 and the results cast back to the input dtype.

Formulations:
  shift       sum over the k*k kernel taps of a shifted (strided) slice of the padded input
              times that tap of the kernel. The per-tap product is an elementwise multiply for
              depthwise, Cin/groups broadcast multiply-adds for grouped, a matmul for dense
              (a dense 1x1 conv is one matmul forward, input and kernel gradient). Depthwise
              taps fuse into one loop; grouped ones run in a loop over kernel rows.
              Input gradient: the same construction on dy with the transposed kernel, for
              stride s > 1 split into s*s sub-pixel phases (no work on a dilated dy's zeros).
  group_scan  channels moved group-major, then a scan over groups of dense XLA convolutions
              (dense conv is XLA:CPU's fast path); input gradient likewise per group (XLA's
              transposed conv), except strided grouped convs, which use shift's phases. A
              dense conv (groups=1; forced only, 'auto' runs those with 'lax') is the plain
              XLA conv forward and input gradient with the kernel gradient below.

Why both are kept: without oneDNN, 'auto' (`cpu_choice`) made whole-model train steps at
batch 8, 224 px 13x (EfficientNet-B0), 24x (RegNetY-800MF) and 227x (RegNetZ-500MF) faster
than 'lax', forwards 1.1-6.3x (benchmarks/RESULTS.md §4d); each is the faster one for the
shapes `cpu_choice` gives it.

Kernel gradients (both formulations): depthwise as per-tap multiply + reduce in a loop over
taps; grouped and dense as per-tap matmuls (contraction over batch and space) in a loop over
taps. The loops keep XLA's temporary buffer small (one tap's slice), which matters on CPU:
XLA maps big temporary buffers afresh on every call and page-faults through them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# `shift` keeps all k*k*(Cin/groups) broadcast multiply-adds of a kernel in one fused loop when
# there are at most this many (depthwise); for grouped convs it loops over kernel rows with a
# row's k*(Cin/groups) terms fused, and over single taps past this. A loop also keeps XLA
# from fusing the multiply-adds into each consumer of the output (BN statistics, the BN
# gradient, ...) and recomputing them there: in RegNetZ-500MF's train step that doubled the
# time (4.7 s vs 1.7 s, batch 8, 224 px, 2 cores).
_SHIFT_UNROLL_TERMS = 128


# Widest group (Cin/groups) for which 'shift' beats per-group dense convs on XLA:CPU.
SHIFT_MAX_GROUP_WIDTH = 4


def cpu_choice(cin: int, cout: int, groups: int, kernel: int) -> str:
    """What 'auto' runs on XLA:CPU without oneDNN, by shape (RESULTS.md §4d: batch 8, 224 px
    shapes, fwd+bwd speed-up over 'lax'):

      dense 1x1                  -> 'shift'       one matmul forward, input and kernel grads
                                                  (2.3x; used with oneDNN too)
      dense kxk                  -> 'lax'         group_scan's kernel gradient was no faster
                                                  (1.15x at 128 ch, 0.63-0.71x for the stem)
      depthwise, Cin/g <= 4      -> 'shift'       shifted multiply-adds (13x depthwise, 93x
                                                  group width 4; group_scan 1.1x, 72x)
      grouped, Cin/g > 4         -> 'group_scan'  a scan over groups of dense convs (133-237x
                                                  at widths 16-48, 3.5x at 64; shift 1.4-4.7x
                                                  slower than it from width 48 up)
    """
    del cout
    if groups == 1:
        return "shift" if kernel == 1 else "lax"
    return "shift" if cin // groups <= SHIFT_MAX_GROUP_WIDTH else "group_scan"


def _acc_dtype(dtype):
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def out_size(size: int, stride: int) -> int:
    """Output spatial size of a padded-(k-1)//2 convolution: (size - 1) // stride + 1."""
    return (size - 1) // stride + 1


def _pad(x, p):
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))) if p else x


def _tap(xp, i, j, stride, ho, wo):
    """The input window that kernel tap (i, j) sees: xp[:, i::s, j::s] cropped to (ho, wo)."""
    n, _, _, c = xp.shape
    return lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c),
                     (1, stride, stride, 1))


def _dynamic_tap(xp, t, k, stride, ho, wo):
    """_tap for a traced tap index t = i * k + j (inside a loop over taps; k = kernel width)."""
    n, _, _, c = xp.shape
    win = lax.dynamic_slice(xp, (0, t // k, t % k, 0),
                            (n, (ho - 1) * stride + 1, (wo - 1) * stride + 1, c))
    return win[:, ::stride, ::stride] if stride > 1 else win


def _dot(a, b, dims, precision, acc):
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=acc)


# ---------------------------------------------------------------------------------------------
# shift: valid convolution of an already padded input, built from k*k shifted slices.
# ---------------------------------------------------------------------------------------------

def _shift_valid(xp, w, stride, groups, ho, wo, precision):
    """sum over taps of window(xp, tap) (*) w[tap]: the valid conv of an already padded xp.

    w: (kh, kw, Cin/groups, Cout). Returns (n, ho, wo, Cout) in the accumulator dtype.
    """
    kh, kw = w.shape[0], w.shape[1]
    n, cin, cout = xp.shape[0], xp.shape[3], w.shape[3]
    ci, co = cin // groups, cout // groups
    acc = _acc_dtype(xp.dtype)
    if groups == 1:  # dense: one matmul per tap
        out = None
        for i in range(kh):
            for j in range(kw):
                t = _dot(_tap(xp, i, j, stride, ho, wo), w[i, j], (((3,), (0,)), ((), ())),
                         precision, acc)
                out = t if out is None else out + t
        return out
    wg = w.astype(acc).reshape(kh, kw, ci, groups, co)

    def tap_terms(sl, wt, out):  # sl: (n, ho, wo, groups, ci); wt: (ci, groups, co)
        sl = sl.astype(acc)
        for c in range(ci):
            t = sl[..., c:c + 1] * wt[c]
            out = t if out is None else out + t
        return out

    def window(src, i, j):
        return _tap(src, i, j, stride, ho, wo).reshape(n, ho, wo, groups, ci)

    zeros = jnp.zeros((n, ho, wo, groups, co), acc)
    if (ci == 1 or kh == 1) and kh * kw * ci <= _SHIFT_UNROLL_TERMS:  # all taps fused
        out = None
        for i in range(kh):
            for j in range(kw):
                out = tap_terms(window(xp, i, j), wg[i, j], out)
    elif kw * ci <= _SHIFT_UNROLL_TERMS:  # loop over kernel rows, a row's taps fused

        def row_body(i, out):
            rows = lax.dynamic_slice_in_dim(xp, i, (ho - 1) * stride + 1, axis=1)
            w_row = lax.dynamic_index_in_dim(wg, i, 0, keepdims=False)
            for j in range(kw):
                out = tap_terms(window(rows, 0, j), w_row[j], out)
            return out

        out = lax.fori_loop(0, kh, row_body, zeros)
    else:  # loop over single taps
        wt_all = wg.reshape(kh * kw, ci, groups, co)

        def body(t, out):
            tap = _dynamic_tap(xp, t, kw, stride, ho, wo)
            return tap_terms(tap.reshape(n, ho, wo, groups, ci), wt_all[t], out)

        out = lax.fori_loop(0, kh * kw, body, zeros)
    return out.reshape(n, ho, wo, cout)


def shift_forward(x, w, stride, groups, precision):
    k = w.shape[0]
    ho, wo = out_size(x.shape[1], stride), out_size(x.shape[2], stride)
    xp = _pad(x, (k - 1) // 2)
    return _shift_valid(xp, w, stride, groups, ho, wo, precision).astype(x.dtype)


def _transposed_kernel(w, groups):
    """Kernel of the transposed conv: taps flipped, in/out swapped within each group."""
    kh, kw, ci, cout = w.shape
    co = cout // groups
    wt = w[::-1, ::-1].reshape(kh, kw, ci, groups, co).transpose(0, 1, 4, 3, 2)
    return wt.reshape(kh, kw, co, groups * ci)


def _phase_taps(k, stride, p):
    """The sub-pixel decomposition of a strided conv's input gradient, per phase a (input
    rows q * stride + a): (R, [(start_a, taps_a)]).

    Row q * s + a receives dy[q + c_a - r] * w[t0_a + s * r] for the taps t0_a + s * r < k,
    with c_a = (a + p) // s, t0_a = (a + p) % s. As a valid correlation over dy padded by
    R - 1 = ceil(k / s) - 1 in front, that is the window starting at row start_a with the
    taps listed last-first (taps_a).
    """
    r_max = -(-k // stride)
    phases = []
    for a in range(stride):
        taps = list(range((a + p) % stride, k, stride))[::-1]
        phases.append(((a + p) // stride + r_max - len(taps), taps))
    return r_max, phases


def shift_input_grad(x, w, dy, stride, groups, precision):
    """dx of y = conv(x, w) by shifted multiply-adds (depthwise / narrow groups).

    Stride 1: the valid conv of the padded dy with the transposed kernel. Stride s > 1:
    sub-pixel decomposition: each of the s*s phases of dx (rows q*s + a, columns q*s + b)
    is a stride-1 valid conv of dy with the taps that reach it (ceil(k/s)^2 at most), so no
    work is spent on the zeros of a dilated dy (4x less for k=3, s=2). The phases are
    interleaved at the end.
    """
    k = w.shape[0]
    p = (k - 1) // 2
    n, h, wd = x.shape[0], x.shape[1], x.shape[2]
    ho, wo = dy.shape[1], dy.shape[2]
    wt = _transposed_kernel(w, groups)                    # (k, k, co, groups * ci)
    zero = jnp.zeros((), dy.dtype)
    if stride == 1:
        e = lax.pad(dy, zero, ((0, 0, 0), (k - 1 - p, h + p - ho, 0), (k - 1 - p, wd + p - wo, 0),
                               (0, 0, 0)))
        return _shift_valid(e, wt, 1, groups, h, wd, precision).astype(x.dtype)
    s = stride
    r, phase_taps = _phase_taps(k, s, p)
    qh, qw = -(-h // s), -(-wd // s)
    wu = wt[::-1, ::-1]                                   # channel-swapped, un-flipped taps
    # dy padded by r - 1 in front and behind up to the furthest phase window: a window over
    # q rows reads e rows start .. start + len(taps) - 1 + q - 1.
    span = max(start + len(taps) for start, taps in phase_taps) - 1
    e = lax.pad(dy, zero, ((0, 0, 0), (r - 1, max(0, qh + span - (ho + r - 1)), 0),
                           (r - 1, max(0, qw + span - (wo + r - 1)), 0), (0, 0, 0)))
    phases = []
    for i0, ta in phase_taps:
        row = []
        for j0, tb in phase_taps:
            if not ta or not tb:  # stride > kernel: no tap reaches this phase
                row.append(jnp.zeros((n, qh, qw, x.shape[3]), _acc_dtype(x.dtype)))
                continue
            win = e[:, i0:i0 + qh + len(ta) - 1, j0:j0 + qw + len(tb) - 1]
            wk = wu[jnp.asarray(ta)][:, jnp.asarray(tb)]
            row.append(_shift_valid(win, wk, 1, groups, qh, qw, precision))
        phases.append(jnp.stack(row, axis=3))                # (n, qh, qw, s, cin)
    dx = jnp.stack(phases, axis=2)                            # (n, qh, s, qw, s, cin)
    return dx.reshape(n, qh * s, qw * s, -1)[:, :h, :wd].astype(x.dtype)


def matmul_input_grad(x, w, dy, stride, groups, precision):
    """dx of a dense 1x1 conv: dy @ w^T, scattered onto every stride-th pixel."""
    del groups
    dx = _dot(dy, w[0, 0], (((3,), (1,)), ((), ())), precision, _acc_dtype(x.dtype)).astype(x.dtype)
    if stride == 1:
        return dx
    h, wd, ho, wo = x.shape[1], x.shape[2], dy.shape[1], dy.shape[2]
    zero = jnp.zeros((), dx.dtype)
    return lax.pad(dx, zero, ((0, 0, 0), (0, h - (ho - 1) * stride - 1, stride - 1),
                              (0, wd - (wo - 1) * stride - 1, stride - 1), (0, 0, 0)))


def matmul_kernel_grad(x, w, dy, stride, groups, precision):
    """dw of a dense 1x1 conv: dy^T (Cout, m) @ x (m, Cin), m = batch * output pixels,
    transposed to (1, 1, Cin, Cout). This operand order ran 1.1-2x faster on XLA:CPU than
    contracting the leading dimension of both operands."""
    del groups
    if stride > 1:
        x = x[:, ::stride, ::stride]
    m = dy.shape[0] * dy.shape[1] * dy.shape[2]
    dw = _dot(dy.reshape(m, -1).T, x.reshape(m, -1), (((1,), (0,)), ((), ())), precision,
              _acc_dtype(x.dtype))
    return dw.T.reshape(w.shape).astype(w.dtype)


# ---------------------------------------------------------------------------------------------
# Kernel gradients shared by the formulations.
# ---------------------------------------------------------------------------------------------

def _group_major(a, groups):
    """(n, h, w, groups * c) -> (groups, n, h, w, c): what a batched-over-groups dot wants."""
    n, h, w, c = a.shape
    return a.reshape(n, h, w, groups, c // groups).transpose(3, 0, 1, 2, 4)


def kernel_grad(x, w, dy, stride, groups, precision):
    """dL/dw for y = conv(x, w): per-tap products of the input window with dy, summed over
    batch and space, in a loop over taps (one tap's window materialised at a time).

    Depthwise: multiply + reduce. Dense and grouped: a matmul per tap contracting batch and
    space, batched over groups, with the channels moved group-major and dy transposed to
    (groups, co, batch*space) once up front: XLA:CPU runs a dot whose batch dimension is not
    the major one through slow transposes, and the (co, m) @ (m, ci) form about 1.6x faster
    than contracting the leading dimension of both operands.
    """
    k, _, ci, cout = w.shape
    co = cout // groups
    n, ho, wo = dy.shape[0], dy.shape[1], dy.shape[2]
    m = n * ho * wo
    acc = _acc_dtype(x.dtype)
    xp = _pad(x, (k - 1) // 2)
    if ci == 1 and co == 1:  # depthwise
        d = dy.astype(acc)

        def tap_grad(t):
            return jnp.sum(_dynamic_tap(xp, t, k, stride, ho, wo).astype(acc) * d, axis=(0, 1, 2))

        shape = (ci, cout)
    else:
        xg = _group_major(xp, groups)                                    # (g, n, hp, wp, ci)
        dt = dy.reshape(m, groups, co).transpose(1, 2, 0)                # (g, co, m)

        def tap_grad(t):  # (g, co, m) @ (g, m, ci): the fast (non-transposed) matmul form
            win = lax.dynamic_slice(xg, (0, 0, t // k, t % k, 0),
                                    (groups, n, (ho - 1) * stride + 1, (wo - 1) * stride + 1, ci))
            if stride > 1:
                win = win[:, :, ::stride, ::stride]
            return _dot(dt, win.reshape(groups, m, ci), (((2,), (1,)), ((0,), (0,))), precision, acc)

        shape = (groups, co, ci)

    def body(t, dw):
        return dw.at[t].set(tap_grad(t))

    dw = lax.fori_loop(0, k * k, body, jnp.zeros((k * k,) + shape, acc))
    if len(shape) == 3:  # (taps, groups, co, ci) -> (taps, ci, groups * co)
        dw = dw.transpose(0, 3, 1, 2)
    return dw.reshape(k, k, ci, cout).astype(w.dtype)


# ---------------------------------------------------------------------------------------------
# group_scan: group-major channels, scan over groups of dense XLA convolutions.
# ---------------------------------------------------------------------------------------------

def _dense_conv(x, w, stride, padding, precision, lhs_dilation=1):
    return lax.conv_general_dilated(x, w, (stride, stride), padding,
                                    lhs_dilation=(lhs_dilation, lhs_dilation),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    precision=precision)


def _group_scan(x, w, groups, conv):
    """conv(x_g, w_g) for each group g, as a scan over group-major channels."""
    if groups == 1:
        return conv(x, w)
    n, h, wd, _ = x.shape
    k, _, ci, cout = w.shape
    co = cout // groups
    xg = _group_major(x, groups)
    wg = w.reshape(k, k, ci, groups, co).transpose(3, 0, 1, 2, 4)

    def body(carry, xw):
        return carry, conv(xw[0], xw[1])

    yg = lax.scan(body, None, (xg, wg))[1]  # (groups, n, ho, wo, co)
    return yg.transpose(1, 2, 3, 0, 4).reshape(n, yg.shape[2], yg.shape[3], cout)


def group_scan_forward(x, w, stride, groups, precision):
    p = (w.shape[0] - 1) // 2
    return _group_scan(x, w, groups,
                       lambda a, b: _dense_conv(a, b, stride, [(p, p), (p, p)], precision))


def group_scan_input_grad(x, w, dy, stride, groups, precision):
    """dx as the transposed convolution (dy dilated by the stride, flipped kernel), per group."""
    k = w.shape[0]
    p = (k - 1) // 2
    pad = [(k - 1 - p, x.shape[1] + p - (dy.shape[1] - 1) * stride - 1),
           (k - 1 - p, x.shape[2] + p - (dy.shape[2] - 1) * stride - 1)]
    return _group_scan(dy, _transposed_kernel(w, groups), groups,
                       lambda a, b: _dense_conv(a, b, 1, pad, precision, lhs_dilation=stride))


def _dense_1x1(w, groups):
    return groups == 1 and w.shape[0] == 1


def shift_input_grad_auto(x, w, dy, stride, groups, precision):
    """The `shift` formulation's dx: a matmul for dense 1x1 convs, else shifted multiply-adds
    (what 'auto' uses it for: depthwise and group width <= 4)."""
    if _dense_1x1(w, groups):
        return matmul_input_grad(x, w, dy, stride, groups, precision)
    return shift_input_grad(x, w, dy, stride, groups, precision)


def shift_kernel_grad(x, w, dy, stride, groups, precision):
    """The `shift` formulation's dw: one matmul for dense 1x1 convs, else `kernel_grad`."""
    if _dense_1x1(w, groups):
        return matmul_kernel_grad(x, w, dy, stride, groups, precision)
    return kernel_grad(x, w, dy, stride, groups, precision)


def group_scan_input_grad_auto(x, w, dy, stride, groups, precision):
    """The `group_scan` formulation's dx: per-group transposed convs, except for strided
    grouped convs, where shift's sub-pixel phases skip the dilated dy's zeros (RegNetY-800MF's
    stride-2 convs at batch 8: 62 vs 89 ms and 18 vs 23 ms)."""
    if stride > 1 and groups > 1:
        return shift_input_grad(x, w, dy, stride, groups, precision)
    return group_scan_input_grad(x, w, dy, stride, groups, precision)


FORMULATIONS = {
    "shift": (shift_forward, shift_input_grad_auto, shift_kernel_grad),
    "group_scan": (group_scan_forward, group_scan_input_grad_auto, kernel_grad),
}
