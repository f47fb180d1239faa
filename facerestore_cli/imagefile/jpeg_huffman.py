"""A sequential Huffman coder for JPEG coefficients in NumPy, for what libjpeg cannot be asked to write.

jpeglib cannot ask libjpeg for restart markers when it writes coefficients, so :mod:`.jpeg_blocks`
codes a sequential Huffman source with restart markers here: one interleaved scan, optimised tables
built from the symbols' frequencies (ITU-T T.81 Annex K.2), a restart marker every ``restart`` MCUs.
It is about five times slower than libjpeg (1.15 s against 0.23 s for 2.5 megapixels), so it is used
only where libjpeg cannot do the job.
"""

from __future__ import annotations

import heapq
import struct
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from facerestore_cli.imagefile.jpeg_blocks import JpegLayout

__all__ = ["ZIGZAG", "encode_sequential", "segment"]


def _zigzag_to_natural() -> np.ndarray:
    """Natural (row-major) index of each zig-zag position, as JPEG orders coefficients."""
    order: list[int] = []
    for s in range(15):
        rows = range(min(s, 7), max(0, s - 7) - 1, -1) if s % 2 == 0 else range(max(0, s - 7), min(s, 7) + 1)
        order.extend(r * 8 + (s - r) for r in rows)
    return np.array(order)


ZIGZAG = _zigzag_to_natural()


def segment(marker: int, body: bytes) -> bytes:
    """A marker segment: the marker, the big-endian length, the body."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _bit_length(values: np.ndarray) -> np.ndarray:
    """JPEG's magnitude category: the number of bits of |v| (frexp is exact on integers)."""
    return np.frexp(np.abs(values).astype(np.float64))[1].astype(np.int64)


def _huffman_table(freq: np.ndarray) -> tuple[list[int], list[int]]:
    """BITS and HUFFVAL of an optimal code limited to 16 bits, as T.81 Annex K.2 builds it."""
    counts = [int(f) for f in freq] + [1]  # symbol 256 reserves the all-ones code, which is illegal
    depth = [0] * 257
    heap = [(c, i, [i]) for i, c in enumerate(counts) if c]
    heapq.heapify(heap)
    while len(heap) > 1:
        c1, i1, s1 = heapq.heappop(heap)
        c2, i2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, min(i1, i2), s1 + s2))
    bits = [0] * 258
    for d in depth:
        if d:
            bits[d] += 1
    for i in range(257, 16, -1):  # move over-long codes up the tree (Annex K, figure K.3)
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    i = 16
    while bits[i] == 0:
        i -= 1
    bits[i] -= 1  # drop the reserved code
    values = sorted((d, s) for s, d in enumerate(depth[:256]) if d)
    return bits[1:17], [s for _, s in values]


