"""The signal-processing pieces of the spectral baseline, in numpy alone.

Each matches the scipy function a reader would reach for (tests compare them to 1e-12 or
bit for bit): :func:`periodic_hann` is ``scipy.signal.get_window("hann", n)``,
:class:`BandMatrix` a ``scipy.sparse.csr_matrix`` product, :func:`dct2_ortho_basis` the
matrix of ``scipy.fft.dct(x, type=2, norm="ortho")``, and
:func:`one_pole_smooth` ``scipy.signal.lfilter([s], [1, s - 1], x, zi=...)``. scipy is not
imported at run time: ``scipy.signal`` alone takes about half a second to import, more
than a log-mel query spends on everything else.
"""

from __future__ import annotations

import numpy as np


def periodic_hann(n: int) -> np.ndarray:
    """The periodic ("fftbins") Hann window of ``n`` samples: ``(n,)`` float64.

    The same values, bit for bit, as ``scipy.signal.get_window("hann", n, fftbins=True)``.
    """
    if n == 1:
        return np.ones(1)
    fac = np.linspace(-np.pi, np.pi, n + 1)
    w = np.zeros(n + 1)
    for k, a in enumerate((0.5, 0.5)):
        w += a * np.cos(k * fac)
    return w[:-1]


class BandMatrix:
    """A sparse ``(n_in, n_out)`` weight matrix applied as ``x @ weights``, row by row, without BLAS.

    Made for filterbanks, where each output band reads a short run of input bins: only the
    non-zero weights are multiplied, band by band, in bin order (as a CSR product does). Each
    output row depends on its input row alone, so slicing the rows changes no bit (a BLAS
    product may round a row differently with the number of rows).
    """

    def __init__(self, weights: np.ndarray) -> None:
        """``weights``: ``(n_in, n_out)`` float64."""
        w = np.asarray(weights, np.float64)
        self.shape = w.shape
        bands, bins = np.nonzero(w.T)  # by band, then by bin
        self._bins = bins
        self._data = w[bins, bands][:, None]
        starts = np.searchsorted(bands, np.arange(w.shape[1] + 1))
        self._nonempty = starts[:-1] < starts[1:]
        self._starts = starts[:-1][self._nonempty]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``(T, n_in)`` float64 -> ``(T, n_out)`` float64; bands with no weights give 0."""
        out = np.zeros((self.shape[1], x.shape[0]), np.float64)
        if self._starts.size and x.shape[0]:
            # bins down axis 0, frames along axis 1: each band adds whole rows, one bin after another
            picked = np.ascontiguousarray(np.asarray(x, np.float64).T)[self._bins]
            picked *= self._data
            out[self._nonempty] = np.add.reduceat(picked, self._starts, axis=0)
        return out.T


def dct2_ortho_basis(n: int, n_out: int) -> np.ndarray:
    """``(n, n_out)`` float64 ``B`` such that ``x @ B`` is the first ``n_out`` coefficients of the
    orthonormal DCT-II of each row of ``(T, n)`` ``x``.

    ``B[m, k] = f_k cos(pi k (2m + 1) / 2n)`` with ``f_0 = sqrt(1/n)`` and ``f_k = sqrt(2/n)``,
    as ``scipy.fft.dct(x, type=2, norm="ortho")[:, :n_out]`` computes.
    """
    k = np.arange(n_out)
    basis = np.cos(np.pi * np.outer(2 * np.arange(n) + 1, k) / (2 * n))
    basis *= np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return basis


def one_pole_smooth(x: np.ndarray, s: float, state: np.ndarray) -> np.ndarray:
    """``y[t] = s x[t] + (1 - s) y[t-1]`` down axis 0 of ``(T, C)`` ``x``, with ``state`` ``(1, C)``
    (or ``(C,)``) in place of ``(1 - s) y[-1]``.

    Bit for bit ``scipy.signal.lfilter([s], [1, s - 1], x, axis=0, zi=state)[0]``. Returns
    ``(T, C)`` float64.
    """
    x = np.asarray(x, np.float64)
    y = np.empty_like(x)
    carry = np.asarray(state, np.float64).reshape(x.shape[1:])
    keep = 1.0 - s
    for t in range(x.shape[0]):
        y[t] = s * x[t] + carry
        carry = keep * y[t]
    return y
