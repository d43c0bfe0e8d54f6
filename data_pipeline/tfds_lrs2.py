r"""TFDS dataset builder `lrs2_lipsync`: LRS2 (manual download) -> records via TFDS.

For users of the TFDS ecosystem. It runs the preprocessing job's per-video
function (`data_pipeline.preprocess.process_video`) and stores the same fields
as `lipsync_jax.records`, in TFDS's own ArrayRecord files:

  tfds build data_pipeline/tfds_lrs2.py --manual_dir=/data/lrs2 \
      --file_format=array_record --config=crop96
  source = tfds.data_source("lrs2_lipsync/crop96", split="train")  # Grain-ready

`manual_dir` is an LRS2 download (`train.txt`, `val.txt`, `test.txt`, `main/`)
or any folder of videos (all in split "train"). Writing ArrayRecord and reading
with `as_data_source` need no TensorFlow (the JPEG crops reach TFDS already
encoded); TFDS's tfrecord format, `as_dataset` and the `tfds` command line
(tensorflow-datasets 4.9.10 imports TensorFlow at start) do. Without
TensorFlow, build from Python:

  tfds_lrs2.Lrs2Lipsync(config="crop96", file_format="array_record")
      .download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir="/data/lrs2"))

Bad inputs are skipped with a logged reason, as in the job. Needs
`tensorflow-datasets`.
"""

import dataclasses

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import preprocess
from lipsync_jax import records


@dataclasses.dataclass
class Lrs2LipsyncConfig(tfds.core.BuilderConfig):
  crop_size: int = 96


class Lrs2Lipsync(tfds.core.GeneratorBasedBuilder):
  """Face crops (JPEG), mel spectrogram, boxes and fps per LRS2 utterance."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      Lrs2LipsyncConfig(name=f"crop{size}", crop_size=size,
                        description=f"{size} x {size} face crops")
      for size in (96, 192, 256)]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download LRS2 (BBC licence: https://www.robots.ox.ac.uk/~vgg/data/"
      "lip_reading/lrs2.html) and pass its folder (train.txt, val.txt, "
      "test.txt, main/) as --manual_dir; any folder of videos also works.")

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.crop_size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "clip_id": tfds.features.Text(),
            "fps": tfds.features.Scalar(np.float32),
            "frames": tfds.features.Sequence(tfds.features.Image(
                shape=(size, size, 3), encoding_format="jpeg")),
            "mel": tfds.features.Tensor(
                shape=(records.NUM_MELS, None), dtype=np.float32,
                encoding=tfds.features.Encoding.ZLIB),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.int32),
        }),
        supervised_keys=None,
        homepage="https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs2.html")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    tasks = preprocess.find_inputs(dl_manager.manual_dir)
    splits = sorted({task.split for task in tasks})
    return {split or "train": self._generate_examples(
        [task for task in tasks if task.split == split]) for split in splits}

  def _generate_examples(self, tasks: list[preprocess.VideoTask]):
    config = preprocess.PreprocessConfig(
        crop_size=self.builder_config.crop_size)
    for task in tasks:
      result = preprocess.process_video(task, config)
      if result.record is None:
        logging.warning("lrs2_lipsync: skipped %s", result.skip_reason)
        continue
      record = records.decode_record(result.record)
      yield task.clip_id, {
          "clip_id": record["clip_id"],
          "fps": np.float32(record["fps"]),
          "frames": record["frames"],
          "mel": record["mel"],
          "boxes": record["boxes"],
      }

