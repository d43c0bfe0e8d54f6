"""Utterance records: schema, encoding, shard writer and random-access reader.

One record holds one utterance (one input video). A record is the serialised
bytes of a `tf.train.Example` protocol buffer, so tf.data users can parse it
directly with `tf.io.parse_single_example`; here it is encoded and decoded with
the `protobuf` runtime alone (the Example messages are declared below in a
private descriptor pool), so no TensorFlow is needed or imported.

Features of the Example (all lists are flat, row-major):

  key           kind        length   meaning
  clip_id       bytes_list  1        UTF-8 id, e.g. "5535415699068794046/00001"
  source_path   bytes_list  1        UTF-8 path of the input video
  fps           float_list  1        frame rate of `frames` (25 after resampling)
  crop_size     int64_list  1        S, the side of every face crop in pixels
  frames        bytes_list  T        JPEG of each RGB face crop, S x S
  boxes         int64_list  T * 4    crop box per frame: x1, y1, x2, y2 in pixels
                                     of the (resampled) source frame
  mel           float_list  80 * N   mel spectrogram, `lipsync_jax.audio`
                                     `melspectrogram` of the whole audio track
  mel_shape     int64_list  2        (80, N)

The Example is serialised deterministically (map entries in protobuf's
canonical order), so the same record always gives the same bytes. `fps` is a
float32 on the wire (25.0 is exact).

tf.data example: `tf.io.parse_single_example(x, {"mel": tf.io.VarLenFeature(
tf.float32), "frames": tf.io.VarLenFeature(tf.string), ...})`, then reshape
`mel` to `mel_shape` and `tf.io.decode_jpeg` each frame.

Decoded in Python (`decode_record`) a record is the dict
`{"clip_id": str, "source_path": str, "fps": float, "crop_size": int,
"frames": list[bytes], "boxes": int32 (T, 4), "mel": float32 (80, N)}`.

Shards: ArrayRecord files (`*.array_record`, written with `group_size:1` for
random access by Grain), optionally TFRecord files (`*.tfrecord`, the plain
TFRecord framing with masked CRC32C checksums, readable by
`tf.data.TFRecordDataset`) and the training layout of `lipsync_jax.frame_store`
(format "frame_store"; `write_frame_store` makes it from existing shards). Every
shard is written under a temporary name and renamed when complete, so a shard
that exists is whole.
"""

import io
import os
import pathlib
import struct
from typing import Any, Iterator, Sequence

from array_record.python import array_record_data_source
from array_record.python import array_record_module
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
import google_crc32c
import numpy as np
from PIL import Image

from lipsync_jax import errors
from lipsync_jax import frame_store

NUM_MELS = 80
ARRAY_RECORD_SUFFIX = ".array_record"
TFRECORD_SUFFIX = ".tfrecord"
ARRAY_RECORD_OPTIONS = "group_size:1"
DEFAULT_JPEG_QUALITY = 95


class RecordError(errors.LipsyncError, ValueError):
  """A record or shard that does not follow the schema."""


