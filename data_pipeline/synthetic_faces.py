"""Vectorised drawing of the synthetic faces of `data_pipeline.synthetic`.

A head (shoulders, neck, hair, ears, face, eyes, brows, nose) is painted once per
clip on a premultiplied RGBA layer a little larger than the frame, in an eyes-open
and an eyes-closed version; each frame composites it over a gradient background at
the head's position (slow drift plus jitter, whole pixels), then redraws the mouth
window from the per-frame mouth parameters. Shapes are anti-aliased masks computed
on coordinate grids with numpy; the mouth of all frames is drawn in one batch.
"""

import numpy as np

_SKIN_TONES = np.array([(0.96, 0.80, 0.69), (0.80, 0.60, 0.45), (0.40, 0.26, 0.18)])
_HAIR_COLOURS = np.array([(0.08, 0.06, 0.05), (0.25, 0.15, 0.08), (0.45, 0.30, 0.15),
                          (0.85, 0.72, 0.45), (0.60, 0.25, 0.10), (0.70, 0.70, 0.70)])
_IRIS_COLOURS = np.array([(0.35, 0.20, 0.10), (0.30, 0.50, 0.70), (0.30, 0.50, 0.30),
                          (0.15, 0.10, 0.08)])
_MOUTH_INTERIOR = np.array((0.22, 0.04, 0.07))
_TEETH = np.array((0.93, 0.92, 0.86))
_EYE_WHITE = np.array((0.94, 0.94, 0.92))


def ellipse_alpha(xx, yy, cx, cy, rx, ry, power: float = 2.0) -> np.ndarray:
  """Anti-aliased coverage in [0, 1] of the superellipse |dx/rx|^p + |dy/ry|^p <= 1.

  Arguments broadcast (e.g. grids (1, H, W) with per-frame parameters (T, 1, 1)).
  The edge is about one pixel soft; shapes thinner than a pixel fade out.
  """
  rx, ry = np.maximum(rx, 1e-3), np.maximum(ry, 1e-3)
  if power == 2.0:
    radius = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
  else:
    radius = (np.abs((xx - cx) / rx) ** power + np.abs((yy - cy) / ry) ** power) ** (1 / power)
  thickness = np.minimum(rx, ry)
  return np.clip((1 - radius) * thickness + 0.5, 0, 1) * np.clip(2 * thickness, 0, 1)


def below(yy, y_limit) -> np.ndarray:
  """Soft mask of yy < y_limit (one pixel ramp)."""
  return np.clip(y_limit - yy + 0.5, 0, 1)


def paint(premultiplied: np.ndarray, alpha: np.ndarray, colour, coverage) -> None:
  """Paints `colour` with `coverage` over a premultiplied RGB + alpha layer, in place."""
  coverage = np.asarray(coverage)
  premultiplied *= 1 - coverage[..., None]
  premultiplied += np.asarray(colour) * coverage[..., None]
  alpha *= 1 - coverage
  alpha += coverage


def _pick(rng, palette, jitter=0.03):
  return np.clip(palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3), 0, 1)


def _skin_tone(rng):
  t = rng.uniform(0, 2)
  low = int(min(t, 1.999))
  base = _SKIN_TONES[low] * (1 - (t - low)) + _SKIN_TONES[low + 1] * (t - low)
  return np.clip(base + rng.uniform(-0.03, 0.03, 3), 0, 1)


def _head_geometry(rng, frame_size, layer_size):
  s = frame_size
  g = dict(cx=layer_size / 2 + rng.uniform(-0.03, 0.03) * s,
           cy=layer_size / 2 + rng.uniform(0.0, 0.04) * s,
           rx=rng.uniform(0.30, 0.35) * s, ry=rng.uniform(0.37, 0.41) * s,
           power=rng.uniform(2.0, 2.8))
  g["mouth_y"] = g["cy"] + rng.uniform(0.46, 0.54) * g["ry"]
  g["mouth_w"] = rng.uniform(0.27, 0.34) * g["rx"]
  g["mouth_h"] = 0.7 * g["mouth_w"]
  g["lip"] = rng.uniform(0.18, 0.28) * g["mouth_w"]
  return g


