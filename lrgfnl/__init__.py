"""lrgfnl: local primordial non-Gaussianity (f_NL) from the angular clustering of a
photometric LRG-like sample, validated end to end on HEALPix mocks.

Layers, lowest first (each imports only those above it in this list):
  cosmology, redshift   CAMB linear P(k), T(k), growth; the LRG-like n(z)
  theory                exact (non-Limber) and Limber C_ell, split into precomputed parts
  sphere                Legendre transforms, the mask window and the integral constraint
  footprint, templates  a DESI-like mask and synthetic imaging maps
  mocks                 Gaussian / log-normal Poisson mocks and their contamination
  estimator             pseudo-C_ell, binning, template cross-spectra
  mitigation, network   linear Poisson regression and a SYSNet-like MLP
  likelihood, sampling  Gaussian likelihood in log C_ell, maximum likelihood and emcee
  campaign              mock campaigns (the table of cases)
  inputs, fit_map       a user's FITS maps, checked, and their fit
  cli, plots            the lrgfnl command and the PNG plots
  errors, threads       the one input-error type; one-thread transforms
Nothing here imports elastiq.
"""
__version__ = "0.1.0"
