"""dm21cli.functional.tfbundle: reading TF checkpoints with numpy only, checked against TensorFlow."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dm21cli.functional import tfbundle
from dm21cli.core.errors import WeightsError
from dm21cli.functional.weights import VARIANTS

DATA = "variables.data-00000-of-00001"


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _prefix(root, variant):
    return root / variant / "variables" / "variables"


@pytest.fixture
def bundle_copy(tmp_path, checkpoints_dir):
    """A writable copy of DM21's variables/ folder; returns its prefix."""
    folder = tmp_path / "variables"
    folder.mkdir()
    for name in ("variables.index", DATA):
        shutil.copyfile(checkpoints_dir / "DM21" / "variables" / name, folder / name)
    return folder / "variables"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_tensor_equals_tensorflow_bit_for_bit(tf, checkpoints_dir, variant):
    prefix = _prefix(checkpoints_dir, variant)
    ours = tfbundle.read_bundle(prefix)
    reader = tf.train.load_checkpoint(str(prefix))
    shapes = reader.get_variable_to_shape_map()
    assert sorted(ours) == sorted(shapes)
    assert len(ours) == 28
    for name, array in ours.items():
        expected = reader.get_tensor(name)
        assert array.dtype == expected.dtype == np.float32, name
        assert list(array.shape) == list(shapes[name]), name
        assert array.tobytes() == expected.tobytes(), name
    assert sum(a.size for a in ours.values()) == 401_667


def test_known_names_shapes_and_writable(checkpoints_dir):
    ours = tfbundle.read_bundle(_prefix(checkpoints_dir, "DM21mu"))
    base = "hub_wrapper/local_functional_v2/"
    assert ours[base + "SquashUnprocessedData/linear/w"].shape == (11, 256)
    assert ours[base + "MLP/ResidualBlock_5/layer_norm/gamma"].shape == (256,)
    assert ours[base + "OutputLayer/linear/w"].shape == (256, 3)
    assert ours[base + "OutputLayer/linear/b"].shape == (3,)
    assert all(a.flags.writeable and a.dtype.isnative for a in ours.values())


# ------------------------------------------------------------------ CRC-32C
@pytest.mark.parametrize("data, crc", [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_crc32c_known_values(data, crc):
    assert tfbundle.crc32c(data) == crc


@pytest.mark.parametrize("n", [1 << 16, (1 << 16) + 1, 70_001, 1_606_668])
def test_vectorised_crc32c_equals_bytewise_loop(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert tfbundle.crc32c(data) == tfbundle._crc32c_small(data)


def test_masked_crc32c_matches_leveldb_definition():
    crc = tfbundle.crc32c(b"foo")
    assert tfbundle.masked_crc32c(b"foo") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    assert tfbundle.masked_crc32c(b"foo") != crc


# ------------------------------------------------------ protobuf and Snappy
def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 2000), st.integers(0, 2**64 - 1) | st.binary(max_size=40)),
                max_size=8))
def test_protobuf_decoder_round_trip(fields):
    wire = b""
    for number, value in fields:
        if isinstance(value, int):
            wire += _encode_varint(number << 3) + _encode_varint(value)
        else:
            wire += _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value
    assert tfbundle._fields(wire) == [(n, v) for n, v in fields]


def test_protobuf_fixed_width_and_errors():
    assert tfbundle._fields(b"\x35\x01\x02\x03\x04") == [(6, 0x04030201)]
    assert tfbundle._fields(b"\x09" + bytes(range(8))) == [(1, 0x0706050403020100)]
    for bad in (b"\x08", b"\x08\xff", b"\x12\x05ab", b"\x0b", b"\x35\x01"):
        with pytest.raises(tfbundle._Malformed):
            tfbundle._fields(bad)


def test_snappy_literals_and_overlapping_copies():
    # "abcd", copy(offset 4, length 8, 1-byte form), copy(offset 2, length 3, 2-byte form)
    stream = bytes([15, 3 << 2]) + b"abcd" + bytes([(4 << 2) | 1, 4]) + bytes([(2 << 2) | 2, 2, 0])
    assert tfbundle._snappy_decompress(stream) == b"abcdabcdabcdcdc"
    with pytest.raises(tfbundle._Malformed):
        tfbundle._snappy_decompress(bytes([9, 0]) + b"a" + bytes([(4 << 2) | 1, 5]))  # offset > output
    with pytest.raises(tfbundle._Malformed):
        tfbundle._snappy_decompress(bytes([9, 3 << 2]) + b"abcd")  # length mismatch


# ------------------------------------------------------------ bad input
def test_truncated_index_raises(bundle_copy):
    index = bundle_copy.with_name("variables.index")
    index.write_bytes(index.read_bytes()[:300])
    with pytest.raises(WeightsError, match="variables.index"):
        tfbundle.read_bundle(bundle_copy)


def test_empty_index_and_bad_magic_raise(bundle_copy):
    index = bundle_copy.with_name("variables.index")
    data = index.read_bytes()
    index.write_bytes(data[:-1] + b"\x00")
    with pytest.raises(WeightsError, match="magic"):
        tfbundle.read_bundle(bundle_copy)
    index.write_bytes(b"")
    with pytest.raises(WeightsError, match="variables.index"):
        tfbundle.read_bundle(bundle_copy)


def test_flipped_byte_in_index_block_raises(bundle_copy):
    index = bundle_copy.with_name("variables.index")
    data = bytearray(index.read_bytes())
    data[40] ^= 0x01  # inside the compressed data block
    index.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="variables.index.*checksum mismatch"):
        tfbundle.read_bundle(bundle_copy)


def test_corrupted_tensor_bytes_fail_their_crc(bundle_copy):
    data_file = bundle_copy.with_name(DATA)
    data = bytearray(data_file.read_bytes())
    data[500_000] ^= 0x10
    data_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=f"{DATA}.*CRC-32C mismatch"):
        tfbundle.read_bundle(bundle_copy)


def test_short_or_missing_data_file_raises(bundle_copy):
    data_file = bundle_copy.with_name(DATA)
    data_file.write_bytes(data_file.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="do not fit"):
        tfbundle.read_bundle(bundle_copy)
    data_file.unlink()
    with pytest.raises(WeightsError, match=DATA):
        tfbundle.read_bundle(bundle_copy)


def test_missing_index_raises(tmp_path):
    with pytest.raises(WeightsError, match="variables.index"):
        tfbundle.read_bundle(tmp_path / "variables")
