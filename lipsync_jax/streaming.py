"""Live lip sync: audio pushed as it arrives, each frame made once its audio is in.

`MelWindows` turns 16 kHz PCM chunks of any size into each video frame's mel window
(`audio.mel_window_start`'s convention) as soon as the audio that window covers has
arrived, with `audio.StreamingMel`; the frames whose windows reach the end of the audio
come at `finish()`, clamped as the offline path clamps them. `LipsyncStream` runs the
generator on up to `batch_size` ready windows per call over a prepared
`inference.Avatar` (frames looped forward then backward) and pastes the mouths back with
the offline path's `inference.face_inputs` / `inference.paste_generated`, so the same
audio gives the frames `inference.LipsyncJob` gives over the avatar's frame sequence.
For a generator whose face encoder does not see the audio (`Wav2Lip.encode_faces`), a
`FaceFeatureCache` runs that encoder once per avatar frame, and each output frame runs
only the rest of the network (`Wav2Lip.decode`).

Latency of a frame: from the arrival of the last audio sample its mel window needs
(`ReadyWindow.arrival`: the time of the push that completed it) to the frame being
written (the caller's clock reading after writing it).
"""

import collections
import dataclasses
import functools
import queue
import threading
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import audio
from lipsync_jax import checkpoints
from lipsync_jax import inference

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class ReadyWindow:
  """Video frame `index`'s mel window (80, 16) float32, complete at clock time `arrival`."""
  index: int
  mel: Array
  arrival: float


@dataclasses.dataclass(frozen=True)
class StreamFrame:
  """Output frame `index`: uint8 (H, W, 3) RGB; `arrival` as its `ReadyWindow`'s."""
  index: int
  image: Array
  arrival: float


def samples_needed(frame_index: int, fps: float) -> int:
  """How many samples must have arrived before frame `frame_index`'s mel window is known
  without the end of the stream: its last column m = start + 15 needs samples up to index
  200 m + 399 (the STFT frame is centred on sample 200 m)."""
  last_column = audio.mel_window_start(frame_index, fps) + audio.MEL_WINDOW - 1
  return last_column * audio.HOP_LENGTH + audio.N_FFT // 2


def pcm_to_float(pcm: Array) -> Array:
  """int16 PCM -> float32 in [-1, 1); float input is returned as float32."""
  pcm = np.asarray(pcm)
  if pcm.dtype == np.int16:
    return pcm.astype(np.float32) / 32768.0
  return pcm.astype(np.float32)


class MelWindows:
  """PCM chunks in, `ReadyWindow`s out in frame order, as soon as each is determined.

  Over a whole stream the windows are `audio.mel_window(audio.melspectrogram(wav), i,
  fps, clamp=True)` for i < `audio.num_video_frames_for_mel(...)` (to ~1e-6), as
  `LipsyncJob` uses them. Only the mel columns that later windows need are kept.
  """

  def __init__(self, fps: float):
    self.fps = fps
    self.next_index = 0
    self._mel = audio.StreamingMel()
    self._columns = np.zeros((audio.NUM_MELS, 0), np.float32)
    self._first_column = 0  # absolute index of self._columns[:, 0]

  @property
  def num_samples(self) -> int:
    return self._mel.num_samples

  def push(self, pcm: Array, arrival: float) -> list[ReadyWindow]:
    """Adds int16 or float samples (k,) at 16 kHz that arrived at clock time `arrival`."""
    self._add(self._mel.push(pcm_to_float(pcm)))
    ready = []
    while samples_needed(self.next_index, self.fps) <= self.num_samples:
      ready.append(self._next_window(arrival))
    self._trim()
    return ready

  def finish(self, arrival: float) -> list[ReadyWindow]:
    """Ends the audio; the remaining windows, the last clamped to the end.

    Raises:
      audio.AudioError: less than one mel window (0.2 s) of audio in all.
    """
    self._add(self._mel.finish())
    num_mel = self._mel.num_columns
    if num_mel < audio.MEL_WINDOW:
      raise audio.AudioError(f"audio of {self.num_samples / audio.SAMPLE_RATE:.3f} s is "
                             "shorter than one mel window (0.2 s)")
    total = audio.num_video_frames_for_mel(num_mel, self.fps)
    return [self._next_window(arrival, num_mel) for _ in range(self.next_index, total)]

  def _add(self, columns: Array) -> None:
    self._columns = np.concatenate([self._columns, columns], axis=1)

  def _next_window(self, arrival: float, num_mel: int | None = None) -> ReadyWindow:
    index = self.next_index
    start = audio.mel_window_start(index, self.fps)
    if num_mel is not None:  # the end of the stream: clamped as mel_window(clamp=True)
      start = min(start, num_mel - audio.MEL_WINDOW)
    offset = start - self._first_column
    self.next_index += 1
    return ReadyWindow(index, self._columns[:, offset:offset + audio.MEL_WINDOW].copy(),
                       arrival)

  def _trim(self) -> None:
    # Keep the next window's columns, and the last 16 (a clamped last window).
    keep_from = min(audio.mel_window_start(self.next_index, self.fps),
                    self._mel.num_columns - audio.MEL_WINDOW)
    drop = max(0, keep_from - self._first_column)
    if drop:
      self._columns = self._columns[:, drop:]
      self._first_column += drop