def _example_message_class():
  """The `tensorflow.Example` message class, declared in a private pool.

  Field numbers and types follow tensorflow/core/example/{example,feature}.proto,
  so the wire format is the one TensorFlow reads and writes.
  """
  fd = descriptor_pb2.FileDescriptorProto(
      name="lipsync_jax/tf_example.proto", package="tensorflow", syntax="proto3")
  label_repeated = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
  label_optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
  types = descriptor_pb2.FieldDescriptorProto
  for name, scalar in (("BytesList", types.TYPE_BYTES),
                       ("FloatList", types.TYPE_FLOAT),
                       ("Int64List", types.TYPE_INT64)):
    message = fd.message_type.add(name=name)
    message.field.add(name="value", number=1, label=label_repeated, type=scalar)
  feature = fd.message_type.add(name="Feature")
  feature.oneof_decl.add(name="kind")
  for number, (field_name, type_name) in enumerate(
      (("bytes_list", "BytesList"), ("float_list", "FloatList"),
       ("int64_list", "Int64List")), start=1):
    feature.field.add(name=field_name, number=number, label=label_optional,
                      type=types.TYPE_MESSAGE,
                      type_name=f".tensorflow.{type_name}", oneof_index=0)
  features = fd.message_type.add(name="Features")
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, label=label_optional,
                  type=types.TYPE_STRING)
  entry.field.add(name="value", number=2, label=label_optional,
                  type=types.TYPE_MESSAGE, type_name=".tensorflow.Feature")
  features.field.add(name="feature", number=1, label=label_repeated,
                     type=types.TYPE_MESSAGE,
                     type_name=".tensorflow.Features.FeatureEntry")
  example = fd.message_type.add(name="Example")
  example.field.add(name="features", number=1, label=label_optional,
                    type=types.TYPE_MESSAGE, type_name=".tensorflow.Features")
  pool = descriptor_pool.DescriptorPool()
  pool.Add(fd)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.Example"))


_Example = _example_message_class()


def encode_jpeg(crops: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY
                ) -> list[bytes]:
  """uint8 RGB crops (T, S, S, 3) -> one JPEG (bytes) per frame."""
  crops = np.asarray(crops)
  if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
    raise RecordError(f"crops must be uint8 (T, S, S, 3), got {crops.dtype} "
                      f"{crops.shape}")
  encoded = []
  for crop in crops:
    buffer = io.BytesIO()
    Image.fromarray(crop).save(buffer, format="JPEG", quality=quality)
    encoded.append(buffer.getvalue())
  return encoded


def decode_frames(frames: Sequence[bytes],
                  indices: Sequence[int] | None = None) -> np.ndarray:
  """JPEG frames of a record -> uint8 RGB (K, S, S, 3), K = len(indices).

  Args:
    frames: the record's `frames` list.
    indices: which frames to decode (all when None).
  """
  if indices is None:
    indices = range(len(frames))
  images = []
  for index in indices:
    with Image.open(io.BytesIO(frames[index])) as image:
      images.append(np.asarray(image.convert("RGB")))
  return np.stack(images)


def _check_record(record: dict[str, Any]) -> None:
  missing = {"clip_id", "fps", "frames", "mel", "boxes", "crop_size"
             } - set(record)
  if missing:
    raise RecordError(f"record lacks keys {sorted(missing)}")
  mel = np.asarray(record["mel"])
  if mel.ndim != 2 or mel.shape[0] != NUM_MELS:
    raise RecordError(f"record {record['clip_id']}: mel must be "
                      f"({NUM_MELS}, N), got {mel.shape}")
  boxes = np.asarray(record["boxes"])
  if boxes.shape != (len(record["frames"]), 4):
    raise RecordError(f"record {record['clip_id']}: boxes must be "
                      f"({len(record['frames'])}, 4), got {boxes.shape}")


def encode_record(record: dict[str, Any]) -> bytes:
  """A record dict (see the module docstring) -> serialised Example bytes."""
  _check_record(record)
  mel = np.asarray(record["mel"], dtype=np.float32)
  example = _Example()
  feature = example.features.feature
  feature["clip_id"].bytes_list.value.append(record["clip_id"].encode())
  feature["source_path"].bytes_list.value.append(
      str(record.get("source_path", "")).encode())
  feature["fps"].float_list.value.append(float(record["fps"]))
  feature["crop_size"].int64_list.value.append(int(record["crop_size"]))
  feature["frames"].bytes_list.value.extend(record["frames"])
  feature["boxes"].int64_list.value.extend(
      np.asarray(record["boxes"], dtype=np.int64).reshape(-1).tolist())
  feature["mel"].float_list.value.extend(mel.reshape(-1).tolist())
  feature["mel_shape"].int64_list.value.extend(mel.shape)
  return example.SerializeToString(deterministic=True)


