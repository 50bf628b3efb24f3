"""A symmetric eigensolver split in its three LAPACK steps, to run the last one in float32.

``numpy.linalg.eigh`` spends about a third of its time (0.15 s of 0.44 s on one core for a
1536 x 1536 Gram matrix, measured) multiplying the tridiagonal problem's eigenvectors back
by the Householder reflectors, in float64. The decisions of the rule need the
tridiagonalisation and the tridiagonal eigenproblem in float64 (that is where close
eigenvalues are told apart); the back-multiplication is an orthogonal transform, whose
float32 rounding (about 1e-7 per entry, measured 2.4e-7) is what the engine's float32 basis
has anyway. So: dsytrd and dstedc in float64, sormtr in float32 (0.32 s in all).

The three routines are called through LAPACKE in the OpenBLAS that numpy wheels ship
(``scipy_openblas64_``; ctypes releases the GIL, so two layers run side by side). Where that
library is not found or does not agree with numpy on a small check, ``eigh`` is None and
the engine uses ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import numpy as np

_COL_MAJOR = 102


def _find_library():
    base = os.path.dirname(np.__file__)
    patterns = {"linux": ["numpy.libs/libscipy_openblas64_*.so*"],
                "darwin": ["numpy/.dylibs/libscipy_openblas64_*.dylib"],
                "win32": ["numpy.libs/libscipy_openblas64_*.dll"]}.get(sys.platform, [])
    for pat in patterns:
        found = sorted(glob.glob(os.path.join(os.path.dirname(base), pat)))
        if found:
            return found[0]
    return None


def _bind():
    path = _find_library()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        i64, ptr, ch = ctypes.c_int64, ctypes.c_void_p, ctypes.c_char
        sytrd = lib.scipy_LAPACKE_dsytrd64_
        sytrd.argtypes = [ctypes.c_int, ch, i64, ptr, i64, ptr, ptr, ptr]
        stedc = lib.scipy_LAPACKE_dstedc64_
        stedc.argtypes = [ctypes.c_int, ch, i64, ptr, ptr, ptr, i64]
        ormtr = lib.scipy_LAPACKE_sormtr64_
        ormtr.argtypes = [ctypes.c_int, ch, ch, ch, i64, i64, ptr, i64, ptr, ptr, i64]
        for f in (sytrd, stedc, ormtr):
            f.restype = i64
    except (OSError, AttributeError):
        return None
    return sytrd, stedc, ormtr


def _split_eigh(G: np.ndarray):
    """Eigenvalues (float64, ascending) and eigenvectors (float32, columns) of a symmetric G."""
    sytrd, stedc, ormtr = _routines
    n = G.shape[0]
    if n < 2:
        return np.linalg.eigh(G)[0], np.ones((n, n), dtype=np.float32)
    a = np.array(G, dtype=np.float64, order="F", copy=True)
    d, e, tau = np.empty(n), np.empty(n - 1), np.empty(n - 1)
    if sytrd(_COL_MAJOR, b"L", n, a.ctypes.data, n, d.ctypes.data, e.ctypes.data, tau.ctypes.data):
        return None
    z = np.empty((n, n), order="F")
    if stedc(_COL_MAJOR, b"I", n, d.ctypes.data, e.ctypes.data, z.ctypes.data, n):
        return None
    del e
    a32 = a.astype(np.float32, order="F")
    del a
    tau32 = tau.astype(np.float32)
    z32 = z.astype(np.float32, order="F")
    del z
    if ormtr(_COL_MAJOR, b"L", b"L", b"N", n, n, a32.ctypes.data, n, tau32.ctypes.data, z32.ctypes.data, n):
        return None
    return d, z32


def _self_check() -> bool:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 12))
    G = x.T @ x
    out = _split_eigh(G)
    if out is None:
        return False
    lam, V = out
    lam0, V0 = np.linalg.eigh(G)
    V = V.astype(np.float64)
    return bool(np.allclose(lam, lam0, rtol=1e-12, atol=1e-12 * lam0[-1])
                and np.allclose(np.abs(V.T @ V0), np.eye(12), atol=1e-5))


_routines = _bind()
eigh = _split_eigh if _routines is not None and _self_check() else None