def compiled_batch_sizes(batch_size: int) -> tuple[int, ...]:
  """The generator batch shapes a stream compiles: powers of two below `batch_size`, and
  `batch_size`; a call with k ready windows uses the smallest one >= k."""
  sizes = {batch_size}
  size = 1
  while size < batch_size:
    sizes.add(size)
    size *= 2
  return tuple(sorted(sizes))


def supports_face_cache(model: nn.Module) -> bool:
  """Whether `model` splits into an audio-free face encoder and the rest (Wav2Lip does:
  `encode_faces` / `decode`; AttnWav2Lip does not)."""
  return callable(getattr(model, "encode_faces", None)) and callable(
      getattr(model, "decode", None))


@functools.lru_cache(maxsize=8)
def _jitted_split_generator(model: nn.Module) -> tuple[Callable, Callable]:
  """(encode, decode), jitted once per module configuration; the weights and the cached
  features are arguments, not constants baked into the programs."""

  @jax.jit
  def encode(variables, faces):
    return model.apply(variables, faces, train=False, method="encode_faces")

  @jax.jit
  def decode(variables, mel_chunks, features, index):
    skips = [feature[index] for feature in features]
    return model.apply(variables, mel_chunks, skips, train=False,
                       method="decode").astype(jnp.float32)

  return encode, decode


class FaceFeatureCache:
  """A generator's face encoder outputs for every avatar frame, computed once.

  The face input of avatar frame t (`inference.face_inputs(crops[t])`) never changes, and
  the generator's face encoder never sees the audio, so `encode_faces` runs once per
  frame here and every output frame runs only `decode` (audio encoder, decoder, output
  block) on the cached features of its avatar frame. The outputs equal the full
  generator's (`decode(mel, encode_faces(faces))` is its `__call__`).

  Args:
    generator: a `checkpoints.Generator` whose model `supports_face_cache`.
    crops: uint8 (T, S, S, 3) RGB face crops at the generator's input size (an
      `inference.Avatar`'s).
    dtype: compute dtype override (e.g. jnp.bfloat16); the features are kept in it.
    batch_size: frames per encoder call (at most; the last one padded).
  Attributes:
    features: one device array (T, h, w, c) per encoder stage, in the compute dtype
      (Wav2Lip at 96: 290,816 values per frame, 1.16 MB in float32).
    nbytes: their total size in bytes; seconds: the time the encoding took (compile
      included on a first use of the model).
  Raises:
    inference.InferenceError: the model has no `encode_faces` / `decode`, or no crops.
  """

  def __init__(self, generator: checkpoints.Generator, crops: Array, dtype: Any = None,
               batch_size: int = 8):
    model = generator.model if dtype is None else generator.model.clone(dtype=dtype)
    if not supports_face_cache(model):
      raise inference.InferenceError(
          f"{type(model).__name__} has no audio-free face encoder (encode_faces / decode)")
    if not len(crops):
      raise inference.InferenceError("FaceFeatureCache: no face crops")
    self.variables, self.channel_order = generator.variables, generator.channel_order
    try:
      self._encode, self._decode = _jitted_split_generator(model)
    except TypeError:  # An unhashable field (e.g. a list): no sharing, compiles here.
      self._encode, self._decode = _jitted_split_generator.__wrapped__(model)
    batch_size = min(batch_size, len(crops))
    tick = time.perf_counter()
    parts = []
    for start in range(0, len(crops), batch_size):
      faces = inference.face_inputs(crops[start:start + batch_size], self.channel_order)
      valid = len(faces)
      parts.append([f[:valid] for f in self._encode(self.variables,
                                                     _pad_rows(faces, batch_size))])
    self.features = [jnp.concatenate(stage) for stage in zip(*parts)]
    jax.block_until_ready(self.features)
    self.seconds = time.perf_counter() - tick
    self.nbytes = sum(f.nbytes for f in self.features)

  def __len__(self) -> int:
    return len(self.features[0])

  def generate(self, mel_chunks: Array, index: Array, batch_size: int) -> Array:
    """mel_chunks (n, 80, 16, 1) and avatar frame indices (n,), n <= `batch_size` ->
    (n, S, S, 3) float32 numpy in [0, 1], in the checkpoint's channel order; one call
    padded to `batch_size` rows (one compile per batch size)."""
    n = len(index)
    out = self._decode(self.variables, _pad_rows(mel_chunks, batch_size), self.features,
                       _pad_rows(np.asarray(index, np.int32), batch_size))
    return np.asarray(out)[:n]


