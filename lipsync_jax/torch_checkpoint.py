"""Restricted, weights-only reader of PyTorch checkpoint files, without torch.

Reads both formats that `torch.save` writes:

* the zip format (torch >= 1.6): `<prefix>/data.pkl` (the object pickle), one
  raw record `<prefix>/data/<key>` per storage, and `<prefix>/byteorder`;
* the legacy format (`_use_new_zipfile_serialization=False`, torch < 1.6): a
  magic-number pickle, the protocol version, a system-info pickle, the object
  pickle, the pickled list of storage keys, then per storage an 8-byte
  little-endian element count followed by the raw little-endian bytes.

Safety: the object pickle is read by an unpickler whose `find_class` admits only
the tensor-rebuild functions (served by the numpy implementations below, not
torch's), the storage type names, dtype names and `collections.OrderedDict`.
Any other global raises `UnsafeCheckpointError` before anything is called, so no
code in the file runs. Storage sizes, offsets and strides are bounds-checked
before any strided view is taken.

Limits: no file makes the reader allocate more than a fixed multiple of its size.

* A tensor may not have more elements than its storage, nor reach past it
  (offset + sum((size - 1) * stride) + 1 elements at most), nor have negative
  sizes, strides or offset; so a zero-stride (expanded) tensor larger than its
  storage is refused, although torch itself could write one.
* All tensors (and bare storages) copied out add up to at most
  `_MAX_COPY_FACTOR` times the storage bytes read, plus `_LIMIT_FLOOR_BYTES`:
  a pickle that references one tensor a million times is refused.
* Zip members must be stored or deflated; a stored one may not declare more
  bytes than the whole file, and all members read together may not expand past
  `_ZIP_EXPANSION_LIMIT` times the file's size (at least `_LIMIT_FLOOR_BYTES`).
  A member's declared size is checked before reading, and the read itself is
  capped at the limit, whatever the member declares.
* The object pickle (zip `data.pkl`, or the legacy format's pickles) may be at
  most `_MAX_PICKLE_BYTES` long.

Whatever breaks a limit raises `CheckpointFormatError` ("<path>: refused, ...").

Tensors come back as numpy arrays (bfloat16 and float8 via `ml_dtypes`), each an
independent contiguous copy, also when several tensors shared one storage.
"""

import collections
import io
import math
import os
import pickle
import reprlib
import zipfile
from typing import Any, BinaryIO, Callable

import ml_dtypes
import numpy as np

from lipsync_jax.errors import CheckpointError

_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

# All zip members read may expand to this many times the file size together:
# torch stores members uncompressed, so only a re-compressed file comes near it.
_ZIP_EXPANSION_LIMIT = 64
# The tensors copied out may add up to this many times the storage bytes read
# (views of one storage may overlap, and a state dict may hold a tensor twice).
_MAX_COPY_FACTOR = 4
# Floor of both limits above, in bytes, so that tiny files are not held to tiny limits.
_LIMIT_FLOOR_BYTES = 1 << 20
# The longest object pickle read, in bytes (a state dict needs ~200 per tensor).
_MAX_PICKLE_BYTES = 64 << 20
# Members compressed otherwise (bzip2, lzma) inflate without bound per read.
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

_DTYPES_BY_NAME = {
    "float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "int64": np.dtype(np.int64), "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16), "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8), "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32), "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_), "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}
# Aliases torch also accepts as dtype attribute names.
_DTYPES_BY_NAME.update(double=_DTYPES_BY_NAME["float64"], float=_DTYPES_BY_NAME["float32"],
                       half=_DTYPES_BY_NAME["float16"], long=_DTYPES_BY_NAME["int64"],
                       int=_DTYPES_BY_NAME["int32"], short=_DTYPES_BY_NAME["int16"],
                       cfloat=_DTYPES_BY_NAME["complex64"],
                       cdouble=_DTYPES_BY_NAME["complex128"])

_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}


class UnsafeCheckpointError(CheckpointError):
  """The file's pickle references a global outside the admitted tensor set."""


class CheckpointFormatError(CheckpointError):
  """The file is truncated, corrupt, not a PyTorch checkpoint, or breaks a limit."""


class _Refusal(Exception):
  """The file breaks one of the reader's limits; the message is one line, no path.

  `read_checkpoint` turns it into `CheckpointFormatError("<path>: refused, ...")`.
  """


class _Inert:
  """Base of the unpickler's own objects: pickle's BUILD opcode cannot alter them."""
  __slots__ = ()

  def __setstate__(self, state):
    raise pickle.UnpicklingError(f"{type(self).__name__} takes no state")


