"""im2col / col2im for NCHW images, vectorised with NumPy stride tricks.

``im2col`` copies every kernel window of a (padded) batch into a column buffer laid out
as (n, c, kh, kw, out_h, out_w): reshaped to (n, c*kh*kw, out_h*out_w) it is one matrix
per image, so a convolution is ``W.reshape(filters, -1) @ col`` and its result is already
in NCHW order (no transpose). ``col2im`` is the adjoint: it scatter-adds such a buffer back
into image space with the book's loop over the kh*kw kernel positions (each iteration one
vectorised add over the whole batch).
"""

from __future__ import annotations

import numpy as np
from labnet.errors import ShapeError
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size: int, kernel: int, stride: int, pad: int, what: str) -> int:
    """Number of kernel positions along one axis: ``(size + 2*pad - kernel) // stride + 1``.

    Raises ShapeError when the kernel is larger than the padded input.
    """
    padded = size + 2 * pad
    if kernel > padded:
        raise ShapeError(
            f"{what} of size {kernel} does not fit an input of size {size} with pad={pad} "
            f"(padded size {padded}); use a smaller kernel, more padding or a larger input"
        )
    return (padded - kernel) // stride + 1


def pad_into(x: np.ndarray, pad: int, out: np.ndarray, value: float = 0.0) -> np.ndarray:
    """Copy x (n, c, h, w) into the centre of ``out`` (n, c, h+2p, w+2p) and fill the border with ``value``
    (any leading axes: the last two are padded)."""
    if pad == 0:
        out[...] = x
        return out
    h, w = x.shape[-2:]
    out[..., :pad, :] = value
    out[..., pad + h :, :] = value
    out[..., pad : pad + h, :pad] = value
    out[..., pad : pad + h, pad + w :] = value
    out[..., pad : pad + h, pad : pad + w] = x
    return out


def windows(xp: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Read-only view (n, c, kh, kw, out_h, out_w) of the kernel windows of a padded batch (n, c, hp, wp);
    any leading axes are kept: (k, n, c, hp, wp) gives (k, n, c, kh, kw, out_h, out_w)."""
    view = sliding_window_view(xp, (kh, kw), axis=(-2, -1))[..., ::stride, ::stride, :, :]
    return np.moveaxis(view, (-2, -1), (-4, -3))


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int, out: np.ndarray | None = None) -> np.ndarray:
    """Kernel windows of the padded batch ``xp`` (n, c, hp, wp) as a (n, c, kh, kw, out_h, out_w) array.

    ``out``, if given, is filled and returned (a preallocated workspace of that shape).
    """
    view = windows(xp, kh, kw, stride)
    if out is None:
        return np.ascontiguousarray(view)
    np.copyto(out, view)
    return out


def col2im(col: np.ndarray, stride: int, out: np.ndarray) -> np.ndarray:
    """Scatter-add ``col`` (n, c, kh, kw, out_h, out_w) into the padded image ``out`` (n, c, hp, wp); any
    leading axes are kept, as in :func:`windows` (``col`` may be a strided view).

    ``out`` is overwritten (zeroed first) and returned; overlapping windows add up.
    """
    kh, kw, oh, ow = col.shape[-4:]
    out.fill(0)
    for i in range(kh):
        i_end = i + stride * oh
        for j in range(kw):
            out[..., i:i_end:stride, j : j + stride * ow : stride] += col[..., i, j, :, :]
    return out
