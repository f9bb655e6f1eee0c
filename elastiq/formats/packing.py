"""Bit packing of n-bit codes into bytes.

Codes are laid out little-endian: code i occupies bits [i*n, (i+1)*n) of the byte
stream, so two FP4 codes share a byte with the first in the low nibble (the layout
torchao and the OCP reference use). A stream of k codes takes ceil(k*n/8) bytes.
"""
from __future__ import annotations

import torch

_PACKABLE = tuple(range(1, 17)) + (32,)


def packed_nbytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D tensor of non-negative integer codes (< 2**bits) into uint8."""
    _check_bits(bits)
    codes = codes.reshape(-1)
    n = codes.numel()
    if bits == 8:
        return codes.to(torch.uint8)
    if bits in (16, 32):
        wide = codes.to(torch.int32 if bits == 32 else torch.int16)
        return wide.view(torch.uint8).clone()
    if 8 < bits < 16:  # low bytes, then the high (bits - 8) bits packed: same total size
        wide = codes.to(torch.int32)
        return torch.cat([(wide & 0xFF).to(torch.uint8), pack_bits(wide >> 8, bits - 8)])
    if bits == 6:  # 4 codes -> 3 bytes in byte arithmetic (cheaper than the 64-bit words below)
        c = codes.to(torch.uint8)
        if n % 4:
            c = torch.cat([c, c.new_zeros(4 - n % 4)])
        c = c.view(-1, 4)
        out = torch.stack([c[:, 0] | (c[:, 1] << 6), (c[:, 1] >> 2) | (c[:, 2] << 4), (c[:, 2] >> 4) | (c[:, 3] << 2)], 1)
        return out.reshape(-1)[: packed_nbytes(n, bits)]
    if bits == 4:
        c = codes.to(torch.uint8)
        if n % 2:
            c = torch.cat([c, c.new_zeros(1)])
        return c[0::2] | (c[1::2] << 4)
    pad = (-n) % 8
    c = codes.to(torch.int64)
    if pad:
        c = torch.cat([c, c.new_zeros(pad)])
    c = c.view(-1, 8)
    word = c[:, 0].clone()
    for i in range(1, 8):
        word |= c[:, i] << (bits * i)
    out = torch.stack([(word >> (8 * j)) & 0xFF for j in range(bits)], dim=1).to(torch.uint8)
    return out.reshape(-1)[: packed_nbytes(n, bits)]


def unpack_bits(buf: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``count`` codes (uint8, or int32 for 16/32 bits)."""
    _check_bits(bits)
    if buf.dtype != torch.uint8 or buf.dim() != 1:
        raise ValueError(f"packed buffer must be a 1-D uint8 tensor, got {buf.dtype} with shape {tuple(buf.shape)}")
    need = packed_nbytes(count, bits)
    if buf.numel() != need:
        raise ValueError(f"packed buffer holds {buf.numel()} bytes but {count} codes of {bits} bits need {need}")
    if bits == 8:
        return buf
    if bits in (16, 32):
        wide = buf.view(torch.int32 if bits == 32 else torch.int16).to(torch.int32)
        return wide if bits == 32 else wide & 0xFFFF
    if 8 < bits < 16:
        high = unpack_bits(buf[count:], bits - 8, count).to(torch.int32)
        return buf[:count].to(torch.int32) | (high << 8)
    if bits == 6:
        full = torch.zeros(-(-count // 4) * 3, dtype=torch.uint8, device=buf.device)
        full[: buf.numel()] = buf
        b = full.view(-1, 3)
        out = torch.stack([b[:, 0] & 63, (b[:, 0] >> 6) | ((b[:, 1] & 15) << 2), (b[:, 1] >> 4) | ((b[:, 2] & 3) << 4), b[:, 2] >> 2], 1)
        return out.reshape(-1)[:count]
    if bits == 4:
        out = torch.empty(2 * buf.numel(), dtype=torch.uint8, device=buf.device)
        out[0::2] = buf & 0x0F
        out[1::2] = buf >> 4
        return out[:count]
    groups = (count + 7) // 8
    full = torch.zeros(groups * bits, dtype=torch.int64, device=buf.device)
    full[: buf.numel()] = buf
    full = full.view(-1, bits)
    word = full[:, 0].clone()
    for j in range(1, bits):
        word |= full[:, j] << (8 * j)
    mask = (1 << bits) - 1
    out = torch.stack([(word >> (bits * i)) & mask for i in range(8)], dim=1).to(torch.uint8)
    return out.reshape(-1)[:count]


def _check_bits(bits: int) -> None:
    if bits not in _PACKABLE:
        raise ValueError(f"cannot pack {bits}-bit codes; supported widths are {_PACKABLE}")