def _pad_rows(x: Array, rows: int) -> Array:
  """`x` with its last row repeated up to `rows` rows."""
  if len(x) == rows:
    return x
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])


class LipsyncStream:
  """Audio pushed as it arrives -> lip-synced frames of a prepared avatar, in order.

    stream = LipsyncStream(generator, avatar, batch_size=4)
    stream.warmup()                      # cache face features, compile: before the clock
    for chunk in chunks:
      stream.push(chunk)
      for frame in stream.frames(): ...  # what the audio so far allows
    stream.finish()
    for frame in stream.frames(): ...    # the frames at the end of the audio

  Args:
    generator: a `checkpoints.Generator`.
    avatar: an `inference.Avatar` (crops are redone if its crop size differs).
    batch_size: at most this many ready frames per generator call.
    blend: feathered lower-face paste-back (as `LipsyncJob`'s `blend`).
    dtype: compute dtype override for the generator (e.g. jnp.bfloat16).
    clock: seconds, for the arrival times (`time.perf_counter`).
    face_cache: for a generator that `supports_face_cache` (Wav2Lip), run its face
      encoder once per avatar frame (a `FaceFeatureCache`, built by `warmup()` or the
      first `step()`) and per call only the rest; False (or another generator): the
      whole generator per call. The frames are the same either way.
  Attributes: `generate_seconds` and `paste_seconds` (one entry per generator call),
  `frames_out`, `face_cache` (the `FaceFeatureCache` once built, else None).
  """

  def __init__(self, generator: checkpoints.Generator, avatar: inference.Avatar, *,
               batch_size: int = 8, blend: bool = True, dtype: Any = None,
               clock: Callable[[], float] = time.perf_counter, face_cache: bool = True):
    if batch_size < 1:
      raise inference.InferenceError(f"batch_size must be >= 1, got {batch_size}")
    self.generator, self.blend, self.clock, self.dtype = generator, blend, clock, dtype
    self.avatar = avatar.with_crop_size(generator.img_size)
    self.batch_size = batch_size
    self._windows = MelWindows(avatar.fps)
    self._ready: collections.deque[ReadyWindow] = collections.deque()
    self.uses_face_cache = face_cache and supports_face_cache(generator.model)
    self.face_cache: FaceFeatureCache | None = None
    self._generate = {}  # batch size -> fn(mels (n, 80, 16, 1), avatar frame indices (n,))
    for size in compiled_batch_sizes(batch_size):
      if self.uses_face_cache:
        self._generate[size] = functools.partial(self._generate_cached, batch_size=size)
      else:
        full = inference.make_inference_fn(generator.model, generator.variables, size, dtype)
        self._generate[size] = functools.partial(self._generate_full, full)
    self.finished = False
    self.frames_out = 0
    self.generate_seconds: list[float] = []
    self.paste_seconds: list[float] = []

  @property
  def fps(self) -> float:
    return self.avatar.fps

  @property
  def num_samples(self) -> int:
    return self._windows.num_samples

  @property
  def pending(self) -> int:
    """Frames whose audio is in but which have not been generated yet."""
    return len(self._ready)

  def warmup(self) -> None:
    """Builds the face feature cache (if used) and compiles (and runs once) every
    generator batch shape the stream may use."""
    for batch, generate in self._generate.items():
      generate(np.zeros((batch, audio.NUM_MELS, audio.MEL_WINDOW, 1), np.float32),
               np.zeros(batch, np.int32))

  def _generate_full(self, full: Callable[[Array, Array], Array], mels: Array,
                     index: Array) -> Array:
    return full(mels, inference.face_inputs(self.avatar.crops[index],
                                            self.generator.channel_order))

  def _generate_cached(self, mels: Array, index: Array, batch_size: int) -> Array:
    if self.face_cache is None:
      self.face_cache = FaceFeatureCache(self.generator, self.avatar.crops, self.dtype)
    return self.face_cache.generate(mels, index, batch_size)

  def push(self, pcm: Array, arrival: float | None = None) -> int:
    """Adds int16 or float PCM (k,) at 16 kHz that arrived at `arrival` (default now);
    returns how many frames became ready.

    Raises:
      audio.AudioError: non-finite or non-1-D samples; inference.InferenceError: a push
        after `finish`.
    """
    if self.finished:
      raise inference.InferenceError("LipsyncStream: push after finish")
    ready = self._windows.push(pcm, self.clock() if arrival is None else arrival)
    self._ready.extend(ready)
    return len(ready)

  def finish(self, arrival: float | None = None) -> int:
    """Ends the audio (`arrival`: when its last sample came, default now); returns how
    many frames became ready. Raises audio.AudioError for less than 0.2 s of audio."""
    if self.finished:
      return 0
    self.finished = True
    ready = self._windows.finish(self.clock() if arrival is None else arrival)
    self._ready.extend(ready)
    return len(ready)

  @property
  def done(self) -> bool:
    return self.finished and not self._ready

  def step(self) -> list[StreamFrame]:
    """One generator call on up to `batch_size` ready frames (none if none is ready)."""
    if not self._ready:
      return []
    windows = [self._ready.popleft() for _ in range(min(self.batch_size, len(self._ready)))]
    avatar, order = self.avatar, self.generator.channel_order
    index = np.array([avatar.frame_index(w.index) for w in windows])
    tick = time.perf_counter()
    size = min(s for s in self._generate if s >= len(windows))
    mels = np.stack([w.mel for w in windows])[..., None]
    out = self._generate[size](mels, index)
    self.generate_seconds.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    images = inference.paste_generated(list(avatar.frames[index]), out, avatar.boxes[index],
                                       avatar.has_face[index], order, self.blend)
    self.paste_seconds.append(time.perf_counter() - tick)
    self.frames_out += len(windows)
    return [StreamFrame(w.index, image, w.arrival) for w, image in zip(windows, images)]

  def frames(self) -> Iterator[StreamFrame]:
    """Every frame ready now, in order, `batch_size` per generator call."""
    while self._ready:
      yield from self.step()


