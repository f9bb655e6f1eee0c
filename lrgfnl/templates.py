"""Synthetic imaging-systematics maps named like the DR9 ones, mutually correlated.

EBV has a steep-spectrum random component and a csc|b| trend; stellar density follows galactic
latitude and EBV; the g, r, z galaxy depths carry declination stripes (survey tiling), a shared
random part and the extinction they are corrected for; the W1 depth follows ecliptic latitude; the
seeing maps share stripes and a random part and make the depths shallower.
"""
from __future__ import annotations

import numpy as np

from .footprint import pixel_angles

NAMES9 = ("EBV", "STARDENS", "GALDEPTH_G", "GALDEPTH_R", "GALDEPTH_Z", "PSFDEPTH_W1",
          "PSFSIZE_G", "PSFSIZE_R", "PSFSIZE_Z")
NAMES3 = ("EBV", "GALDEPTH_Z", "PSFSIZE_R")  # the paper's three primary maps


def random_field(nside: int, slope: float, rng: np.random.Generator, lmin: int = 1) -> np.ndarray:
    """A unit-variance Gaussian field with C_ell proportional to (ell + 1)^-slope."""
    lmax = 3 * nside - 1
    ell = np.arange(lmax + 1)
    cl = (ell + 1.0) ** -slope
    cl[:lmin] = 0.0
    m = gaussian_map(cl, nside, rng)
    return (m - m.mean()) / m.std()


def gaussian_map(cl: np.ndarray, nside: int, rng: np.random.Generator) -> np.ndarray:
    """A Gaussian map with power spectrum cl, drawn from `rng` (healpy's synfast uses a global seed)."""
    import healpy as hp

    lmax = len(cl) - 1
    ell, m = hp.Alm.getlm(lmax)
    amp = np.sqrt(np.maximum(cl, 0.0))[ell]
    re = rng.standard_normal(len(ell))
    im = rng.standard_normal(len(ell))
    alm = np.where(m == 0, re * amp, (re + 1j * im) * amp / np.sqrt(2.0))
    return hp.alm2map(alm.astype(complex), nside, lmax=lmax, pixwin=False)


def imaging_templates(nside: int, seed: int = 7) -> dict[str, np.ndarray]:
    """The nine maps, full sky (only the footprint's pixels matter)."""
    rng = np.random.default_rng(seed)
    ra, dec, _, gb = pixel_angles(nside)
    import healpy as hp

    _, ecl_lat = hp.Rotator(coord=["C", "E"])(ra, dec, lonlat=True)
    sinb = np.maximum(np.abs(np.sin(np.radians(gb))), 0.15)
    dust = random_field(nside, 2.6, rng)
    ebv = 0.012 / sinb * np.exp(0.45 * dust)
    stars = 1500.0 * np.exp(-(np.abs(gb) - 20.0) / 18.0) * np.exp(0.15 * random_field(nside, 2.0, rng)) \
        * (1.0 + 2.0 * ebv)
    stripes = 0.12 * np.sin(2 * np.pi * dec / 9.0) + 0.08 * np.sign(np.sin(2 * np.pi * dec / 23.0))
    seeing_common = random_field(nside, 1.5, rng)
    seeing_stripes = 0.10 * np.cos(2 * np.pi * dec / 11.0) + 0.05 * (dec > 32.0)
    depth_common = random_field(nside, 1.8, rng)
    maps = {"EBV": ebv, "STARDENS": stars}
    for band, fwhm in (("G", 1.45), ("R", 1.30), ("Z", 1.20)):
        maps[f"PSFSIZE_{band}"] = fwhm + seeing_stripes + 0.08 * seeing_common \
            + 0.03 * random_field(nside, 1.5, rng)
    for band, base, r_ext in (("G", 24.2, 3.21), ("R", 23.7, 2.17), ("Z", 22.8, 1.21)):
        maps[f"GALDEPTH_{band}"] = base + stripes + 0.10 * depth_common \
            + 0.04 * random_field(nside, 1.8, rng) - 2.0 * r_ext * ebv \
            - 0.8 * (maps[f"PSFSIZE_{band}"] - 1.3)
    maps["PSFDEPTH_W1"] = 21.0 + 0.35 * np.abs(np.sin(np.radians(ecl_lat))) - 0.18 * ebv \
        - 0.05 * np.log10(stars) + 0.05 * random_field(nside, 1.5, rng)
    return {n: maps[n] for n in NAMES9}


def standardize(features: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Features (pixels x maps) centred and scaled by their mean and std over the footprint."""
    sel = footprint > 0
    mu = features[sel].mean(axis=0)
    sd = features[sel].std(axis=0)
    return (features - mu) / np.where(sd > 0, sd, 1.0)
