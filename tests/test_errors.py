"""Bad input gets a clear error naming the problem, never a deep traceback or silent damage."""
import dataclasses

import pytest
import torch

from elastiq import formats as F


def test_unknown_format_lists_the_catalog():
    with pytest.raises(ValueError) as e:
        F.get("mxfp5")
    msg = str(e.value)
    assert "mxfp5" in msg and "mxfp4" in msg and "nvfp4" in msg and "nxfp4" in msg and "int4" in msg


@pytest.mark.parametrize("spec,match", [
    ("mxfp4,block=abc", "block must be an integer"),
    ("elem=e9m9", "ebits"),
    ("elem=fp7", "unknown grid"),
    ("mxfp4,foo=1", "unknown key"),
    ("mxfp4,round=up", "rounding must be one of"),
    ("mxfp4,block=0", "block must be a positive"),
    ("elem=e2m1|e2m2", "share one width"),
    ("elem=e2m1~x", "must be a number"),
    ("elem=e2m1~6", "already a level"),
    ("mxfp4,scale=ue8m1", "past float32"),
    ("mxfp4 block", "unknown format"),
])
def test_bad_format_strings(spec, match):
    with pytest.raises(ValueError, match=match):
        F.get(spec)


@pytest.mark.parametrize("x", [torch.arange(64), torch.ones(64, dtype=torch.bool), torch.ones(64, dtype=torch.complex64)])
def test_non_float_tensors_are_refused(x):
    for fn in (F.quantize, F.fake_quantize):
        with pytest.raises(TypeError, match="float32, float16, bfloat16"):
            fn(x, "mxfp4")


def test_non_tensor_and_non_packed_inputs():
    with pytest.raises(TypeError, match="torch.Tensor"):
        F.fake_quantize([1.0, 2.0], "mxfp4")
    with pytest.raises(TypeError, match="Packed"):
        F.dequantize(torch.zeros(4))
    with pytest.raises(TypeError, match="string"):
        F.get(4)


def test_axis_outside_the_tensor():
    with pytest.raises(ValueError, match="axis 2"):
        F.quantize(torch.ones(4, 32), "mxfp4,axis=2")


@pytest.mark.parametrize("field,mutate", [
    ("codes", lambda b: b[:-1]),
    ("codes", lambda b: torch.cat([b, b[:3]])),
    ("scales", lambda b: b[1:]),
    ("scales", lambda b: b.to(torch.int32)),
    ("selectors", lambda b: b[:0]),
])
def test_wrong_packed_buffers_are_refused(field, mutate):
    p = F.quantize(torch.randn(8, 64), "nxfp4")
    bad = dataclasses.replace(p, **{field: mutate(getattr(p, field))})
    with pytest.raises(ValueError, match=field):
        F.dequantize(bad)


def test_packed_from_another_shape_or_format_is_refused():
    p = F.quantize(torch.randn(8, 64), "mxfp4")
    with pytest.raises(ValueError, match="truncated or belongs to another tensor"):
        F.dequantize(dataclasses.replace(p, shape=(8, 128)))
    with pytest.raises(ValueError, match="tensor scale"):
        F.dequantize(dataclasses.replace(p, fmt=F.get("mxfp4,tscale=1")))


def test_unpack_checks_its_buffer():
    with pytest.raises(ValueError, match="need"):
        F.unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 10)
    with pytest.raises(ValueError, match="cannot pack"):
        F.pack_bits(torch.zeros(4), 17)
