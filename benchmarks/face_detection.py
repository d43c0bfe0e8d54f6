"""Face detection speed (ms/frame) and recall on the photos scikit-image ships.

  python benchmarks/face_detection.py [--repeats=3] [--threads=1]

Speed: the chosen detector (BlazeFace full range with a short-range retry on
frames where it finds nothing; ai-edge-litert) against each model alone,
scikit-image's LBP frontal-face cascade and, when
`opencv-python-headless<5` is installed, OpenCV's Haar cascade; 256 px and
720p frames. The BlazeFace rows run the interpreter one frame at a time; a
second table times the full-range interpreter resized to batches of 1/8/32
(slower per frame on the CPU with ai-edge-litert 2.3, hence one at a time).
The cascades see frames shrunk to 640 px on the long side.
Recall: hand-annotated faces in scikit-image's astronaut and cameraman photos
and its 100 LFW faces (25 px, upscaled x4 into a 200 px frame; hit = detection
centre inside the hand box), false positives on face-free photos and the 100
LFW non-face patches. Results go to stdout as tables.
"""

import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image
import skimage.data

from lipsync_jax import faces

_REPEATS = flags.DEFINE_integer("repeats", 3, "timed passes per row (best is shown)")
_FRAMES = flags.DEFINE_integer("frames", 16, "frames per timed call")
_THREADS = flags.DEFINE_integer("threads", 1, "CPU threads for every detector")

HAND_BOXES = {"astronaut": [(168, 60, 268, 178)], "camera": [(180, 85, 258, 195)]}
FACE_FREE = ["coffee", "rocket", "chelsea", "hubble_deep_field", "coins", "horse",
             "immunohistochemistry"]


def _rgb(image):
  image = np.asarray(image)
  if image.dtype == bool:
    image = image.astype(np.uint8) * 255
  return np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]


def _shrink(frame, max_side=640):
  scale = min(1.0, max_side / max(frame.shape[:2]))
  if scale == 1.0:
    return frame, 1.0
  size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
  return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)), scale


class SkimageLBP:
  """scikit-image's LBP frontal-face cascade, one frame at a time."""

  def __init__(self):
    from skimage.feature import Cascade  # pylint: disable=g-import-not-at-top
    self.cascade = Cascade(skimage.data.lbp_frontal_face_cascade_filename())

  def detect(self, frames):
    from skimage.color import rgb2gray  # pylint: disable=g-import-not-at-top
    out = []
    for frame in frames:
      small, s = _shrink(frame)
      found = self.cascade.detect_multi_scale(
          img=rgb2gray(small), scale_factor=1.2, step_ratio=1, min_size=(24, 24),
          max_size=small.shape[:2], min_neighbor_number=4)
      out.append([(d["c"] / s, d["r"] / s, (d["c"] + d["width"]) / s,
                   (d["r"] + d["height"]) / s, 1.0) for d in found])
    return out


class OpenCVHaar:
  """OpenCV 4.x's default frontal-face Haar cascade, one frame at a time."""

  def __init__(self, threads):
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(threads)
    self.cv2 = cv2
    self.cascade = cv2.CascadeClassifier(
        cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

  def detect(self, frames):
    out = []
    for frame in frames:
      small, s = _shrink(frame)
      gray = self.cv2.cvtColor(np.ascontiguousarray(small), self.cv2.COLOR_RGB2GRAY)
      found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                            minSize=(24, 24))
      out.append([(x / s, y / s, (x + w) / s, (y + h) / s, 1.0) for x, y, w, h in found])
    return out


def _detectors(threads):
  dets = {"blazeface_full+short_fallback (chosen)": lambda: faces.FaceDetector(
              num_threads=threads),
          "blazeface_full_range only": lambda: faces.FaceDetector(
              "full_range", fallback=None, num_threads=threads),
          "blazeface_short_range only": lambda: faces.FaceDetector(
              "short_range", fallback=None, num_threads=threads),
          "skimage_lbp_cascade": SkimageLBP,
          "opencv_haar_cascade": lambda: OpenCVHaar(threads)}
  built = {}
  for name, make in dets.items():
    try:
      built[name] = make()
    except (ImportError, faces.FaceDetectorError) as e:
      print(f"skipping {name}: {e}")
  return built


