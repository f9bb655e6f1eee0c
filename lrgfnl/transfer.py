"""The over-correction of a mitigation, calibrated on clean mocks and put into the model.

A flexible regression of the counts on the imaging maps also removes part of the galaxies' own
clustering: the large-scale density modes that, on this footprint, happen to resemble a function of
the maps. k-fold training does not stop it, because a held-out pixel's neighbours in the training
folds carry the same large-scale modes. The more maps and the more power on large scales (f_NL > 0),
the more is removed, so f_NL comes out low (the nine-map over-correction of Rezaie et al.).

The remedy of the paper is to measure the effect on mocks without contamination: the same
mitigation is run on clean mocks, and the ratio of the mean mitigated to the mean unmitigated
signal spectrum (pseudo-C_ell minus shot noise, same density fields) is the transfer T_b(f_NL) of
each bin. The model of a mitigated map is then T_b(f_NL) C_b(f_NL, b): linear in f_NL between the
calibration values, constant beyond them. The loss of large-scale information this represents
widens the posterior instead of biasing it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MitigationTransfer:
    fnl_nodes: np.ndarray       # (m,) increasing f_NL of the calibration mocks
    ratio: np.ndarray           # (m, nbins) mean mitigated / mean clean signal
    n_mocks: int = 0

    @classmethod
    def from_signals(cls, fnl_nodes, clean: list, mitigated: list) -> "MitigationTransfer":
        """clean[j], mitigated[j]: (n_mocks, nbins) signal spectra of the same mocks at fnl_nodes[j]."""
        order = np.argsort(fnl_nodes)
        ratio = np.array([np.sum(mitigated[j], axis=0) / np.sum(clean[j], axis=0) for j in order])
        return cls(np.asarray(fnl_nodes, float)[order], ratio, int(min(len(c) for c in clean)))

    def __call__(self, fnl) -> np.ndarray:
        """T for f_NL values of shape (n,): (n, nbins)."""
        fnl = np.atleast_1d(np.asarray(fnl, float))
        return np.stack([np.interp(fnl, self.fnl_nodes, r) for r in self.ratio.T], axis=1)

    def to_dict(self) -> dict:
        return {"fnl_nodes": self.fnl_nodes.tolist(), "ratio": self.ratio.tolist(), "n_mocks": self.n_mocks}
