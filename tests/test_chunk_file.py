"""Reading a chunk straight from its file (the loader's local fast path) gives what zarr gives, or steps aside."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from activation_store.errors import ActstoreError
from activation_store.store import Store, layout
from activation_store.store.chunk_file import direct_reader
from test_loader import synthetic_run


@pytest.fixture()
def hidden(tmp_path):
    url = synthetic_run(tmp_path / "run.zarr", n_layers=2, n_tokens=2_000, d_model=16, chunk=500)
    return Store.open(url).root[layout.run_path("synthetic", "big")][layout.HIDDEN]


def test_every_chunk_equals_zarrs_read(hidden):
    """(Edge chunks, stored whole, are checked through the loader: its tiny run's last chunk is one.)"""
    read = direct_reader(hidden)
    assert read is not None
    block = np.empty(hidden.chunks[1:], dtype=hidden.dtype)
    for layer in range(hidden.shape[0]):
        for chunk in range(hidden.shape[1] // 500):
            assert read((layer, chunk, 0), block)
            np.testing.assert_array_equal(block, hidden[layer, chunk * 500:(chunk + 1) * 500])


def test_a_flipped_bit_is_a_one_line_error(hidden):
    path = hidden.store.root / hidden.path / hidden.metadata.encode_chunk_key((1, 2, 0))
    data = bytearray(path.read_bytes())
    data[100] ^= 0x04
    path.write_bytes(bytes(data))
    with pytest.raises(ActstoreError, match="chunk c/1/2/0 of .* is corrupt") as caught:
        direct_reader(hidden)((1, 2, 0), np.empty(hidden.chunks[1:], dtype=hidden.dtype))
    assert "\n" not in str(caught.value)


def test_a_missing_chunk_file_is_left_to_zarr(hidden):
    path = hidden.store.root / hidden.path / hidden.metadata.encode_chunk_key((0, 1, 0))
    path.unlink()
    block = np.full(hidden.chunks[1:], 7, dtype=hidden.dtype)
    assert not direct_reader(hidden)((0, 1, 0), block)
    assert (block == 7).all()                                         # nothing was read


def test_no_direct_reader_off_local_disk_or_for_shards(tmp_path):
    memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(2, 10), chunks=(1, 5), dtype="uint16",
                               compressors=[zarr.codecs.Crc32cCodec()])
    sharded = zarr.create_array(zarr.storage.LocalStore(tmp_path / "s.zarr"), shape=(2, 10), chunks=(1, 5),
                                shards=(2, 10), dtype="uint16", compressors=[zarr.codecs.Crc32cCodec()])
    squeezed = zarr.create_array(zarr.storage.LocalStore(tmp_path / "z.zarr"), shape=(2, 10), chunks=(1, 5),
                                 dtype="uint16", compressors=[zarr.codecs.ZstdCodec()])
    assert direct_reader(memory) is None and direct_reader(sharded) is None and direct_reader(squeezed) is None