def _interpreter_batch_rows(threads, repeats):
  """Model-only ms/frame of the full-range interpreter resized to a batch."""
  from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  from lipsync_jax.models import blazeface  # pylint: disable=g-import-not-at-top
  spec = blazeface.MODELS["full_range"]
  interpreter = Interpreter(model_path=blazeface.find_model_file(spec.filename),
                            num_threads=threads)
  index = interpreter.get_input_details()[0]["index"]
  rng = np.random.default_rng(0)
  print(f"\nfull-range interpreter alone, input resized to a batch (best of {repeats})")
  print(f"{'batch':>7s}{'ms/frame':>10s}")
  for batch in (1, 8, 32):
    inputs = rng.uniform(-1, 1, (batch, spec.input_size, spec.input_size, 3)).astype(np.float32)
    interpreter.resize_tensor_input(index, list(inputs.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, inputs)
    interpreter.invoke()
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      interpreter.set_tensor(index, inputs)
      interpreter.invoke()
      best = min(best, time.perf_counter() - start)
    print(f"{batch:>7d}{best / batch * 1e3:>10.2f}")


def _recall_sets():
  lfw = skimage.data.lfw_subset()

  def framed(patch):
    big = Image.fromarray((patch * 255).astype(np.uint8)).resize((100, 100), Image.BICUBIC)
    frame = np.full((200, 200), 128, np.uint8)
    frame[50:150, 50:150] = np.asarray(big)
    return _rgb(frame)

  photos = [(_rgb(getattr(skimage.data, n)()), boxes) for n, boxes in HAND_BOXES.items()]
  return {
      "photos (astronaut, cameraman)": photos,
      "LFW faces x100": [(framed(p), [(50, 50, 150, 150)]) for p in lfw[:100]],
      "face-free photos x7": [(_rgb(getattr(skimage.data, n)()), []) for n in FACE_FREE],
      "LFW non-faces x100": [(framed(p), []) for p in lfw[100:]],
  }


def _score(found, truth):
  hits = total = false_pos = 0
  for dets, boxes in zip(found, truth):
    used = set()
    for b in boxes:
      total += 1
      for j, d in enumerate(dets):
        cx, cy = (d[0] + d[2]) / 2, (d[1] + d[3]) / 2
        if j not in used and b[0] <= cx <= b[2] and b[1] <= cy <= b[3]:
          used.add(j)
          hits += 1
          break
    false_pos += len(dets) - len(used)
  return hits, total, false_pos


def _time_per_frame(detector, frames, repeats):
  detector.detect(frames)  # warm-up (interpreter allocation)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    detector.detect(frames)
    best = min(best, time.perf_counter() - start)
  return best / len(frames) * 1e3


def main(argv):
  del argv
  detectors = _detectors(_THREADS.value)
  astronaut = skimage.data.astronaut()
  sizes = {"256x256": (256, 256), "1280x720": (1280, 720)}
  print(f"\nms/frame over {_FRAMES.value} frames (best of {_REPEATS.value}, "
        f"{_THREADS.value} thread(s))")
  header = f"{'detector':40s}{'frame':>10s}{'ms/frame':>10s}{'x chosen':>10s}"
  print(header + "\n" + "-" * len(header))
  chosen = {}
  for name, det in detectors.items():
    for label, size in sizes.items():
      frame = np.asarray(Image.fromarray(astronaut).resize(size, Image.Resampling.BILINEAR))
      ms = _time_per_frame(det, np.stack([frame] * _FRAMES.value), _REPEATS.value)
      chosen.setdefault(label, ms)
      print(f"{name:40s}{label:>10s}{ms:>10.2f}{ms / chosen[label]:>10.1f}")

  _interpreter_batch_rows(_THREADS.value, _REPEATS.value)

  print("\nrecall (hits/faces) and false positives")
  sets = _recall_sets()
  header = f"{'detector':40s}" + "".join(f"{s:>32s}" for s in sets)
  print(header + "\n" + "-" * len(header))
  for name, det in detectors.items():
    cells = []
    for items in sets.values():
      found = det.detect([frame for frame, _ in items])
      hits, total, false_pos = _score(found, [boxes for _, boxes in items])
      cells.append(f"{hits}/{total} fp={false_pos}" if total else f"fp={false_pos}")
    print(f"{name:40s}" + "".join(f"{c:>32s}" for c in cells))


if __name__ == "__main__":
  app.run(main)