def decode_record(data: bytes) -> dict[str, Any]:
  """Serialised Example bytes -> the record dict (module docstring)."""
  example = _Example()
  try:
    example.ParseFromString(data)
  except Exception as error:  # protobuf raises its own DecodeError.
    raise RecordError(f"not a serialised Example: {error}") from error
  feature = example.features.feature
  try:
    mel_shape = tuple(feature["mel_shape"].int64_list.value)
    record = {
        "clip_id": feature["clip_id"].bytes_list.value[0].decode(),
        "source_path": feature["source_path"].bytes_list.value[0].decode(),
        "fps": float(feature["fps"].float_list.value[0]),
        "crop_size": int(feature["crop_size"].int64_list.value[0]),
        "frames": list(feature["frames"].bytes_list.value),
        "boxes": np.array(feature["boxes"].int64_list.value,
                          dtype=np.int32).reshape(-1, 4),
        "mel": np.array(feature["mel"].float_list.value,
                        dtype=np.float32).reshape(mel_shape),
    }
  except (IndexError, ValueError) as error:
    raise RecordError(f"record does not follow the schema: {error}") from error
  _check_record(record)
  return record


def _masked_crc32c(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(data: bytes) -> bytes:
  """One record in TFRecord framing: length, its masked CRC32C, data, CRC."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked_crc32c(length)) + data +
          struct.pack("<I", _masked_crc32c(data)))


def read_tfrecord(path: str | os.PathLike) -> Iterator[bytes]:
  """Yields the records of a TFRecord file, checking both checksums."""
  with open(path, "rb") as f:
    while header := f.read(12):
      if len(header) < 12:
        raise RecordError(f"{path}: truncated record header")
      length, length_crc = struct.unpack("<QI", header)
      if _masked_crc32c(header[:8]) != length_crc:
        raise RecordError(f"{path}: corrupt length checksum")
      data = f.read(length)
      footer = f.read(4)
      if len(data) < length or len(footer) < 4:
        raise RecordError(f"{path}: truncated record")
      if _masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise RecordError(f"{path}: corrupt data checksum")
      yield data


SHARD_FORMATS = ("array_record", "tfrecord", "frame_store")


class ShardWriter:
  """Writes encoded records to one shard in one or more formats, atomically.

  Usage: `with ShardWriter(output_dir / "train-00000") as w: w.write(b)`.
  The files are `<stem>.array_record`, `<stem>.tfrecord` and/or the frame store's
  (`frame_store.shard_files`), written as `.<name>.tmp` and renamed on a clean
  `close()`; `abort()` (and an exception inside the `with` block) deletes the
  temporary files instead. The directory's frame store index is written apart
  (`frame_store.write_index`), once all its shards are complete.
  """

  def __init__(self, stem: str | os.PathLike,
               formats: Sequence[str] = ("array_record",)):
    unknown = set(formats) - set(SHARD_FORMATS)
    if unknown or not formats:
      raise ValueError(f"formats must be some of {SHARD_FORMATS}, got {list(formats)}")
    stem = pathlib.Path(stem)
    self.paths = []
    self._temp_paths = []
    self._array_writer = None
    self._tfrecord_file = None
    self._frame_store = (frame_store.ShardWriter(stem) if "frame_store" in formats
                         else None)
    self.num_records = 0
    for fmt in formats:
      if fmt == "frame_store":
        continue
      suffix = ARRAY_RECORD_SUFFIX if fmt == "array_record" else TFRECORD_SUFFIX
      path = stem.with_name(stem.name + suffix)
      temp = path.with_name(f".{path.name}.tmp")
      self.paths.append(path)
      self._temp_paths.append(temp)
      if fmt == "array_record":
        self._array_writer = array_record_module.ArrayRecordWriter(
            str(temp), ARRAY_RECORD_OPTIONS)
      else:
        self._tfrecord_file = open(temp, "wb")

  def write(self, data: bytes) -> None:
    if self._array_writer is not None:
      self._array_writer.write(data)
    if self._tfrecord_file is not None:
      self._tfrecord_file.write(tfrecord_frame(data))
    if self._frame_store is not None:
      self._frame_store.add(decode_record(data))
    self.num_records += 1

  def _close_files(self) -> None:
    if self._array_writer is not None:
      self._array_writer.close()
      self._array_writer = None
    if self._tfrecord_file is not None:
      self._tfrecord_file.flush()
      os.fsync(self._tfrecord_file.fileno())
      self._tfrecord_file.close()
      self._tfrecord_file = None

  def close(self) -> list[pathlib.Path]:
    """Finishes the shard and renames it into place; returns its paths."""
    self._close_files()
    for temp, path in zip(self._temp_paths, self.paths):
      os.replace(temp, path)
    if self._frame_store is not None:
      return self.paths + self._frame_store.close()
    return self.paths

  def abort(self) -> None:
    """Discards the shard."""
    self._close_files()
    for temp in self._temp_paths:
      temp.unlink(missing_ok=True)
    if self._frame_store is not None:
      self._frame_store.abort()

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, exc_type, exc_value, traceback) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def list_shards(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike]
                ) -> list[pathlib.Path]:
  """ArrayRecord shard paths: a directory's `*.array_record`, sorted, or the
  given files. Raises FileNotFoundError when there are none."""
  if isinstance(paths_or_dir, (str, os.PathLike)):
    root = pathlib.Path(paths_or_dir)
    paths = (sorted(root.glob(f"*{ARRAY_RECORD_SUFFIX}")) if root.is_dir()
             else [root])
  else:
    paths = [pathlib.Path(p) for p in paths_or_dir]
  if not paths:
    raise FileNotFoundError(f"no {ARRAY_RECORD_SUFFIX} shards in {paths_or_dir}")
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f"{path}: no such shard")
  return paths


class RecordSource:
  """Random access over ArrayRecord shards: `len(source)`, `source[i]`.

  `source[i]` is the decoded record dict (`decode=True`) or its raw bytes.
  Picklable, so it can be handed to Grain worker processes.
  """

  def __init__(self, paths: Sequence[pathlib.Path], decode: bool = True):
    self.paths = list(paths)
    self.decode = decode
    self._source = array_record_data_source.ArrayRecordDataSource(
        [str(p) for p in self.paths])

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any] | bytes:
    data = self._source[index]
    return decode_record(data) if self.decode else data

  def __repr__(self) -> str:
    return (f"RecordSource({len(self.paths)} shards, {len(self)} records, "
            f"decode={self.decode})")


def open_shards(paths_or_dir: str | os.PathLike | Sequence[str | os.PathLike],
                decode: bool = True) -> RecordSource:
  """A random-access source over a directory of shards or a list of them."""
  return RecordSource(list_shards(paths_or_dir), decode=decode)


def write_frame_store(shard_dir: str | os.PathLike, frame_encoding: str = "jpeg"
                      ) -> list[pathlib.Path]:
  """Completes the frame store (`lipsync_jax.frame_store`) of a directory of shards: a
  store shard for each ArrayRecord shard that lacks one (resumable: complete store shards
  are kept), then the index of all store shards. Returns the record shards converted in
  this call. Raises FrameStoreError when the directory has no shards at all."""
  done = set(frame_store.shard_stems(shard_dir))
  converted = []
  for path in sorted(pathlib.Path(shard_dir).glob(f"*{ARRAY_RECORD_SUFFIX}")):
    stem = path.with_name(path.name[:-len(ARRAY_RECORD_SUFFIX)])
    if stem.name in done:
      continue
    writer = frame_store.ShardWriter(stem, frame_encoding)
    try:
      source = array_record_data_source.ArrayRecordDataSource([str(path)])
      for i in range(len(source)):
        writer.add(decode_record(source[i]))
    except BaseException:
      writer.abort()
      raise
    writer.close()
    converted.append(path)
  frame_store.write_index(shard_dir, frame_encoding)
  return converted
