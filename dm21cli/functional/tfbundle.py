"""Read a TensorFlow tensor-bundle checkpoint with numpy only (no TensorFlow).

A TF checkpoint ``PREFIX`` is two kinds of file:

``PREFIX.index``
    A LevelDB-format table (TF's ``tensorflow/core/lib/io/table``): data
    blocks of prefix-compressed ``key -> value`` entries, an index block
    pointing at them and a 48-byte footer ending in the magic number
    ``0xdb4775248b80fb57``.  Every block is followed by a one-byte compression
    type (0 = none, 1 = Snappy -- TF writes the DM21 index Snappy-compressed)
    and the masked CRC-32C of block + type byte, which is checked.  The entry
    with the empty key is a ``BundleHeaderProto``; every other key is a tensor
    name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset,
    size, masked CRC-32C of the tensor's bytes).
``PREFIX.data-SSSSS-of-NNNNN``
    The raw little-endian tensor bytes, read at ``offset`` / ``size``.

Only what DM21's checkpoints need is supported: plain (non-partitioned)
numeric tensors.  Protobuf and Snappy are decoded here by a few lines of
Python, so neither ``protobuf`` nor ``python-snappy`` is a dependency.  Each
tensor's CRC-32C is verified with a numpy-vectorised CRC (about 20 ms for the
1.6 MB of a DM21 checkpoint).  Any malformed input raises
:class:`dm21cli.core.errors.WeightsError` naming the file.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from dm21cli.core.errors import WeightsError

__all__ = ["read_bundle", "crc32c", "masked_crc32c"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_LEN = 48  # two BlockHandles (<= 20 bytes each), zero padding, 8-byte magic
BLOCK_TRAILER_LEN = 5  # compression type byte + fixed32 masked crc32c

#: TF DataType enum -> little-endian numpy dtype (fixed-size numeric types only).
DTYPES = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "<u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "<i1",  # DT_INT8
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    17: "<u2",  # DT_UINT16
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}


class _Malformed(ValueError):
    """Internal: decoding failed; turned into WeightsError with the file name."""


# ----------------------------------------------------------------- CRC-32C
_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected


def _make_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]
_LANES = 1024  # parallel lanes of the vectorised CRC (a power of two)
_SMALL = 1 << 16  # below this many bytes a plain Python loop is fast enough


def _crc32c_small(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _TABLE_LIST
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _apply(op: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply a GF(2)-linear map on uint32, given as 4 byte tables (4, 256)."""
    return (op[0][x & 0xFF] ^ op[1][(x >> 8) & 0xFF]
            ^ op[2][(x >> 16) & 0xFF] ^ op[3][x >> 24])


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as used by TF and LevelDB.

    Large inputs are cut into ``_LANES`` equal chunks whose CRC registers are
    advanced together with numpy, then combined pairwise with the linear map
    "feed n zero bytes" (the CRC register is linear over GF(2)).
    """
    n = len(data)
    if n < _SMALL:
        return _crc32c_small(data)
    buf = np.frombuffer(data, dtype=np.uint8)
    length = -(-n // _LANES)
    padded = np.zeros(_LANES * length, dtype=np.uint8)
    # Leading zero bytes leave a zero register unchanged; the initial register
    # 0xFFFFFFFF is the same as complementing the first four message bytes.
    padded[_LANES * length - n:] = buf
    padded[_LANES * length - n:][:4] ^= 0xFF
    columns = np.ascontiguousarray(padded.reshape(_LANES, length).T)
    state = np.zeros(_LANES, dtype=np.uint32)
    # op: register after feeding `length` zero bytes, tabulated per input byte
    op = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32))[:, None])
    for j in range(length):
        state = _TABLE[(state ^ columns[j]) & 0xFF] ^ (state >> 8)
        op = _TABLE[op & 0xFF] ^ (op >> 8)
    while len(state) > 1:  # register(A + B) = zeros_len(B)(register(A)) ^ register(B)
        state = _apply(op, state[0::2]) ^ state[1::2]
        op = _apply(op, op)
    return int(state[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TF/LevelDB's masked CRC-32C: rotate right by 15, add 0xa282ead8."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# -------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode a protobuf message into [(field number, value)].

    Varints and fixed32/fixed64 become ints, length-delimited fields bytes.
    """
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Malformed("truncated fixed-width field")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Malformed("truncated length-delimited field")
            value = bytes(buf[pos:pos + size])
            pos += size
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        out.append((field, value))
    return out


