"""A user's HEALPix maps (FITS): counts, mask (fracgood, 0 off the footprint) and imaging templates.

Every check names the file and the fix in one line (FnlInputError); nothing is written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FnlInputError


@dataclass
class UserMaps:
    nside: int
    counts: np.ndarray
    mask: np.ndarray
    templates: dict       # name -> map


def read_healpix(path) -> np.ndarray:
    import healpy as hp

    p = Path(path)
    if not p.is_file():
        raise FnlInputError(f"{p}: no such file: give the path of a HEALPix FITS map")
    try:
        m = hp.read_map(str(p), dtype=np.float64)  # converted to RING order
    except Exception as exc:  # astropy / healpy raise many types for a bad file
        raise FnlInputError(f"{p}: not a readable HEALPix FITS map ({type(exc).__name__}: {exc})") from None
    if m.ndim != 1 or not hp.isnpixok(len(m)):
        raise FnlInputError(f"{p}: {m.shape} is not one HEALPix map: write one map per file")
    m = np.asarray(m, float)
    m[m == hp.UNSEEN] = np.nan  # unobserved pixels of partial maps: refused where the mask needs them
    return m


def check_maps(counts, mask, templates: dict, names: dict | None = None) -> UserMaps:
    """Validates maps already in memory (names: label of each, for the messages)."""
    import healpy as hp

    names = names or {}
    label = lambda key: names.get(key, key)
    sizes = {"counts": len(counts), "mask": len(mask), **{k: len(v) for k, v in templates.items()}}
    nsides = {k: hp.npix2nside(n) if hp.isnpixok(n) else None for k, n in sizes.items()}
    bad = [k for k, v in nsides.items() if v is None]
    if bad:
        raise FnlInputError(f"{label(bad[0])}: {sizes[bad[0]]} pixels is not a HEALPix map size")
    if len(set(nsides.values())) > 1:
        listing = ", ".join(f"{label(k)} nside {v}" for k, v in nsides.items())
        raise FnlInputError(f"maps of different nside ({listing}): bring them to one nside "
                            f"(healpy.ud_grade) first")
    mask = np.where(np.isfinite(mask) & (mask > 0), np.asarray(mask, float), 0.0)
    if not np.any(mask > 0):
        raise FnlInputError(f"{label('mask')}: the mask has no pixel above 0: give the footprint's "
                            f"fraction of good area per pixel (0 outside)")
    if np.any(mask > 1.0 + 1e-6):
        raise FnlInputError(f"{label('mask')}: values above 1: the mask is a fraction of good area (0..1)")
    on = mask > 0
    c = np.asarray(counts, float)
    if not np.all(np.isfinite(c[on])) or np.any(c[on] < 0):
        raise FnlInputError(f"{label('counts')}: negative or non-finite counts inside the mask: "
                            f"give galaxy counts per pixel")
    if c[on].sum() <= 0:
        raise FnlInputError(f"{label('counts')}: no galaxies inside the mask")
    for k, t in templates.items():
        nbad = int(np.sum(~np.isfinite(np.asarray(t, float)[on])))
        if nbad:
            raise FnlInputError(f"{label(k)}: {nbad} NaN or infinite pixels inside the mask: fill them "
                                f"or set those pixels to 0 in the mask")
        if np.std(np.asarray(t, float)[on]) == 0:
            raise FnlInputError(f"{label(k)}: the template is constant on the footprint: drop it")
    return UserMaps(nside=int(nsides["counts"]), counts=c, mask=mask,
                    templates={k: np.asarray(v, float) for k, v in templates.items()})


def read_user_maps(counts_path, mask_path, template_paths=()) -> UserMaps:
    counts = read_healpix(counts_path)
    mask = read_healpix(mask_path)
    templates, names = {}, {"counts": str(counts_path), "mask": str(mask_path)}
    for p in template_paths:
        key = Path(p).stem.upper()
        if key in templates:
            raise FnlInputError(f"{p}: two templates are named {key}: rename one file")
        templates[key] = read_healpix(p)
        names[key] = str(p)
    return check_maps(counts, mask, templates, names)


def write_healpix(path, m, overwrite=False):
    """Writes through a temporary file, so a failure never leaves half a map."""
    import healpy as hp

    p = Path(path)
    if p.exists() and not overwrite:
        raise FnlInputError(f"{p} exists: choose another path or pass --overwrite")
    tmp = p.with_name(p.name + ".part")
    hp.write_map(str(tmp), m, overwrite=True, dtype=np.float64)
    tmp.replace(p)
