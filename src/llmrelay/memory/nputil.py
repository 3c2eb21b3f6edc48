"""NumPy for memory, imported lazily and kept to one BLAS thread when memory imports it first."""

from __future__ import annotations

from typing import Any


def numpy_module() -> Any:
    """NumPy, or None. When memory is the first to import it, its BLAS is kept to one thread (unless
    the environment says otherwise): the products here are small, and a multi-threaded BLAS on a
    loaded machine spins its threads against other processes (measured: 1.3 s instead of 90 ms per
    query embedding at load 10 on 2 cores)."""
    import os
    import sys

    if "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    try:
        import numpy
    except ImportError:
        return None
    return numpy


__all__ = ["numpy_module"]