# Audio sources and the live loop (tools/stream.py, benchmarks/streaming.py).


class ArrayFeed:
  """A signal in `chunk`-sample pieces. With `realtime`, piece k arrives at the clock
  time start + (its last sample + 1) / 16 kHz (start: the first `poll`), as from a
  microphone; otherwise every piece arrives at the first `poll`."""

  def __init__(self, wav: Array, chunk: int, realtime: bool = True,
               clock: Callable[[], float] = time.perf_counter):
    self.wav, self.chunk, self.realtime, self.clock = wav, max(1, chunk), realtime, clock
    self.fed, self.start, self.ended, self.last_arrival = 0, None, False, None

  def _arrival(self, end: int) -> float:
    return self.start + end / audio.SAMPLE_RATE if self.realtime else self.start

  def poll(self) -> list[tuple[Array, float]]:
    """The pieces that have arrived by now, with their arrival times."""
    now = self.clock()
    if self.start is None:
      self.start = now
    pieces = []
    while self.fed < len(self.wav):
      end = min(self.fed + self.chunk, len(self.wav))
      if self._arrival(end) > now:
        break
      pieces.append((self.wav[self.fed:end], self._arrival(end)))
      self.fed, self.last_arrival = end, self._arrival(end)
    self.ended = self.fed == len(self.wav)
    return pieces

  def wait(self) -> None:
    """Sleeps until the next piece arrives."""
    if self.fed < len(self.wav):
      end = min(self.fed + self.chunk, len(self.wav))
      time.sleep(max(0.0, self._arrival(end) - self.clock()))


