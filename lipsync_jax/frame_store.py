"""Frame store: the training layout of the records, read one frame at a time.

A clip record (`lipsync_jax.records`) holds a whole utterance; a training sample needs
5 or 10 of its frames and a few mel windows. Reading and parsing the whole record per
sample, or one ArrayRecord record per frame (~50 us a read here, as much as decoding the
JPEG), caps a host far below what an accelerator consumes (docs/benchmarks.md). The frame
store keeps the same frames and mel in memory-mappable files, so a sample reads exactly its
frames (a slice of a mapped file, ~2 us) and its mel rows.

A store directory (the records' split directory) holds, per shard stem `<stem>`:

  <stem>.frames       the encoded frames of the shard's clips, concatenated (the records'
                      JPEG bytes as they are, or raw uint8 S x S x 3 pixels)
  <stem>.offsets.npy  int64 (F + 1,): frame f is bytes [offsets[f], offsets[f + 1])
  <stem>.mel.npy      float32 (M, 80): the clips' mel spectrograms, time-major, concatenated
  <stem>.clips.npy    the shard's rows of `INDEX_DTYPE` (offsets local to the shard)

and, for the whole directory, written by `write_index` once the shards are complete:

  index.npy           `INDEX_DTYPE` rows of every clip, `shard` = position in the stems list
  frame_store.json    {"format", "version", "frame_encoding": "jpeg" | "raw", "crop_size",
                       "num_clips", "shards": [stems]}

Every file is written under a temporary name and renamed when complete. Opening a store
reads the JSON and memory-maps the index, so it costs the same for 1k or 10k clips; shard
files are mapped the first time one of their clips is read, in the process reading it.
"""

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np
import simplejpeg

from lipsync_jax import errors

NUM_MELS = 80
INDEX_NAME = "index.npy"
META_NAME = "frame_store.json"
FORMAT_NAME = "lipsync_jax.frame_store"
VERSION = 1
FRAME_ENCODINGS = ("jpeg", "raw")
INDEX_DTYPE = np.dtype([("clip_id", "S96"), ("shard", "<i4"), ("first_frame", "<i8"),
                        ("num_frames", "<i4"), ("first_mel", "<i8"), ("num_mel", "<i4"),
                        ("fps", "<f4"), ("crop_size", "<i4")])


class FrameStoreError(errors.LipsyncError, ValueError):
  """A frame store that is missing, incomplete or inconsistent."""


def _replace_npy(path: pathlib.Path, array: np.ndarray) -> None:
  temp = path.with_name(f".{path.name}.tmp")
  with open(temp, "wb") as f:
    np.save(f, array)
  os.replace(temp, path)


def shard_files(stem: str | os.PathLike) -> dict[str, pathlib.Path]:
  """The four files of a shard stem: frames, offsets, mel, clips."""
  stem = pathlib.Path(stem)
  return {kind: stem.with_name(stem.name + suffix) for kind, suffix in (
      ("frames", ".frames"), ("offsets", ".offsets.npy"), ("mel", ".mel.npy"),
      ("clips", ".clips.npy"))}


