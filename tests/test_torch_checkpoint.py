"""The restricted reader against files written by the real `torch.save`."""

import collections
import io
import os
import pickle
import re
import tracemalloc
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from lipsync_jax import torch_checkpoint
from lipsync_jax.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError

FORMATS = {"zip": True, "legacy": False}


def _save(obj, path, fmt):
  torch.save(obj, path, _use_new_zipfile_serialization=FORMATS[fmt])
  return path


def _to_numpy(tensor):
  if tensor.dtype == torch.bfloat16:
    return tensor.float().numpy().astype(ml_dtypes.bfloat16)
  return tensor.detach().numpy()


def _assert_same(array, tensor):
  expected = _to_numpy(tensor)
  assert array.dtype == expected.dtype
  assert array.shape == expected.shape
  assert array.flags.c_contiguous
  np.testing.assert_array_equal(array, expected)


def _mixed_state_dict():
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(6, 8, generator=gen)
  shared = torch.arange(40, dtype=torch.float32)
  return collections.OrderedDict([
      ("conv.weight", torch.nn.Parameter(torch.randn(4, 3, 3, 3, generator=gen))),
      ("half", torch.randn(5, 2, generator=gen).half()),
      ("bf16", torch.randn(3, 7, generator=gen).bfloat16()),
      ("long", torch.randint(-2**40, 2**40, (9,), generator=gen)),
      ("mask", torch.rand(4, 4, generator=gen) > 0.5),
      ("double", torch.randn(2, 2, generator=gen).double()),
      ("scalar", torch.tensor(3.5)),
      ("empty", torch.zeros(0, 3)),
      ("transposed", base.t()),                      # non-contiguous view
      ("strided", base[1::2, ::3]),                  # offset + strides
      ("shared_a", shared[5:15].view(2, 5)),         # one storage, two offsets
      ("shared_b", shared[20:32].view(3, 4).t()),
  ])


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_dtypes_views_and_shared_storage(tmp_path, fmt):
  state = _mixed_state_dict()
  path = _save(state, tmp_path / "model.pth", fmt)
  loaded = torch_checkpoint.read_state_dict(path)
  assert list(loaded) == list(state)
  for key, tensor in state.items():
    _assert_same(loaded[key], tensor)
  loaded["shared_a"][0, 0] = -1.0  # Independent copies, not views of one buffer.
  assert loaded["shared_b"].min() >= 20.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_unwraps_training_checkpoint_and_strips_module_prefix(tmp_path, fmt):
  model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
  model(torch.randn(2, 3, 8, 8)).sum().backward()
  optimizer.step()
  state = {"module." + k: v for k, v in model.state_dict().items()}
  checkpoint = {"state_dict": state, "optimizer": optimizer.state_dict(),
                "global_step": 7, "global_epoch": 1, "notes": ["a", (1, 2.0)]}
  path = _save(checkpoint, tmp_path / "ckpt.pth", fmt)
  loaded = torch_checkpoint.read_state_dict(path)
  assert sorted(loaded) == sorted(model.state_dict())
  for key, tensor in model.state_dict().items():
    _assert_same(loaded[key], tensor)
  everything = torch_checkpoint.read_checkpoint(path)
  assert everything["global_step"] == 7 and everything["notes"] == ["a", (1, 2.0)]
  adam_state = everything["optimizer"]["state"][0]
  _assert_same(adam_state["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
  assert everything["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_reads_big_endian_zip_records(tmp_path):
  state = {"w": torch.randn(3, 5), "c": torch.randn(4, dtype=torch.complex64),
           "b": torch.randn(6).bfloat16()}
  little = _save(state, tmp_path / "little.pth", "zip")
  big = tmp_path / "big.pth"
  dtypes = {"0": ">f4", "1": ">f4", "2": ">u2"}  # Byte-swap components, not complex pairs.
  with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
    for name in src.namelist():
      data = src.read(name)
      if name.endswith("/byteorder"):
        data = b"big"
      elif "/data/" in name:
        little_dtype = "<" + dtypes[name.rsplit("/", 1)[1]][1:]
        data = np.frombuffer(data, little_dtype).astype(dtypes[name.rsplit("/", 1)[1]]).tobytes()
      dst.writestr(name, data)
  loaded = torch_checkpoint.read_state_dict(big)
  for key, tensor in state.items():
    _assert_same(loaded[key], tensor)


class _Payload:
  """Unpickling this would create the marker file (os.system via __reduce__)."""

  def __init__(self, marker):
    self.marker = str(marker)

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


class _BuiltinsPayload(_Payload):

  def __reduce__(self):
    return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("payload_type, forbidden", [(_Payload, "system"),
                                                     (_BuiltinsPayload, r"builtin\w*\.eval")])
def test_refuses_malicious_pickle_without_running_it(tmp_path, fmt, payload_type, forbidden):
  marker = tmp_path / "pwned"
  checkpoint = {"state_dict": {"w": torch.ones(2)}, "extra": payload_type(marker)}
  path = _save(checkpoint, tmp_path / "evil.pth", fmt)
  assert not marker.exists()
  with pytest.raises(UnsafeCheckpointError, match=forbidden) as info:
    torch_checkpoint.read_state_dict(path)
  assert str(path) in str(info.value)
  assert not marker.exists()
  pickle.loads(pickle.dumps(payload_type(marker)))  # The payload is live.
  assert marker.exists()


def test_refuses_forbidden_global_in_plain_legacy_pickle(tmp_path):
  path = tmp_path / "plain.pth"
  with open(path, "wb") as f:
    pickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    pickle.dump(1001, f, protocol=2)
    pickle.dump({}, f, protocol=2)
    pickle.dump({"w": collections.Counter("ab")}, f, protocol=2)
  with pytest.raises(UnsafeCheckpointError, match="collections.Counter"):
    torch_checkpoint.read_state_dict(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file_is_a_format_error(tmp_path, fmt):
  path = _save({"w": torch.randn(64, 64)}, tmp_path / "full.pth", fmt)
  data = path.read_bytes()
  for cut in (len(data) // 3, len(data) - 100):
    truncated = tmp_path / f"cut{cut}.pth"
    truncated.write_bytes(data[:cut])
    with pytest.raises(CheckpointFormatError, match="cut"):
      torch_checkpoint.read_state_dict(truncated)


def test_not_a_checkpoint_is_a_format_error(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("not a checkpoint\n")
  with pytest.raises(CheckpointFormatError, match="notes.txt"):
    torch_checkpoint.read_state_dict(text)
  bare_list = _save([torch.ones(1)], tmp_path / "list.pth", "zip")
  with pytest.raises(CheckpointFormatError, match="not a state dict"):
    torch_checkpoint.read_state_dict(bare_list)


def test_out_of_bounds_stride_is_refused(tmp_path):
  """A hand-edited size must not read past its storage (as_strided is unchecked)."""
  path = _save({"w": torch.arange(4.0)}, tmp_path / "w.pth", "zip")
  edited = tmp_path / "edited.pth"
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(edited, "w") as dst:
    for name in src.namelist():
      data = src.read(name)
      if name.endswith("data.pkl"):
        # size (4,) -> (100,): K\x04\x85 is BININT1 4, TUPLE1 in the pickle.
        assert data.count(b"K\x04\x85") == 1
        data = data.replace(b"K\x04\x85", b"Kd\x85")
      dst.writestr(name, data)
  with pytest.raises(CheckpointFormatError, match="storage of 4"):
    torch_checkpoint.read_state_dict(edited)


class _Ref:
  """Stands for a storage (view) or tensor while hand-writing a legacy file."""

  def __init__(self, **fields):
    self.__dict__.update(fields)


class _LegacyPickler(pickle.Pickler):
  """Writes torch's legacy object pickle, including the storage views torch <= 1.x made."""

  def persistent_id(self, obj):
    if isinstance(obj, _Ref) and hasattr(obj, "root_key"):
      return ("storage", torch.FloatStorage, obj.root_key, "cpu", obj.root_numel, obj.view)
    return None

  def reducer_override(self, obj):
    if isinstance(obj, _Ref) and hasattr(obj, "storage"):
      return (torch._utils._rebuild_tensor_v2,  # pylint: disable=protected-access
              (obj.storage, obj.offset, obj.size, obj.stride, False, collections.OrderedDict()))
    return NotImplemented


class _ZipPickler(_LegacyPickler):
  """Writes the zip format's `data.pkl`: storage ids without view metadata."""

  def persistent_id(self, obj):
    if isinstance(obj, _Ref) and hasattr(obj, "root_key"):
      return ("storage", torch.FloatStorage, obj.root_key, "cpu", obj.root_numel)
    return None


def _write_legacy(path, obj, key, root):
  """A legacy-format file of `obj` whose storage `key` holds the float32 array `root`."""
  with open(path, "wb") as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001,
                                                   "little_endian": True}):
      pickle.dump(header, f, protocol=2)
    _LegacyPickler(f, protocol=2).dump(obj)
    pickle.dump([key], f, protocol=2)
    f.write(root.size.to_bytes(8, "little") + root.tobytes())
  return path


def _write_zip(path, obj, key, root, compress_type=zipfile.ZIP_STORED):
  """A zip-format file of `obj` whose storage `key` holds the float32 array `root`.

  The records besides data.pkl and the storage come from a real `torch.save`.
  """
  template = _save({}, path.with_name("template.pth"), "zip")
  data_pkl = io.BytesIO()
  _ZipPickler(data_pkl, protocol=2).dump(obj)
  with zipfile.ZipFile(template) as src, zipfile.ZipFile(path, "w") as dst:
    prefix = src.namelist()[0].split("/")[0]
    for name in src.namelist():
      if not name.endswith("/data.pkl"):
        dst.writestr(name, src.read(name))
    dst.writestr(f"{prefix}/data.pkl", data_pkl.getvalue())
    dst.writestr(f"{prefix}/data/{key}", root.tobytes(), compress_type=compress_type)
  return path


def _write_views(path, fmt, root, views, **zip_options):
  """Hand-writes a checkpoint of tensors viewing one float32 storage `root`.

  views: name -> (offset, size, stride) of a tensor, or the name of another entry
    to save that same tensor object again.
  """
  storage = _Ref(root_key="0", root_numel=root.size, view=None)
  state = {}
  for name, view in views.items():
    state[name] = (state[view] if isinstance(view, str) else
                   _Ref(storage=storage, offset=view[0], size=view[1], stride=view[2]))
  if fmt == "legacy":
    return _write_legacy(path, state, "0", root)
  return _write_zip(path, state, "0", root, **zip_options)


def _refusal(path, match):
  """Asserts that reading `path` is refused with one line naming it; returns the line."""
  with pytest.raises(CheckpointFormatError, match=match) as info:
    torch_checkpoint.read_state_dict(path)
  message = str(info.value)
  assert message.startswith(f"{path}: ") and "\n" not in message
  return message


def _declare_size(path, member_suffix, size):
  """Rewrites the uncompressed size a zip's central directory declares for a member."""
  data = bytearray(path.read_bytes())
  start = data.find(b"PK\x01\x02")
  while start >= 0:
    name_length = int.from_bytes(data[start + 28:start + 30], "little")
    if data[start + 46:start + 46 + name_length].decode().endswith(member_suffix):
      data[start + 24:start + 28] = size.to_bytes(4, "little")
      path.write_bytes(bytes(data))
      return
    start = data.find(b"PK\x01\x02", start + 4)
  raise AssertionError(f"no member ending in {member_suffix}")


def test_legacy_storage_views_match_torch_load(tmp_path):
  """Storage views (view_metadata = (key, offset, numel)) as old torch versions wrote them."""
  root = np.arange(30, dtype=np.float32)
  whole = _Ref(root_key="7", root_numel=30, view=None)
  view = _Ref(root_key="7", root_numel=30, view=("8", 10, 12))  # Elements 10..21.
  state = {"whole": _Ref(storage=whole, offset=2, size=(2, 3), stride=(1, 2)),
           "view": _Ref(storage=view, offset=1, size=(3, 3), stride=(3, 1))}
  path = _write_legacy(tmp_path / "views.pth", state, "7", root)
  expected = torch.load(path, weights_only=True)
  loaded = torch_checkpoint.read_state_dict(path)
  for key, tensor in expected.items():
    _assert_same(loaded[key], tensor)
  np.testing.assert_array_equal(loaded["view"][0], [11, 12, 13])


@pytest.mark.parametrize("fmt", FORMATS)
def test_hand_written_views_of_one_storage_match_torch_load(tmp_path, fmt):
  """Views that end exactly at the storage's end, overlap or broadcast all load."""
  root = np.arange(30, dtype=np.float32)
  views = {
      "transposed": (0, (5, 6), (1, 5)),      # Reads element 29, the last.
      "tail": (20, (2, 5), (5, 1)),           # Offset, ends at element 29.
      "overlapping_rows": (3, (4, 4), (2, 1)),
      "broadcast_rows": (4, (3, 10), (0, 1)),  # Stride 0, no more elements than the storage.
      "scalar": (29, (), ()),
      "empty": (30, (0, 10**12), (10**12, 1)),
      "tied": "transposed",                   # One tensor saved twice.
  }
  path = _write_views(tmp_path / "views.pth", fmt, root, views)
  expected = torch.load(path, weights_only=True)
  loaded = torch_checkpoint.read_state_dict(path)
  assert list(loaded) == list(views)
  for key, tensor in expected.items():
    _assert_same(loaded[key], tensor)
  assert loaded["tied"] is not loaded["transposed"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_stride_tensor_larger_than_its_storage_is_refused(tmp_path, fmt):
  """A (10**6, 10**6) view of one element would be a 4 TB copy from a tiny file."""
  path = _write_views(tmp_path / "bomb.pth", fmt, np.ones(1, np.float32),
                      {"w": (0, (10**6, 10**6), (0, 0))})
  _refusal(path, r"refused, tensor \['w'\] of shape \(1000000, 1000000\), stride \(0, 0\)"
           r", offset 0 has 1000000000000 elements, more than its storage of 1$")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("offset, size, stride", [(0, (3, 3), (4, 1)),  # Last row too far.
                                                  (1, (10,), (1,)),     # Offset one too far.
                                                  (0, (2, 2), (9, 1))])
def test_tensor_reaching_past_its_storage_is_refused(tmp_path, fmt, offset, size, stride):
  """No more elements than the storage, but the strides or offset run past its end."""
  path = _write_views(tmp_path / "past.pth", fmt, np.arange(10, dtype=np.float32),
                      {"w": (offset, size, stride)})
  _refusal(path, r"refused, tensor \['w'\] .* reads element 10 of a storage of 10$")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("offset, size, stride", [(0, (2,), (-1,)), (2, (-1,), (1,)),
                                                  (-1, (2,), (1,))])
def test_negative_size_stride_or_offset_is_refused(tmp_path, fmt, offset, size, stride):
  path = _write_views(tmp_path / "negative.pth", fmt, np.arange(10, dtype=np.float32),
                      {"w": (offset, size, stride)})
  _refusal(path, re.escape("refused, a tensor has a negative offset, size or stride "
                           f"(shape {size}, stride {stride}, offset {offset})") + "$")


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_tensor_referenced_many_times_is_refused(tmp_path, fmt):
  """Pickle memo references copy a 256 kB tensor 16 times: past 4x the storage + 1 MiB."""
  path = _save({"w": [torch.zeros(1 << 16)] * 16}, tmp_path / "refs.pth", fmt)
  _refusal(path, r"refused, tensor \['w'\]\[8\] .* past 4x the storage bytes in the file$")


def test_zip_member_declaring_more_than_the_file_is_refused(tmp_path):
  """A stored member cannot be bigger than the file that holds it."""
  path = _write_views(tmp_path / "declared.pth", "zip", np.arange(4, dtype=np.float32),
                      {"w": (0, (4,), (1,))})
  _declare_size(path, "/data/0", 0xfffffff0)
  _refusal(path, r"refused, zip member '.*/data/0' declares 4294967280 bytes, more than "
           rf"the whole file's {path.stat().st_size} \(it is stored\)$")


def test_deflated_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
  """16 MiB of zeros deflate to ~16 kB, past 64x the file size (and the 1 MiB floor)."""
  path = _write_views(tmp_path / "bomb.pth", "zip", np.zeros(1 << 22, np.float32),
                      {"w": (0, (1 << 22,), (1,))}, compress_type=zipfile.ZIP_DEFLATED)
  assert path.stat().st_size < 32 << 10
  tracemalloc.start()
  try:
    _refusal(path, r"refused, zip member '.*/data/0' declares 16777216 bytes, more than the "
             r"\d+ bytes left of the \d+ that all members may expand to \(64x the file size")
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 1 << 20


@pytest.mark.parametrize("fmt", FORMATS)
def test_object_pickle_longer_than_the_limit_is_refused(tmp_path, fmt, monkeypatch):
  path = _save({f"w{i}": torch.ones(1) for i in range(8)}, tmp_path / "long.pth", fmt)
  assert torch_checkpoint.read_state_dict(path)
  monkeypatch.setattr(torch_checkpoint, "_MAX_PICKLE_BYTES", 300)
  _refusal(path, r"refused, (zip member '.*/data.pkl' declares \d+ bytes, more than the 300 "
           r"allowed for the object pickle|the object pickle at byte \d+ is longer than the "
           r"300 bytes allowed)$")