class PcmReaderFeed:
  """16-bit little-endian PCM read from a binary stream (stdin) by a thread, at most
  `chunk` samples per read; each piece arrives when it is read. `name` is the stream's,
  for errors. `received()` is the audio read so far, float32.

  `poll` raises audio.AudioError (after returning the pieces read before it) for a
  stream that starts like a WAV file or ends with half a sample.
  """

  def __init__(self, reader, chunk: int, name: str = "stdin",
               clock: Callable[[], float] = time.perf_counter):
    self.name, self.clock = name, clock
    self.ended, self.last_arrival = False, None
    self._queue: queue.Queue = queue.Queue()
    self._pieces: list[Array] = []
    self._waiting: list = []
    self._error: Exception | None = None
    threading.Thread(target=self._read, args=(reader, 2 * max(1, chunk)), daemon=True).start()

  def _read(self, reader, size: int) -> None:
    read = getattr(reader, "read1", reader.read)
    leftover, total = b"", 0
    try:
      while data := read(size):
        if not total and data[:4] == b"RIFF":
          raise audio.AudioError(f"{self.name}: a WAV file, not raw 16 kHz mono s16le PCM")
        total += len(data)
        data, leftover = leftover + data, b""
        if len(data) % 2:
          data, leftover = data[:-1], data[-1:]
        if data:
          self._queue.put((np.frombuffer(data, "<i2"), self.clock()))
      if leftover:
        raise audio.AudioError(f"{self.name}: {total} bytes is not whole 16-bit samples "
                               "(expected 16 kHz mono s16le PCM)")
      self._queue.put((None, self.clock()))
    except Exception as e:  # pylint: disable=broad-except  (raised by poll)
      self._queue.put((e, self.clock()))

  def poll(self) -> list[tuple[Array, float]]:
    if self._error is not None:
      raise self._error
    items, self._waiting = self._waiting, []
    while True:
      try:
        items.append(self._queue.get_nowait())
      except queue.Empty:
        break
    pieces = []
    for item, arrival in items:
      if isinstance(item, Exception):
        self._error = item
        break
      if item is None:
        self.ended = True
        continue
      pieces.append((item, arrival))
      self._pieces.append(pcm_to_float(item))
      self.last_arrival = arrival
    return pieces

  def wait(self) -> None:
    """Blocks until the next piece (or the end) is read."""
    if not self.ended and self._error is None:
      self._waiting.append(self._queue.get())

  def received(self) -> Array:
    return np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)


def run(stream: LipsyncStream, feed, written: list[tuple[int, float, float]] | None = None
        ) -> Iterator[Array]:
  """Drives `stream` from `feed` (`ArrayFeed`, `PcmReaderFeed`): yields the frames in
  order as the audio allows, taking in new audio between generator calls.

  A frame counts as written when the consumer asks for the next one; `written` then
  gets (frame index, arrival of its audio, that time), clock seconds.
  """
  while not stream.done:
    for pcm, arrival in feed.poll():
      stream.push(pcm, arrival)
    if feed.ended and not stream.finished:
      stream.finish(feed.last_arrival)
    if not stream.pending:
      if not stream.done:
        feed.wait()
      continue
    for frame in stream.step():
      yield frame.image
      if written is not None:
        written.append((frame.index, frame.arrival, stream.clock()))


@dataclasses.dataclass(frozen=True)
class StreamStats:
  """sustained_fps: (frames - 1) / (last write - first write); latency_ms: p50, p95, max
  of (write - arrival of the frame's audio) over the frames."""
  frames: int
  sustained_fps: float
  latency_ms: tuple[float, float, float]

  def lines(self) -> str:
    """The two lines tools/stream.py ends with."""
    p50, p95, worst = self.latency_ms
    return (f"sustained fps: {self.sustained_fps:.1f}\n"
            f"latency ms p50/p95/max: {p50:.0f}/{p95:.0f}/{worst:.0f}")


def stream_stats(written: list[tuple[int, float, float]]) -> StreamStats:
  """The `StreamStats` of `run`'s `written` records (at least one)."""
  arrivals = np.array([a for _, a, _ in written])
  times = np.array([t for _, _, t in written])
  span = times[-1] - times[0]
  fps = (len(times) - 1) / span if span > 0 else 0.0
  latency = 1000 * (times - arrivals)
  return StreamStats(len(written), fps,
                     tuple(float(np.percentile(latency, q)) for q in (50, 95, 100)))