class _StorageType(_Inert):
  """What `find_class` returns for `torch.FloatStorage` and friends."""
  __slots__ = ("dtype",)

  def __init__(self, dtype: np.dtype):
    self.dtype = dtype


class _DType(_Inert):
  """What `find_class` returns for `torch.float32` and friends."""
  __slots__ = ("dtype",)

  def __init__(self, dtype: np.dtype):
    self.dtype = dtype


class _Storage(_Inert):
  """A storage: `numel` elements of `dtype`; `data` (1-D, that dtype) once read.

  A legacy storage view points at its root storage with an element offset.
  """
  __slots__ = ("dtype", "numel", "data", "root", "offset")

  def __init__(self, dtype: np.dtype, numel: int, root: "_Storage | None" = None,
               offset: int = 0):
    self.dtype, self.numel, self.root, self.offset = dtype, numel, root, offset
    self.data = None

  def elements(self) -> np.ndarray:
    if self.root is not None:
      return self.root.elements()[self.offset:self.offset + self.numel]
    if self.data is None:
      raise pickle.UnpicklingError("a storage's data is missing from the file")
    return self.data


class _PendingTensor(_Inert):
  """A tensor to build once all storages are read (legacy files store data last).

  Raises `_Refusal` for a negative offset, size or stride, and (in `to_numpy`)
  for a tensor with more elements than its storage or reaching past its end.
  """
  __slots__ = ("storage", "offset", "shape", "stride", "dtype")

  def __init__(self, storage, offset, shape, stride, dtype=None):
    if not isinstance(storage, _Storage):
      raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if dtype is not None and not isinstance(dtype, _DType):
      raise pickle.UnpicklingError("tensor rebuilt with something that is not a dtype")
    self.storage, self.dtype = storage, storage.dtype if dtype is None else dtype.dtype
    self.offset, self.shape, self.stride = offset, tuple(shape), tuple(stride)
    values = (self.offset,) + self.shape + self.stride
    if not all(isinstance(v, int) for v in values):
      raise pickle.UnpicklingError("tensor offset, size and stride must be ints")
    if min(values) < 0:
      raise _Refusal(f"a tensor has a negative offset, size or stride ({self._layout()})")
    if len(self.shape) != len(self.stride):
      raise pickle.UnpicklingError("tensor size and stride differ in length")

  def _layout(self) -> str:
    return (f"shape {reprlib.repr(self.shape)}, stride {reprlib.repr(self.stride)}, "
            f"offset {self.offset}")

  def to_numpy(self, max_bytes: int, where: tuple = ()) -> np.ndarray:
    """Bounds-checked strided read of the storage, returned as a contiguous copy.

    Args:
      max_bytes: the most bytes the copy may take.
      where: the keys and indices leading to the tensor in the checkpoint, for
        error messages.

    Raises:
      _Refusal: the tensor has more elements than its storage, reaches past
        its end, or would take more than `max_bytes`.
      pickle.UnpicklingError: a dtype that does not fit the storage's bytes.
    """
    elements = self.storage.elements()
    if self.dtype != elements.dtype:  # v3 rebuilds view untyped (byte) storages.
      elements = elements.view(np.uint8)
      if elements.size % self.dtype.itemsize:
        raise pickle.UnpicklingError("storage bytes do not divide into the tensor dtype")
      elements = elements.view(self.dtype)
    numel = math.prod(self.shape)
    if numel == 0:
      return np.zeros(self.shape, self.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
    if numel > elements.size:
      problem = f"has {numel} elements, more than its storage of {elements.size}"
    elif last >= elements.size:
      problem = f"reads element {last} of a storage of {elements.size}"
    elif numel * self.dtype.itemsize > max_bytes:
      problem = (f"takes the tensors copied out past {_MAX_COPY_FACTOR}x the storage "
                 "bytes in the file")
    else:
      problem = None
    if problem:
      raise _Refusal(f"tensor {_where(where)}of {self._layout()} {problem}")
    view = np.lib.stride_tricks.as_strided(
        elements[self.offset:], shape=self.shape,
        strides=[s * self.dtype.itemsize for s in self.stride], writeable=False)
    return np.array(view, copy=True, order="C")


def _rebuild_tensor(storage, storage_offset, size, stride):
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad,
                       backward_hooks, dtype, metadata=None):
  del requires_grad, backward_hooks, metadata
  return _PendingTensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
  del requires_grad, backward_hooks, state
  if not isinstance(data, _PendingTensor):
    raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
  return data


