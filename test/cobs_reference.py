"""A pure-Python COBS (the variant of docs/protocol.md §1: a final full block gets no trailing
0x01), kept only to cross-check the `cobs` package the link uses."""

from __future__ import annotations

from terrain_odt.link import CobsDecodeError


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter)."""
    out = bytearray()
    blocks = bytes(data).split(b"\x00")
    last = len(blocks) - 1
    for i, block in enumerate(blocks):
        while len(block) >= 254:
            out += b"\xff"
            out += block[:254]
            block = block[254:]
            if not block and i == last:
                return bytes(out)
        out.append(len(block) + 1)
        out += block
    return bytes(out)


def cobs_decode(enc: bytes) -> bytes:
    """Decode a COBS encoding (no delimiter); raises :class:`CobsDecodeError`."""
    enc = bytes(enc)
    if 0 in enc:
        raise CobsDecodeError("zero byte in input")
    out = bytearray()
    i, n = 0, len(enc)
    while i < n:
        code = enc[i]
        j = i + code
        if j > n:
            raise CobsDecodeError("not enough input bytes for length code")
        out += enc[i + 1 : j]
        if code != 0xFF and j < n:
            out.append(0)
        i = j
    return bytes(out)