def _paint_head(rng, g, skin, hair, layer_size):
  """Premultiplied RGB (L, L, 3) and alpha (L, L) of the head without eyes and mouth."""
  yy, xx = np.mgrid[0:layer_size, 0:layer_size] + 0.5
  rgb, alpha = np.zeros((layer_size, layer_size, 3)), np.zeros((layer_size, layer_size))
  cx, cy, rx, ry = g["cx"], g["cy"], g["rx"], g["ry"]
  paint(rgb, alpha, rng.uniform(0.1, 0.9, 3),
        ellipse_alpha(xx, yy, cx, cy + 1.72 * ry, 2.0 * rx, 0.62 * ry))
  paint(rgb, alpha, skin * 0.82, ellipse_alpha(xx, yy, cx, cy + 0.95 * ry, 0.42 * rx,
                                               0.45 * ry, power=4.0))
  style = rng.integers(3)  # 0 bald, 1 short, 2 long
  if style == 2:
    paint(rgb, alpha, hair, ellipse_alpha(xx, yy, cx, cy + 0.05 * ry, 1.22 * rx, 1.12 * ry,
                                          power=2.4) * below(yy, cy + rng.uniform(0.3, 0.9) * ry))
  for side in (-1, 1):
    paint(rgb, alpha, skin * 0.9,
          ellipse_alpha(xx, yy, cx + side * 0.97 * rx, cy + 0.05 * ry, 0.16 * rx, 0.24 * ry))
  light_x, light_y = cx + rng.uniform(-0.4, 0.4) * rx, cy - 0.3 * ry
  falloff = ((xx - light_x) / (1.3 * rx)) ** 2 + ((yy - light_y) / (1.3 * ry)) ** 2
  shaded_skin = skin * (1 - 0.22 * np.clip(falloff, 0, 1))[..., None]
  paint(rgb, alpha, shaded_skin, ellipse_alpha(xx, yy, cx, cy, rx, ry, power=g["power"]))
  if style != 0:
    hairline = cy - rng.uniform(0.35, 0.6) * ry
    paint(rgb, alpha, hair, ellipse_alpha(xx, yy, cx, cy - 0.42 * ry, 1.06 * rx, 0.68 * ry)
          * below(yy, hairline))
  nose_x = cx + rng.uniform(-0.04, 0.04) * rx
  paint(rgb, alpha, skin * 0.8,
        0.5 * ellipse_alpha(xx, yy, nose_x, cy + 0.2 * ry, 0.09 * rx, 0.2 * ry))
  for side in (-1, 1):
    paint(rgb, alpha, skin * 0.45, 0.6 * ellipse_alpha(xx, yy, nose_x + side * 0.07 * rx,
                                                       cy + 0.3 * ry, 0.045 * rx, 0.03 * ry))
  return rgb, alpha