_ADMITTED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.storage", "UntypedStorage"): _StorageType(np.dtype(np.uint8)),
}
_ADMITTED_GLOBALS.update({("torch", name): _StorageType(_DTYPES_BY_NAME[dtype_name])
                          for name, dtype_name in _STORAGE_DTYPES.items()})
_ADMITTED_GLOBALS.update({("torch", name): _DType(dtype)
                          for name, dtype in _DTYPES_BY_NAME.items()})


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler admitting only `_ADMITTED_GLOBALS`; storages via `load_storage`."""

  def __init__(self, file: BinaryIO, path: str,
               load_storage: Callable[[tuple], _Storage] | None = None):
    super().__init__(file, encoding="utf-8")
    self._path, self._load_storage = path, load_storage

  def find_class(self, module: str, name: str) -> Any:
    admitted = _ADMITTED_GLOBALS.get((module, name))
    if admitted is None:
      raise UnsafeCheckpointError(
          f"{self._path}: refused, the pickle references the global '{module}.{name}' "
          "(only tensor data and plain containers are admitted); nothing was run")
    return admitted

  def persistent_load(self, pid: Any) -> _Storage:
    if self._load_storage is None:
      raise pickle.UnpicklingError("unexpected persistent id")
    if not isinstance(pid, tuple) or not pid:
      raise pickle.UnpicklingError("persistent id is not a tuple")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename != "storage":
      raise pickle.UnpicklingError(f"unsupported persistent id type {typename!r}")
    if not isinstance(pid[1], _StorageType):
      raise pickle.UnpicklingError("persistent id without a storage type")
    return self._load_storage(pid[1:])


def _key(value: Any) -> str:
  if isinstance(value, bytes):
    value = value.decode("ascii")
  if not isinstance(value, str):
    raise pickle.UnpicklingError("storage key is not a string")
  return value


def _check_numel(value: Any) -> int:
  if not isinstance(value, int) or value < 0:
    raise pickle.UnpicklingError("storage size is not an int >= 0")
  return value


def _from_bytes(buffer: bytes, dtype: np.dtype, big_endian: bool) -> np.ndarray:
  """1-D array of `dtype` from raw bytes stored in the given byte order."""
  if not big_endian or dtype.itemsize == 1:
    return np.frombuffer(buffer, dtype=dtype)
  component = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
  swapped = np.frombuffer(buffer, dtype=f">u{component}").astype(f"<u{component}")
  return swapped.view(dtype)


class _Materializer:
  """Replaces pending tensors (and bare storages) in containers by numpy arrays.

  The copies may add up to `_MAX_COPY_FACTOR` times `storage_bytes` (the bytes
  of all storages read from the file) plus `_LIMIT_FLOOR_BYTES`, counting a
  tensor each time the pickle references it.
  """

  def __init__(self, storage_bytes: int):
    self._left = _MAX_COPY_FACTOR * storage_bytes + _LIMIT_FLOOR_BYTES

  def __call__(self, obj: Any, where: tuple = ()) -> Any:
    if isinstance(obj, _PendingTensor):
      array = obj.to_numpy(self._left, where)
    elif isinstance(obj, _Storage):
      elements = obj.elements()
      if elements.nbytes > self._left:
        raise _Refusal(f"storage {_where(where)}takes the tensors copied out past "
                       f"{_MAX_COPY_FACTOR}x the storage bytes in the file")
      array = np.array(elements, copy=True)
    elif isinstance(obj, dict):
      return {key: self(value, where + (key,)) for key, value in obj.items()}
    elif isinstance(obj, (list, tuple)):
      values = (self(value, where + (i,)) for i, value in enumerate(obj))
      return list(values) if isinstance(obj, list) else tuple(values)
    else:
      return obj
    self._left -= array.nbytes
    return array


def _where(keys: tuple) -> str:
  """E.g. "['state_dict']['w'] " for the keys ("state_dict", "w"); "" for none."""
  return "".join(f"[{reprlib.repr(key)}]" for key in keys) + (" " if keys else "")


def _storage_bytes(storages: dict[str, _Storage]) -> int:
  """Bytes of the root storages' data read from the file."""
  return sum(s.data.nbytes for s in storages.values() if s.data is not None)