class ShardWriter:
  """Appends clips to one store shard; `close()` renames its files into place.

  `add(record)` takes a decoded record dict (`records.decode_record`: "clip_id", "fps",
  "crop_size", "frames" (JPEG bytes), "mel" (80, N)). With `frame_encoding="raw"` the
  frames are stored decoded (uint8, 8-9x the JPEG bytes of a 96 px face crop).
  """

  def __init__(self, stem: str | os.PathLike, frame_encoding: str = "jpeg"):
    if frame_encoding not in FRAME_ENCODINGS:
      raise ValueError(f"frame_encoding must be one of {FRAME_ENCODINGS}, got {frame_encoding!r}")
    self.files = shard_files(stem)
    self.frame_encoding = frame_encoding
    self._temp = {k: p.with_name(f".{p.name}.tmp") for k, p in self.files.items()}
    self._frames = open(self._temp["frames"], "wb")
    self._offsets, self._mels, self._clips = [0], [], []
    self._num_mel = 0

  def add(self, record: dict[str, Any]) -> None:
    mel = np.asarray(record["mel"], np.float32)
    if mel.ndim != 2 or mel.shape[0] != NUM_MELS:
      raise FrameStoreError(f"{record['clip_id']}: mel must be ({NUM_MELS}, N), got {mel.shape}")
    first_frame = len(self._offsets) - 1
    for frame in record["frames"]:
      if self.frame_encoding == "raw":
        frame = simplejpeg.decode_jpeg(frame, colorspace="RGB").tobytes()
      self._frames.write(frame)
      self._offsets.append(self._offsets[-1] + len(frame))
    self._clips.append((record["clip_id"].encode(), 0, first_frame, len(record["frames"]),
                        self._num_mel, mel.shape[1], record["fps"], record["crop_size"]))
    self._mels.append(mel.T)
    self._num_mel += mel.shape[1]

  def close(self) -> list[pathlib.Path]:
    """Writes the offsets, mel and clip rows; renames all four files into place."""
    self._frames.close()
    mel = np.concatenate(self._mels) if self._mels else np.zeros((0, NUM_MELS), np.float32)
    for kind, array in (("offsets", np.asarray(self._offsets, np.int64)),
                        ("mel", np.ascontiguousarray(mel, np.float32)),
                        ("clips", np.array(self._clips, INDEX_DTYPE))):
      with open(self._temp[kind], "wb") as f:
        np.save(f, array)
    for kind in ("frames", "offsets", "mel", "clips"):  # clips last: it marks the shard done.
      os.replace(self._temp[kind], self.files[kind])
    return list(self.files.values())

  def abort(self) -> None:
    self._frames.close()
    for temp in self._temp.values():
      temp.unlink(missing_ok=True)


def shard_stems(directory: str | os.PathLike) -> list[str]:
  """Stems of the complete shards of `directory` (those with a clips file), sorted."""
  return sorted(p.name[:-len(".clips.npy")] for p in pathlib.Path(directory).glob("*.clips.npy"))


def write_index(directory: str | os.PathLike, frame_encoding: str = "jpeg") -> int:
  """Writes `index.npy` and `frame_store.json` of every complete shard (unless they are
  up to date); returns the number of clips. Reads only the shards' small clips files."""
  directory = pathlib.Path(directory)
  stems = shard_stems(directory)
  if not stems:
    raise FrameStoreError(f"{directory}: no frame store shards (*.clips.npy)")
  rows = []
  for shard, stem in enumerate(stems):
    clips = np.load(directory / f"{stem}.clips.npy")
    clips["shard"] = shard
    rows.append(clips)
  index = np.concatenate(rows)
  sizes = set(index["crop_size"].tolist())
  if len(sizes) > 1:
    raise FrameStoreError(f"{directory}: clips of several crop sizes {sorted(sizes)}")
  meta = json.dumps({"format": FORMAT_NAME, "version": VERSION, "frame_encoding": frame_encoding,
                     "crop_size": int(index["crop_size"][0]) if len(index) else 0,
                     "num_clips": int(len(index)), "shards": stems}, indent=1)
  try:  # An index that is already up to date is left as it is.
    if ((directory / META_NAME).read_text() == meta
        and np.load(directory / INDEX_NAME).tobytes() == index.tobytes()):
      return len(index)
  except (OSError, ValueError):
    pass
  _replace_npy(directory / INDEX_NAME, index)
  temp = directory / f".{META_NAME}.tmp"
  temp.write_text(meta)
  os.replace(temp, directory / META_NAME)
  return len(index)


def is_frame_store(directory: str | os.PathLike) -> bool:
  return (pathlib.Path(directory) / META_NAME).is_file()


class FrameList:
  """The frames of one clip, read on access: `len(frames)`, `frames[i]` (JPEG bytes or a
  uint8 (S, S, 3) array)."""

  def __init__(self, data: np.ndarray, offsets: np.ndarray, first: int, count: int,
               raw_shape: tuple[int, int, int] | None):
    self._data, self._offsets = data, offsets
    self._first, self._count, self._raw_shape = first, count, raw_shape

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, i: int):
    if not 0 <= i < self._count:
      raise IndexError(f"frame {i} of {self._count}")
    start, end = self._offsets[self._first + i], self._offsets[self._first + i + 1]
    if self._raw_shape is not None:
      return self._data[start:end].reshape(self._raw_shape)
    return memoryview(self._data[start:end])


