"""Deterministic Ogg Vorbis files for the demo data.

libsndfile draws a random stream serial number for every Ogg file it writes, so two
generations of the same demo data would differ byte for byte (and with them the prepared
data's fingerprint). `pin_serial` rewrites the serial in every page header and fixes the
page checksums (Ogg's CRC-32: polynomial 0x04C11DB7, no reflection, initial value 0).
"""

from __future__ import annotations

import struct


def _crc(data: bytes) -> int:
    table = _TABLE
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[((crc >> 24) & 0xFF) ^ b]
    return crc


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_TABLE = _make_table()


def pin_serial(data: bytes, serial: int) -> bytes:
    """Set every page's stream serial to `serial` and recompute the page CRCs."""
    out = bytearray(data)
    pos = 0
    while pos + 27 <= len(out):
        if out[pos:pos + 4] != b'OggS':
            raise ValueError('unexpected OGG page layout while pinning the serial number')
        nseg = out[pos + 26]
        body = sum(out[pos + 27:pos + 27 + nseg])
        end = pos + 27 + nseg + body
        out[pos + 14:pos + 18] = struct.pack('<I', serial)
        out[pos + 22:pos + 26] = b'\0\0\0\0'
        out[pos + 22:pos + 26] = struct.pack('<I', _crc(bytes(out[pos:end])))
        pos = end
    return bytes(out)