def _int64(value: int) -> int:
    """Reinterpret a decoded varint as a signed int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


# ------------------------------------------------------------------ Snappy
def _snappy_decompress(buf: bytes) -> bytes:
    """Decompress a raw Snappy block (format_description.txt of google/snappy)."""
    expected, pos = _varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            size += 1
            if pos + size > len(buf):
                raise _Malformed("truncated Snappy literal")
            out += buf[pos:pos + size]
            pos += size
            continue
        width = {1: 1, 2: 2, 3: 4}[kind]
        if pos + width > len(buf):
            raise _Malformed("truncated Snappy copy")
        offset = int.from_bytes(buf[pos:pos + width], "little")
        pos += width
        if kind == 1:  # 1-byte offset with 3 more offset bits and the length in the tag
            size, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | offset
        else:
            size = (tag >> 2) + 1
        if not 0 < offset <= len(out):
            raise _Malformed("bad Snappy copy offset")
        start = len(out) - offset
        if offset >= size:
            out += out[start:start + size]
        else:  # the copy overlaps its own output: repeat byte by byte
            for i in range(size):
                out.append(out[start + i])
    if len(out) != expected:
        raise _Malformed("Snappy length mismatch")
    return bytes(out)


# ------------------------------------------------------------ LevelDB table
def _read_block(data: bytes, handle: bytes) -> bytes:
    """Return the (decompressed) contents of the block a BlockHandle points at."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    end = offset + size
    if end + BLOCK_TRAILER_LEN > len(data):
        raise _Malformed("block extends past the end of the file")
    block = data[offset:end]
    ctype = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset:end + 1]) != stored:
        raise _Malformed(f"checksum mismatch in the block at byte {offset}")
    if ctype == 0:
        return block
    if ctype == 1:
        return _snappy_decompress(block)
    raise _Malformed(f"unsupported block compression type {ctype}")


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decode the prefix-compressed entries of one block into [(key, value)]."""
    if len(block) < 4:
        raise _Malformed("block too short")
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Malformed("bad restart count")
    entries, pos, key = [], 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > limit:
            raise _Malformed("bad block entry")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _table_entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of a LevelDB-format table file, in key order."""
    if len(data) < FOOTER_LEN:
        raise _Malformed("file too short for a table footer")
    footer = data[-FOOTER_LEN:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise _Malformed("bad table magic number (not a TF checkpoint index)")
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index = _read_block(data, footer[pos:])
    entries = []
    for _, handle in _block_entries(index):
        entries.extend(_block_entries(_read_block(data, handle)))
    return entries


# ------------------------------------------------------------ tensor bundle
def _parse_entry(value: bytes) -> dict:
    """Decode a BundleEntryProto into dtype, shape, shard_id, offset, size, crc32c."""
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, v in _fields(value):
        if field == 1:
            entry["dtype"] = v
        elif field == 2:  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}
            for f, dim in _fields(v):
                if f == 2:
                    size = [_int64(s) for g, s in _fields(dim) if g == 1]
                    entry["shape"].append(size[-1] if size else 0)
                elif f == 3 and dim:
                    raise _Malformed("tensor of unknown rank")
        elif field in (3, 4, 5):
            entry[{3: "shard_id", 4: "offset", 5: "size"}[field]] = v
        elif field == 6:
            entry["crc32c"] = v
        elif field == 7:
            raise _Malformed("partitioned (sliced) tensors are not supported")
    return entry


def read_bundle(prefix: Path | str) -> dict[str, np.ndarray]:
    """Read every tensor of the checkpoint ``prefix`` (e.g. ``DM21/variables/variables``).

    Returns ``{tensor name: numpy array}`` with the stored dtype (DM21: float32)
    and shape, e.g. ``hub_wrapper/local_functional_v2/MLP/ResidualBlock/linear/w``
    of shape (256, 256).  Arrays are native-endian, writable copies.
    Raises WeightsError (naming the file) on any missing or malformed file,
    unsupported dtype, or CRC-32C mismatch.
    """
    prefix = Path(prefix)
    index_path = prefix.with_name(prefix.name + ".index")
    try:
        index_bytes = index_path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{index_path}: cannot read checkpoint index: {exc.strerror or exc}") from exc

    num_shards, entries = 1, []
    try:
        for key, value in _table_entries(index_bytes):
            if key == b"":  # BundleHeaderProto: num_shards = 1, endianness = 2
                header = dict(_fields(value))
                num_shards = header.get(1, 1)
                if header.get(2, 0) != 0:
                    raise _Malformed("big-endian checkpoints are not supported")
                continue
            entries.append((key.decode("utf-8"), _parse_entry(value)))
    except (_Malformed, UnicodeDecodeError) as exc:
        raise WeightsError(f"{index_path}: malformed checkpoint index: {exc}") from exc
    if not entries:
        raise WeightsError(f"{index_path}: checkpoint index holds no tensors")

    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for name, e in entries:
        dtype = DTYPES.get(e["dtype"])
        if dtype is None:
            raise WeightsError(f"{index_path}: tensor {name}: unsupported dtype enum {e['dtype']}")
        shard = e["shard_id"]
        data_path = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
        if shard not in shards:
            try:
                shards[shard] = data_path.read_bytes()
            except OSError as exc:
                raise WeightsError(f"{data_path}: cannot read checkpoint data: {exc.strerror or exc}") from exc
        shape = tuple(e["shape"])
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        start, size = e["offset"], e["size"]
        if size != nbytes or start + size > len(shards[shard]) or min(shape, default=0) < 0:
            raise WeightsError(f"{data_path}: tensor {name}: {size} bytes at offset {start} "
                               f"do not fit shape {shape} of {np.dtype(dtype).name}")
        raw = shards[shard][start:start + size]
        if e["crc32c"] is not None and masked_crc32c(raw) != e["crc32c"]:
            raise WeightsError(f"{data_path}: tensor {name}: CRC-32C mismatch (file corrupted)")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        tensors[name] = array.astype(array.dtype.newbyteorder("="), copy=True)
    return tensors
