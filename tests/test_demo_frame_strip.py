"""The demo's frame strip (demo/pipeline.py): held-out frames, reference / generated /
ground truth."""

import numpy as np

from demo import pipeline


def test_strip_picks_spread_frames_with_their_reference_and_output():
  rng = np.random.default_rng(0)
  clips = [(rng.random((n, 96, 96, 3), np.float32), None, 25.0, None) for n in (10, 20)]
  generated = [rng.random(c[0].shape, np.float32) for c in clips]
  picked = pipeline.strip_frames(clips, generated, count=6)
  assert len(picked) == 6
  found = []
  for reference, output, truth in picked:
    (index, frame), = [(i, f) for i, c in enumerate(clips) for f in range(len(c[0]))
                       if np.array_equal(c[0][f], truth)]
    n = len(clips[index][0])
    np.testing.assert_array_equal(reference, clips[index][0][(frame + n // 2) % n])
    np.testing.assert_array_equal(output, generated[index][frame])
    found.append((index, frame))
  assert len(set(found)) == 6 and {i for i, _ in found} == {0, 1}

  image = pipeline.frame_strip(picked, label_width=84, gap=2)
  assert image.size == (84 + 6 * 98, 3 * 98 - 2) and image.mode == "RGB"
  pixels = np.asarray(image)
  for row in range(3):
    np.testing.assert_array_equal(
        pixels[row * 98:row * 98 + 96, 84 + 98:84 + 98 + 96],
        np.clip(picked[1][row] * 255 + 0.5, 0, 255).astype(np.uint8))
