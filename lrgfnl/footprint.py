"""A DESI-imaging-like footprint: -20 < dec < 75 deg and |galactic b| > 25 deg (f_sky 0.39)."""
from __future__ import annotations

import numpy as np


def pixel_angles(nside: int):
    """(ra, dec, galactic l, galactic b) of every pixel centre, in degrees (RING order)."""
    import healpy as hp

    ra, dec = hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), lonlat=True)
    gl, gb = hp.Rotator(coord=["C", "G"])(ra, dec, lonlat=True)
    return ra, dec, gl, gb


def desi_like_mask(nside: int, dec_min: float = -20.0, dec_max: float = 75.0, b_min: float = 25.0):
    """Binary footprint (float 0/1 per pixel)."""
    _, dec, _, gb = pixel_angles(nside)
    return ((dec > dec_min) & (dec < dec_max) & (np.abs(gb) > b_min)).astype(float)
