"""A redshift distribution shaped like the DESI imaging LRGs': 0.2 < z < 1.35, peak near z = 0.75.

The real n(z) is not available here; this smooth stand-in (two Gaussians, truncated) has the same
support and a similar width, which is what sets the large-scale kernels.
"""
from __future__ import annotations

import numpy as np

Z_MIN, Z_MAX = 0.2, 1.35


def lrg_like_nz(n: int = 600, z_min: float = Z_MIN, z_max: float = Z_MAX):
    """(z, n(z)) on a uniform grid, normalised so that the trapezoid integral of n over z is 1."""
    z = np.linspace(z_min, z_max, n)
    nz = 0.6 * np.exp(-0.5 * ((z - 0.72) / 0.12) ** 2) + 0.4 * np.exp(-0.5 * ((z - 0.85) / 0.2) ** 2)
    return z, nz / np.trapezoid(nz, z)