def _paint_eyes(rng, g, skin, hair, layer_size, head):
  """(eyes open, eyes closed) copies of the head layer, with brows."""
  yy, xx = np.mgrid[0:layer_size, 0:layer_size] + 0.5
  cx, cy, rx, ry = g["cx"], g["cy"], g["rx"], g["ry"]
  eye_y, spacing = cy - rng.uniform(0.08, 0.2) * ry, rng.uniform(0.36, 0.46) * rx
  ex = rng.uniform(0.15, 0.2) * rx
  ey = ex * rng.uniform(0.45, 0.6)
  gaze_x, gaze_y = rng.uniform(-0.25, 0.25) * ex, rng.uniform(-0.15, 0.15) * ey
  iris = _pick(rng, _IRIS_COLOURS)
  brow_lift, brow_w = rng.uniform(1.6, 2.4) * ey, rng.uniform(1.0, 1.25) * ex
  brow_h = max(1.0, rng.uniform(0.15, 0.3) * ey)
  layers = []
  for closed in (False, True):
    rgb, alpha = head[0].copy(), head[1].copy()
    for side in (-1, 1):
      x = cx + side * spacing
      if closed:
        paint(rgb, alpha, skin * 0.93, ellipse_alpha(xx, yy, x, eye_y, ex, ey))
        paint(rgb, alpha, hair * 0.5, ellipse_alpha(xx, yy, x, eye_y + 0.3 * ey, ex, 0.6))
      else:
        paint(rgb, alpha, _EYE_WHITE, ellipse_alpha(xx, yy, x, eye_y, ex, ey))
        paint(rgb, alpha, iris, ellipse_alpha(xx, yy, x + gaze_x, eye_y + gaze_y, 0.9 * ey,
                                              0.9 * ey) * ellipse_alpha(xx, yy, x, eye_y, ex, ey))
        paint(rgb, alpha, (0.02, 0.02, 0.02),
              ellipse_alpha(xx, yy, x + gaze_x, eye_y + gaze_y, 0.4 * ey, 0.4 * ey))
      paint(rgb, alpha, hair * 0.7,
            ellipse_alpha(xx, yy, x, eye_y - brow_lift, brow_w, brow_h))
    layers.append((rgb, alpha))
  return layers


def _paint_mouths(g, lips, mouth, base_rgb, base_alpha, top, left):
  """Premultiplied RGB (T, h, w, 3) and alpha (T, h, w) of the mouth window per frame."""
  height, width = base_alpha.shape
  yy, xx = np.mgrid[0:height, 0:width] + 0.5
  yy, xx = (yy + top - g["mouth_y"])[None], (xx + left - g["cx"])[None]
  opening, spread, roundness = (mouth[:, k, None, None].astype(np.float64) for k in range(3))
  w, h, lip = g["mouth_w"] * spread, g["mouth_h"] * opening, g["lip"]
  rgb = np.repeat(base_rgb[None], len(mouth), axis=0)
  alpha = np.repeat(base_alpha[None], len(mouth), axis=0)
  paint(rgb, alpha, lips, ellipse_alpha(xx, yy, 0, 0, w + lip * (1 + 0.3 * roundness),
                                        h + lip * (0.8 + 0.8 * roundness)))
  seam = np.clip(1 - np.abs(yy) / 0.8, 0, 1) * ellipse_alpha(xx, yy, 0, 0, w, 2.0)
  paint(rgb, alpha, lips * 0.45, 0.8 * seam)
  interior = ellipse_alpha(xx, yy, 0, 0, 0.92 * w, h)
  paint(rgb, alpha, _MOUTH_INTERIOR, interior)
  teeth_visible = np.clip(1 - 1.6 * roundness, 0, 1)
  teeth_band = np.minimum(1.1 * h, 0.5 * g["mouth_h"])
  upper = below(yy, -h + teeth_band)
  lower = 1 - below(yy, h - 0.3 * teeth_band)
  paint(rgb, alpha, _TEETH, interior * teeth_visible * np.maximum(upper, lower))
  return rgb, alpha


def _head_motion(rng, num_frames, frame_size, margin):
  """int (T,) horizontal and vertical head offsets in pixels: drift plus jitter."""
  times = np.arange(num_frames) / 25.0
  offsets = []
  for amplitude in (0.06 * frame_size, 0.04 * frame_size):
    drift = amplitude * rng.uniform(0.3, 1.0) * np.sin(
        2 * np.pi * times / rng.uniform(2.0, 6.0) + rng.uniform(0, 2 * np.pi))
    jitter = np.convolve(rng.normal(0, 0.8, num_frames + 2), np.ones(3) / 3, mode="valid")
    offsets.append(np.clip(np.round(drift + jitter), 1 - margin, margin - 1).astype(int))
  return offsets