class _ZipMembers:
  """Reads an archive's members in a bounded way.

  A member must be stored or deflated; a stored member may not declare more
  bytes than the file; all members read together may not expand past
  `_ZIP_EXPANSION_LIMIT` times the file size (at least `_LIMIT_FLOOR_BYTES`).
  """

  def __init__(self, archive: zipfile.ZipFile, file_size: int):
    self._archive, self._file_size = archive, file_size
    self._total = max(_ZIP_EXPANSION_LIMIT * file_size, _LIMIT_FLOOR_BYTES)
    self._left = self._total

  def read(self, name: str, max_bytes: int | None = None, what: str = "") -> bytes:
    """The bytes of member `name`, of at most `max_bytes` (described by `what`).

    Raises:
      _Refusal: the member declares or yields more bytes than a limit
        allows, or is compressed other than deflated.
    """
    info = self._archive.getinfo(name)
    if info.compress_type not in _ZIP_METHODS:
      raise _Refusal(f"zip member {name!r} uses compression method {info.compress_type}; "
                     "only stored and deflated members are read")
    limit, why = self._left, (
        f"the {self._left} bytes left of the {self._total} that all members may "
        f"expand to ({_ZIP_EXPANSION_LIMIT}x the file size, at least {_LIMIT_FLOOR_BYTES})")
    if info.compress_type == zipfile.ZIP_STORED and self._file_size < limit:
      limit, why = self._file_size, f"the whole file's {self._file_size} (it is stored)"
    if max_bytes is not None and max_bytes < limit:
      limit, why = max_bytes, f"the {max_bytes} allowed for {what}"
    if info.file_size > limit:
      raise _Refusal(f"zip member {name!r} declares {info.file_size} bytes, more than {why}")
    with self._archive.open(info) as member:
      data = member.read(limit + 1)  # Whatever it declared: more is refused.
    if len(data) > limit:
      raise _Refusal(f"zip member {name!r} holds more bytes than {why}")
    self._left -= len(data)
    return data


class _BoundedFile:
  """Read-only view of a binary file that hands out at most `limit` bytes.

  An unpickler reading it leaves the file just past the pickle (it peeks
  ahead, then reads only what it consumed).
  """

  def __init__(self, f: BinaryIO, limit: int, what: str):
    self._f, self._left = f, limit
    self._error = f"{what} is longer than the {limit} bytes allowed"

  def read(self, n: int = -1) -> bytes:
    if n is None or n < 0 or n > self._left:
      raise _Refusal(self._error)
    data = self._f.read(n)
    self._left -= len(data)
    return data

  def peek(self, n: int = 0) -> bytes:
    return self._f.peek(n)[:self._left]

  def readline(self, size: int = -1) -> bytes:
    line = self._f.readline(self._left + 1 if size < 0 else min(size, self._left + 1))
    if len(line) > self._left:
      raise _Refusal(self._error)
    self._left -= len(line)
    return line


def _read_zip(path: str) -> Any:
  with open(path, "rb") as f, zipfile.ZipFile(f) as archive:
    members = _ZipMembers(archive, os.fstat(f.fileno()).st_size)
    names = set(archive.namelist())
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise pickle.UnpicklingError("zip archive without exactly one '<prefix>/data.pkl'")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = (members.read(prefix + "byteorder", 16, "a byte order")
                 if prefix + "byteorder" in names else b"little")
    if byteorder not in (b"little", b"big"):
      raise pickle.UnpicklingError(f"unknown byte order {byteorder!r}")
    storages: dict[str, _Storage] = {}

    def load_storage(args: tuple) -> _Storage:
      if len(args) != 4:
        raise pickle.UnpicklingError("zip-format storage id needs 5 fields")
      storage_type, key, _, numel = args
      key, numel = _key(key), _check_numel(numel)
      if key not in storages:
        record = f"{prefix}data/{key}"
        if record not in names:
          raise pickle.UnpicklingError(f"storage record '{record}' is missing")
        nbytes = numel * storage_type.dtype.itemsize
        buffer = members.read(record)
        if len(buffer) < nbytes:
          raise pickle.UnpicklingError(f"storage record '{record}' is truncated")
        storage = _Storage(storage_type.dtype, numel)
        storage.data = _from_bytes(buffer[:nbytes], storage_type.dtype,
                                   byteorder == b"big")
        storages[key] = storage
      return storages[key]

    data_pickle = members.read(pickles[0], _MAX_PICKLE_BYTES, "the object pickle")
    obj = _RestrictedUnpickler(io.BytesIO(data_pickle), path, load_storage).load()
    return _Materializer(_storage_bytes(storages))(obj)


