"""The lrgfnl command: a mock written as FITS maps and fitted back; bad inputs get one clear line."""
import json

import healpy as hp
import numpy as np
import pytest

from lrgfnl_shared import camb_cache_dir, cosmology

from lrgfnl.cli import main


def _write(path, m):
    hp.write_map(str(path), m, overwrite=True, dtype=np.float64)
    return str(path)


@pytest.fixture(scope="module")
def camb_cache():
    cosmology()  # the session's CAMB tables, written once to this folder
    return camb_cache_dir()


@pytest.fixture(scope="module")
def mock_dir(tmp_path_factory, camb_cache):
    d = tmp_path_factory.mktemp("lrgfnl_mock")
    assert main(["--cache", camb_cache, "mock", "--nside", "32", "--fnl", "0", "--contamination", "linear",
                 "--out-dir", str(d)]) == 0
    return d


def test_mock_then_fit_recovers_a_sensible_fnl(mock_dir, camb_cache, tmp_path):
    out = tmp_path / "fit.json"
    rc = main(["--cache", camb_cache, "fit", "--counts", str(mock_dir / "counts.fits"), "--mask", str(mock_dir / "mask.fits"),
               "--templates", *(str(mock_dir / f"{n}.fits") for n in ("ebv", "galdepth_z", "psfsize_r")),
               "--mitigation", "linear", "--cov-mocks", "40", "--calibration-mocks", "8", "--steps", "800", "--no-pixel-window",
               "--calibration-contamination", "estimated", "--ell-max", "40", "--out", str(out),
               "--plot", str(tmp_path / "corner.png")])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["nside"] == 32 and res["templates"] == ["EBV", "GALDEPTH_Z", "PSFSIZE_R"]
    post = res["posterior"]["fnl"]
    assert post["lo95"] < 0 < post["hi95"]          # the mock has f_NL = 0
    assert 1.0 < res["max_likelihood"]["b"] < 2.0   # input b = 1.43
    t = res["transfer"]     # the linear weights' transfer, from 8 mocks contaminated with the map's own estimate
    assert res["calibration_contamination"] == "estimated"
    assert t["fnl_nodes"] == [0.0, 100.0] and t["n_mocks"] == 8
    assert np.all(np.abs(np.array(t["ratio"]) - 1) < 0.5)
    assert (tmp_path / "corner.png").stat().st_size > 1000


def _fails_with(capsys, argv, text):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrgfnl: error:") and text in err[0], err
    assert "Traceback" not in err[0]


def test_bad_inputs_get_one_clear_line(mock_dir, tmp_path, capsys):
    counts, mask = str(mock_dir / "counts.fits"), str(mock_dir / "mask.fits")
    small = _write(tmp_path / "small.fits", np.ones(hp.nside2npix(16)))
    _fails_with(capsys, ["fit", "--counts", counts, "--mask", small, "--out", str(tmp_path / "a.json")],
                "different nside")
    empty = _write(tmp_path / "empty.fits", np.zeros(hp.nside2npix(32)))
    _fails_with(capsys, ["fit", "--counts", counts, "--mask", empty, "--out", str(tmp_path / "b.json")],
                "no pixel above 0")
    t = hp.read_map(str(mock_dir / "ebv.fits"))
    t[np.flatnonzero(hp.read_map(mask) > 0)[:5]] = np.nan
    nan = _write(tmp_path / "nan_ebv.fits", t)
    _fails_with(capsys, ["fit", "--counts", counts, "--mask", mask, "--templates", nan,
                         "--out", str(tmp_path / "c.json")], "5 NaN")
    _fails_with(capsys, ["fit", "--counts", str(tmp_path / "missing.fits"), "--mask", mask,
                         "--out", str(tmp_path / "d.json")], "no such file")
    (tmp_path / "junk.fits").write_bytes(b"not a fits file")
    _fails_with(capsys, ["fit", "--counts", str(tmp_path / "junk.fits"), "--mask", mask,
                         "--out", str(tmp_path / "e.json")], "not a readable HEALPix")
    _fails_with(capsys, ["fit", "--counts", counts, "--mask", mask, "--mitigation", "linear",
                         "--out", str(tmp_path / "f.json")], "needs imaging templates")
    assert not any(tmp_path.glob("*.json")) and not any(tmp_path.glob("*.part"))


def test_campaign_command_writes_the_summary(camb_cache, tmp_path):
    out = tmp_path / "c.json"
    rc = main(["--cache", camb_cache, "campaign", "--nside", "16", "--mocks", "4", "--cov-mocks", "30", "--cases", "clean",
               "--fnl", "0", "--mcmc", "1", "--steps", "300", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert {"cases", "theory_max_rel_dev"} <= set(res)
    row = res["cases"][0]
    assert {"true_fnl", "mean_fnl", "scatter", "mean_sigma", "n_mocks"} <= set(row) and row["n_mocks"] == 4