def _scan_order(planes: list[np.ndarray], layout: JpegLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every block in sequential-scan order (zig-zag, int16), whether it is real rather than MCU padding,
    and the component of each block position within an MCU."""
    if len(planes) == 1:  # a single component is coded block by block, without MCU padding
        blocks = planes[0].reshape(-1, 64)[:, ZIGZAG]
        return blocks, np.ones(len(blocks), bool), np.zeros(1, np.int64)
    mh, mw = layout.mcu
    rows, cols = -(-layout.height // mh), -(-layout.width // mw)
    parts, reals, comps = [], [], []
    for k, (plane, (h, v)) in enumerate(zip(planes, layout.sampling, strict=True)):
        hb, wb = plane.shape[:2]
        padded = np.zeros((rows * v, cols * h, 64), dtype=np.int16)
        padded[:hb, :wb] = plane.reshape(hb, wb, 64)[:, :, ZIGZAG]
        real = np.zeros((rows * v, cols * h), dtype=bool)
        real[:hb, :wb] = True
        parts.append(padded.reshape(rows, v, cols, h, 64).transpose(0, 2, 1, 3, 4).reshape(rows * cols, v * h, 64))
        reals.append(real.reshape(rows, v, cols, h).transpose(0, 2, 1, 3).reshape(rows * cols, v * h))
        comps.append(np.full(v * h, k))
    blocks = np.concatenate(parts, axis=1).reshape(-1, 64)
    return blocks, np.concatenate(reals, axis=1).ravel(), np.concatenate(comps)


def _chunk_symbols(
    blocks: np.ndarray, real: np.ndarray, comp: np.ndarray, interval: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Huffman symbols of whole restart intervals of blocks, in coding order: the number of symbols of
    each block, then per symbol its table (0/1 luma DC/AC, 2/3 chroma), value, extra bits and their count."""
    n = len(blocks)
    blocks = blocks.astype(np.int32)
    blocks[~real, 1:] = 0  # MCU padding blocks: flat, with the previous block's DC (a zero difference)
    chroma = 2 * (comp > 0)
    diff = np.empty(n, dtype=np.int32)
    for k in np.unique(comp):
        idx = np.nonzero(comp == k)[0]
        seq = blocks[idx, 0][np.maximum.accumulate(np.where(real[idx], np.arange(len(idx)), 0))]
        prev = np.concatenate(([0], seq[:-1]))
        prev[np.concatenate(([True], interval[idx][1:] != interval[idx][:-1]))] = 0  # predictor reset
        diff[idx] = seq - prev
    b, p = np.nonzero(blocks[:, 1:])
    value = blocks[b, p + 1]
    first = np.concatenate(([True], b[1:] != b[:-1]))
    last = np.concatenate((b[1:] != b[:-1], [True]))
    prev_p = np.concatenate(([-1], p[:-1]))
    prev_p[first] = -1
    run = p - prev_p - 1
    zrl = run >> 4  # runs of 16 zeros before the coefficient
    size_ac, size_dc = _bit_length(value), _bit_length(diff)
    if size_ac.max(initial=0) > 10 or size_dc.max(initial=0) > 11:
        raise RuntimeError("coefficients out of range for 8-bit JPEG")
    last_p = np.full(n, -1)
    last_p[b[last]] = p[last]
    eob = last_p < 62
    per_nonzero = zrl + 1
    count = 1 + np.bincount(b, weights=per_nonzero, minlength=n).astype(np.int64) + eob
    start = np.cumsum(count) - count
    before = np.cumsum(per_nonzero) - per_nonzero
    offset = start[b] + 1 + before - before[first][np.cumsum(first) - 1]
    total = int(start[-1] + count[-1])
    table, symbol = np.empty(total, np.uint8), np.empty(total, np.uint8)
    extra, extra_len = np.zeros(total, np.uint16), np.zeros(total, np.uint8)
    table[start], symbol[start], extra_len[start] = chroma, size_dc, size_dc
    extra[start] = np.where(diff < 0, diff + (1 << size_dc) - 1, diff)
    if zrl.any():
        zero_runs = np.repeat(offset, zrl) + np.arange(zrl.sum()) - np.repeat(np.cumsum(zrl) - zrl, zrl)
        table[zero_runs], symbol[zero_runs] = np.repeat(chroma[b] + 1, zrl), 0xF0
    at = offset + zrl
    table[at], symbol[at], extra_len[at] = chroma[b] + 1, ((run & 15) << 4) | size_ac, size_ac
    extra[at] = np.where(value < 0, value + (1 << size_ac) - 1, value)
    ends = start[eob] + count[eob] - 1
    table[ends], symbol[ends] = chroma[eob] + 1, 0
    return count.astype(np.uint8), table, symbol, extra, extra_len


def _pack_chunk(
    symbols: tuple[np.ndarray, ...], interval: np.ndarray, codes: np.ndarray, lengths: np.ndarray
) -> list[np.ndarray]:
    """The entropy-coded bytes of each restart interval of a chunk, padded with 1-bits and byte-stuffed.

    Every code's bit position follows from cumulative sums, so the stream is assembled by adding
    non-overlapping codes into 32-bit words instead of a bit-by-bit loop."""
    count, table, symbol, extra, extra_len = symbols
    value = (codes[table, symbol] << extra_len) | extra
    length = lengths[table, symbol] + extra_len
    local = interval - interval[0]
    event_interval = np.repeat(local, count)
    interval_bits = np.bincount(event_interval, weights=length).astype(np.int64)
    interval_bytes = (interval_bits + 7) // 8
    byte_start = np.cumsum(interval_bytes) - interval_bytes
    position = np.cumsum(length) - length
    position += (8 * byte_start - (np.cumsum(interval_bits) - interval_bits))[event_interval]
    pad = 8 * interval_bytes - interval_bits
    position = np.concatenate((position, 8 * byte_start + interval_bits))
    value = np.concatenate((value, (1 << pad) - 1))
    length = np.concatenate((length, pad))
    word, end = position >> 5, (position & 31) + length
    fits = end <= 32
    words = np.bincount(
        word, weights=np.where(fits, value << np.maximum(32 - end, 0), value >> np.maximum(end - 32, 0))
    )
    spill = ~fits
    spilled = (value[spill] & ((1 << (end[spill] - 32)) - 1)) << (64 - end[spill])
    words = np.pad(words, (0, 1)) + np.bincount(word[spill] + 1, weights=spilled, minlength=len(words) + 1)
    stream = np.frombuffer(words.astype(np.uint64).astype(">u4").tobytes(), np.uint8)
    pieces = np.split(stream[: int(interval_bytes.sum())], np.cumsum(interval_bytes)[:-1])
    return [np.insert(piece, np.nonzero(piece == 0xFF)[0] + 1, 0) for piece in pieces]


def encode_sequential(planes: list[np.ndarray], layout: JpegLayout, restart: int) -> tuple[bytes, bytes]:
    """Huffman-code the coefficients as one interleaved sequential scan with a restart marker every
    ``restart`` MCUs (libjpeg cannot be asked for these when writing coefficients): the DHT segments and
    the entropy-coded data. Works on chunks of whole intervals so memory stays bounded."""
    blocks, real, comp_in_mcu = _scan_order(planes, layout)
    per_mcu = len(comp_in_mcu)
    step = per_mcu * restart * max(1, 16384 // (per_mcu * restart))
    chunks = []
    freq = np.zeros((4, 256), np.int64)
    for s in range(0, len(blocks), step):
        index = np.arange(s, min(s + step, len(blocks)))
        interval = index // per_mcu // restart
        symbols = _chunk_symbols(blocks[index], real[index], comp_in_mcu[index % per_mcu], interval)
        freq += np.bincount(symbols[1].astype(np.int64) * 256 + symbols[2], minlength=1024).reshape(4, 256)
        chunks.append((symbols, interval))
    codes, lengths = np.zeros((4, 256), np.int64), np.zeros((4, 256), np.int64)
    dht = []
    for t in np.nonzero(freq.any(axis=1))[0]:
        bits, values = _huffman_table(freq[t])
        code, k = 0, 0
        for size in range(1, 17):
            for _ in range(bits[size - 1]):
                codes[t, values[k]], lengths[t, values[k]] = code, size
                code, k = code + 1, k + 1
            code <<= 1
        dht.append(segment(0xC4, bytes([(t % 2) << 4 | t // 2, *bits, *values])))
    out, number = [], 0
    for symbols, interval in chunks:
        for piece in _pack_chunk(symbols, interval, codes, lengths):
            if number:
                out.append(bytes([0xFF, 0xD0 + (number - 1) % 8]))
            out.append(piece.tobytes())
            number += 1
    return b"".join(dht), b"".join(out)