def _read_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    file_size = os.fstat(f.fileno()).st_size

    def unpickle(what: str, load_storage=None) -> Any:
      bounded = _BoundedFile(f, _MAX_PICKLE_BYTES, f"the {what} at byte {f.tell()}")
      return _RestrictedUnpickler(bounded, path, load_storage).load()

    if unpickle("magic number pickle") != _LEGACY_MAGIC_NUMBER:
      raise pickle.UnpicklingError("no PyTorch magic number")
    if unpickle("protocol version pickle") != _LEGACY_PROTOCOL_VERSION:
      raise pickle.UnpicklingError("unsupported legacy protocol version")
    unpickle("system info pickle")  # The data is always little-endian.
    storages: dict[str, _Storage] = {}

    def load_storage(args: tuple) -> _Storage:
      if len(args) != 5:
        raise pickle.UnpicklingError("legacy storage id needs 6 fields")
      storage_type, root_key, _, numel, view_metadata = args
      root_key, numel = _key(root_key), _check_numel(numel)
      root = storages.setdefault(root_key, _Storage(storage_type.dtype, numel))
      if root.dtype != storage_type.dtype or root.numel != numel:
        raise pickle.UnpicklingError(f"storage {root_key} declared twice, differently")
      if view_metadata is None:
        return root
      view_key, offset, view_size = view_metadata
      view_key, offset, view_size = _key(view_key), _check_numel(offset), _check_numel(view_size)
      if offset + view_size > numel:
        raise pickle.UnpicklingError(f"storage view {view_key} exceeds its root")
      return storages.setdefault(view_key, _Storage(root.dtype, view_size, root, offset))

    obj = unpickle("object pickle", load_storage)
    keys = unpickle("storage key pickle")
    if not isinstance(keys, list):
      raise pickle.UnpicklingError("storage key list is not a list")
    for key in keys:
      storage = storages.get(_key(key))
      if storage is None or storage.root is not None:
        raise pickle.UnpicklingError(f"storage key {key!r} was not declared")
      header = f.read(8)
      if len(header) != 8:
        raise pickle.UnpicklingError("file ends before a storage header")
      numel = int.from_bytes(header, "little", signed=True)
      if numel != storage.numel:
        raise pickle.UnpicklingError(f"storage {key} holds {numel} elements, "
                                     f"declared {storage.numel}")
      nbytes = numel * storage.dtype.itemsize
      if nbytes > file_size - f.tell():
        raise pickle.UnpicklingError(f"file ends inside storage {key}")
      storage.data = _from_bytes(f.read(nbytes), storage.dtype, big_endian=False)
  return _Materializer(_storage_bytes(storages))(obj)


def read_checkpoint(path: str | os.PathLike) -> Any:
  """The whole pickled object of a PyTorch checkpoint, tensors as numpy arrays.

  Dicts (also OrderedDicts, returned as plain dicts), lists, tuples and plain
  values come back as they were saved; every tensor is a contiguous copy.

  Raises:
    UnsafeCheckpointError: the pickle references any other global.
    CheckpointFormatError: truncated, corrupt or not a PyTorch checkpoint, or
      past one of the reader's limits (see the module docstring), all with a
      one-line message naming `path`.
  """
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      is_zip = f.read(4) == _ZIP_MAGIC
    return _read_zip(path) if is_zip else _read_legacy(path)
  except (UnsafeCheckpointError, FileNotFoundError, IsADirectoryError, PermissionError):
    raise
  except _Refusal as e:
    raise CheckpointFormatError(f"{path}: refused, {e}") from e
  except Exception as e:  # pylint: disable=broad-except
    # Whatever a corrupt pickle or archive throws (EOFError, BadZipFile, TypeError,
    # RecursionError, MemoryError, ...) means the same to a caller.
    raise CheckpointFormatError(
        f"{path}: not a readable PyTorch checkpoint "
        f"({type(e).__name__}: {e})") from e


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a checkpoint's state dict, keyed by name without `module.`.

  Accepts `{"state_dict": {...}, ...}` (other entries such as an optimizer state
  are read, then ignored) or a bare state dict; non-tensor entries are dropped.

  Raises:
    UnsafeCheckpointError, CheckpointFormatError: see `read_checkpoint`; the
      latter also when the file holds no dict of tensors.
  """
  obj = read_checkpoint(path)
  if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise CheckpointFormatError(
        f"{os.fspath(path)}: holds a {type(obj).__name__}, not a state dict")
  state_dict = {}
  for key, value in obj.items():
    if isinstance(key, str) and isinstance(value, np.ndarray):
      name = key.removeprefix("module.")
      if name in state_dict:
        raise CheckpointFormatError(f"{os.fspath(path)}: key '{name}' occurs twice "
                                    "once 'module.' prefixes are stripped")
      state_dict[name] = value
  if not state_dict:
    raise CheckpointFormatError(f"{os.fspath(path)}: the state dict holds no tensors")
  return state_dict
