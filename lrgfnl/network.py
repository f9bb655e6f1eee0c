"""Neural-network selection weights, after SYSNet (Rezaie et al. 2020): an MLP maps the imaging
maps of a pixel to its expected count, trained with a Poisson loss.

k-fold: each fold is predicted by networks trained on the other folds (one of them held out for
early stopping), so no pixel's weight comes from a network that saw its count. Several chains
(random initialisations) are averaged. AdamW with cosine annealing, as in sysnetdev.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .threads import torch_one_thread


@dataclass(frozen=True)
class NetworkSettings:
    hidden: tuple = (20, 20)
    n_folds: int = 5
    n_chains: int = 3
    epochs: int = 30
    lr: float = 0.05
    batch_size: int = 1024
    seed: int = 0
    weight_decay: float = 0.0
    fold_nside: int = 0          # 0: folds of random pixels; n: folds of whole nside-n patches


def _mlp(n_in, hidden):
    import torch.nn as nn

    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, 1)]
    return nn.Sequential(*layers)


def _train_one(x_tr, n_tr, fg_tr, x_va, n_va, fg_va, scale, s: NetworkSettings, seed):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net = _mlp(x_tr.shape[1], s.hidden)
    with torch.no_grad():  # start at F = 1: softplus(b) = 1
        net[-1].weight.mul_(0.1)
        net[-1].bias.fill_(float(np.log(np.expm1(1.0))))
    opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs, eta_min=s.lr * 0.01)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(x, n, fg):
        lam = fg * scale * F.softplus(net(x)[:, 0])
        return torch.mean(lam - n * torch.log(lam + 1e-12))

    best, best_state = np.inf, None
    for _ in range(s.epochs):
        net.train()
        order = torch.randperm(len(n_tr), generator=gen)
        for start in range(0, len(order), s.batch_size):
            idx = order[start:start + s.batch_size]
            opt.zero_grad()
            loss = loss_of(x_tr[idx], n_tr[idx], fg_tr[idx])
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            v = float(loss_of(x_va, n_va, fg_va))
        if v < best:
            best, best_state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(best_state)
    return net


def nn_selection_fit(counts, fracgood, features, settings: NetworkSettings = NetworkSettings()) -> np.ndarray:
    """Selection function F (mean 1 on the footprint, 1 elsewhere) from the k-fold MLP ensemble."""
    import torch

    sel = np.flatnonzero(fracgood > 0)
    x_all = torch.as_tensor(features[sel], dtype=torch.float32)
    n_all = torch.as_tensor(counts[sel], dtype=torch.float32)
    fg_all = torch.as_tensor(fracgood[sel], dtype=torch.float32)
    scale = float(counts[sel].sum() / fracgood[sel].sum())
    with torch_one_thread():
        pred = _kfold_predict(x_all, n_all, fg_all, scale, settings, fold_groups(sel, len(fracgood), settings))
    f = np.ones_like(fracgood, dtype=float)
    f[sel] = pred / pred.mean()
    return f


def fold_groups(pixels, npix, settings: NetworkSettings) -> np.ndarray:
    """The group each footprint pixel is dealt into a fold with: itself, or its nside-n patch."""
    import healpy as hp

    nside = hp.npix2nside(npix)
    if not settings.fold_nside or nside <= settings.fold_nside:   # a map no finer than the patches
        return np.arange(len(pixels))
    shift = 2 * int(np.log2(nside // settings.fold_nside))
    return hp.ring2nest(nside, pixels) >> shift


def _kfold_predict(x_all, n_all, fg_all, scale, settings: NetworkSettings, groups) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    k = settings.n_folds
    uniq, inv = np.unique(groups, return_inverse=True)
    folds = (np.random.default_rng(settings.seed).permutation(len(uniq)) % k)[inv]
    pred = np.zeros(len(n_all))
    for fold in range(k):
        test = folds == fold
        valid = folds == (fold + 1) % k
        train = ~(test | valid)
        tr, va = torch.as_tensor(train), torch.as_tensor(valid)
        fold_pred = np.zeros(len(n_all))
        for chain in range(settings.n_chains):
            net = _train_one(x_all[tr], n_all[tr], fg_all[tr], x_all[va], n_all[va], fg_all[va], scale,
                             settings, seed=settings.seed * 1000 + fold * 100 + chain)
            with torch.no_grad():
                out = F.softplus(net(x_all)[:, 0]).numpy().astype(float)
            fold_pred += out / out.mean() / settings.n_chains
        pred[test] = fold_pred[test]
    return pred