def _background(rng, frame_size):
  yy, xx = np.mgrid[0:frame_size, 0:frame_size] + 0.5
  angle = rng.uniform(0, 2 * np.pi)
  ramp = ((xx - frame_size / 2) * np.cos(angle) + (yy - frame_size / 2) * np.sin(angle))
  ramp = np.clip(ramp / frame_size + 0.5, 0, 1)[..., None]
  rgb = rng.uniform(0.1, 0.95, 3) * (1 - ramp) + rng.uniform(0.1, 0.95, 3) * ramp
  alpha = np.zeros(rgb.shape[:2])
  blob = ellipse_alpha(xx, yy, *rng.uniform(0, frame_size, 2), *rng.uniform(0.1, 0.3, 2)
                       * frame_size)
  paint(rgb, alpha, rng.uniform(0.1, 0.95, 3), 0.5 * blob)
  return rgb


def render(rng: np.random.Generator, mouth: np.ndarray,
           frame_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws a random face saying `mouth`.

  Args:
    rng: source of every random choice (face, colours, motion, blinks).
    mouth: float (T, 3) per-frame (open, width, round) as in `synthetic.MOUTH_SHAPES`.
    frame_size: side of the square frames in pixels.

  Returns:
    frames uint8 (T, S, S, 3) RGB and face boxes int32 (T, 4) x1, y1, x2, y2.
  """
  num_frames = len(mouth)
  margin = int(0.1 * frame_size) + 2
  layer_size = frame_size + 2 * margin
  g = _head_geometry(rng, frame_size, layer_size)
  skin, hair = _skin_tone(rng), _pick(rng, _HAIR_COLOURS)
  redness = rng.uniform(0.35, 0.65)
  lips = 0.9 * np.clip(skin * (1 - redness) + np.array((0.75, 0.3, 0.35)) * redness, 0, 1)
  head = _paint_head(rng, g, skin, hair, layer_size)
  layers = _paint_eyes(rng, g, skin, hair, layer_size, head)
  blinking = np.zeros(num_frames, bool)
  for start in rng.integers(0, num_frames, rng.poisson(0.3 * num_frames / 25)):
    blinking[start:start + 2] = True
  dx, dy = _head_motion(rng, num_frames, frame_size, margin)
  background = _background(rng, frame_size)

  half_w = int(g["mouth_w"] * 1.2 + g["lip"] * 1.3 + 3)
  half_h = int(g["mouth_h"] + g["lip"] * 1.6 + 3)
  top, left = int(g["mouth_y"]) - half_h, int(g["cx"]) - half_w
  window = np.s_[top:top + 2 * half_h, left:left + 2 * half_w]
  mouth_rgb, mouth_alpha = _paint_mouths(g, lips, mouth, layers[0][0][window],
                                         layers[0][1][window], top, left)

  frames = np.empty((num_frames, frame_size, frame_size, 3), np.uint8)
  for t in range(num_frames):
    rgb, alpha = layers[int(blinking[t])]
    rgb, alpha = rgb.copy(), alpha.copy()
    rgb[window], alpha[window] = mouth_rgb[t], mouth_alpha[t]
    view = np.s_[margin - dy[t]:margin - dy[t] + frame_size,
                 margin - dx[t]:margin - dx[t] + frame_size]
    composite = background * (1 - alpha[view][..., None]) + rgb[view]
    frames[t] = np.clip(np.round(composite * 255), 0, 255).astype(np.uint8)

  x1, x2 = g["cx"] - g["rx"] - margin + dx, g["cx"] + g["rx"] - margin + dx
  y1, y2 = g["cy"] - g["ry"] - margin + dy, g["cy"] + g["ry"] - margin + dy
  boxes = np.stack([np.floor(x1), np.floor(y1), np.ceil(x2), np.ceil(y2)], axis=1)
  return frames, np.clip(boxes, 0, frame_size).astype(np.int32)
