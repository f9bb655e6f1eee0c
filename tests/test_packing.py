"""Bit packing: exhaustive round trips and the byte layout."""
import pytest
import torch

from elastiq.formats import pack_bits, unpack_bits
from elastiq.formats.packing import packed_nbytes


@pytest.mark.parametrize("bits", list(range(1, 17)) + [32])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 31, 1000])
def test_roundtrip(bits, count):
    g = torch.Generator().manual_seed(bits * 1000 + count)
    hi = 1 << min(bits, 31)
    codes = torch.randint(0, hi, (count,), generator=g)
    buf = pack_bits(codes, bits)
    assert buf.dtype == torch.uint8 and buf.numel() == packed_nbytes(count, bits) == (count * bits + 7) // 8
    assert torch.equal(unpack_bits(buf, bits, count).long(), codes)


@pytest.mark.parametrize("bits", range(1, 9))
def test_every_code_value_survives(bits):
    codes = torch.arange(1 << bits).repeat(3)
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, codes.numel()).long(), codes)


def test_little_endian_layout():
    assert pack_bits(torch.tensor([0x1, 0xF]), 4).tolist() == [0xF1]  # first code in the low nibble
    assert pack_bits(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert pack_bits(torch.tensor([0b111111, 0, 0, 0]), 6).tolist() == [0b00111111, 0, 0]
    assert pack_bits(torch.tensor([0x1FF]), 9).tolist() == [0xFF, 0x01]