class FrameStore:
  """Random access to the clips of a store: `len(store)`, `store[i]` -> clip dict
  {"clip_id", "fps", "crop_size", "frames": FrameList, "mel": float32 (80, N) view}.

  Holds the index rows of clips `shard_index`, `shard_index + shard_count`, ... with at
  least `min_frames` frames (a host's part: only those rows are read). Picklable (Grain
  workers map the shard files again in their process).

  Raises:
    FrameStoreError: no store in `directory`, or an index that does not match it.
  """

  def __init__(self, directory: str | os.PathLike, shard_index: int = 0, shard_count: int = 1,
               min_frames: int = 0):
    self.directory = pathlib.Path(directory)
    try:
      self.meta = json.loads((self.directory / META_NAME).read_text())
      index = np.load(self.directory / INDEX_NAME, mmap_mode="r")
    except (OSError, ValueError) as e:
      raise FrameStoreError(f"{self.directory}: not a readable frame store: {e}") from e
    if self.meta.get("format") != FORMAT_NAME or self.meta.get("version") != VERSION:
      raise FrameStoreError(f"{self.directory / META_NAME}: not a version {VERSION} frame store")
    if len(index) != self.meta["num_clips"] or index.dtype != INDEX_DTYPE:
      raise FrameStoreError(f"{self.directory / INDEX_NAME}: {len(index)} rows of {index.dtype}, "
                            f"{META_NAME} says {self.meta['num_clips']} of {INDEX_DTYPE}")
    if shard_stems(self.directory) != self.meta["shards"]:
      raise FrameStoreError(f"{self.directory / INDEX_NAME}: stale, the directory's complete "
                            "shards differ from the index's (shards added or removed since): "
                            "re-run preprocessing or records.write_frame_store on it")
    self.frame_encoding = self.meta["frame_encoding"]
    size = self.meta["crop_size"]
    self._raw_shape = (size, size, 3) if self.frame_encoding == "raw" else None
    self._min_frames = min_frames
    rows = np.asarray(index[shard_index::shard_count])
    self._rows = rows[rows["num_frames"] >= min_frames]
    self.num_skipped = len(rows) - len(self._rows)
    self._maps = {}

  def shard(self, index: int, count: int) -> "FrameStore":
    """The store of clips index, index + count, ... of the whole directory."""
    return FrameStore(self.directory, index, count, self._min_frames)

  def __len__(self) -> int:
    return len(self._rows)

  def _shard_maps(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    maps = self._maps.get(shard)
    if maps is None:
      files = shard_files(self.directory / self.meta["shards"][shard])
      try:
        # Plain ndarray views of the maps: slicing a np.memmap costs ~5x more.
        maps = (np.asarray(np.memmap(files["frames"], np.uint8, mode="r")),
                np.asarray(np.load(files["offsets"], mmap_mode="r")),
                np.asarray(np.load(files["mel"], mmap_mode="r")))
      except (OSError, ValueError) as e:
        raise FrameStoreError(f"{files['frames']}: unreadable store shard: {e}") from e
      self._maps[shard] = maps
    return maps

  def __getitem__(self, index: int) -> dict[str, Any]:
    row = self._rows[index]
    data, offsets, mel = self._shard_maps(int(row["shard"]))
    first_mel, num_mel = int(row["first_mel"]), int(row["num_mel"])
    return {"clip_id": row["clip_id"].decode(), "fps": float(row["fps"]),
            "crop_size": int(row["crop_size"]),
            "frames": FrameList(data, offsets, int(row["first_frame"]), int(row["num_frames"]),
                                self._raw_shape),
            "mel": mel[first_mel:first_mel + num_mel].T}

  def __getstate__(self):
    return {**self.__dict__, "_maps": {}}

  def __repr__(self) -> str:
    return f"FrameStore({self.directory}, {len(self)} clips, {self.frame_encoding})"
