"""Building a dataset fixture and reading its records, for builder tests."""

import ml_collections
import tensorflow_datasets as tfds

from affect_jax import input_pipeline


def build(builder_cls, config_cls, manual_dir, data_dir, **config):
  """Builds `manual_dir` with test defaults: no detection, 32-pixel crops."""
  options = dict(name='t', detector='none', landmarks='none', image_size=32)
  options.update(config)
  builder = builder_cls(data_dir=str(data_dir), config=config_cls(**options))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def records(builder) -> dict[str, list[dict]]:
  """{split: every record, in stored order}."""
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def load_splits(name: str, data_dir, builder_config: str | None = None,
                splits=None) -> dict:
  """{split: input_pipeline.SplitData} of a prepared dataset (all splits)."""
  cfg = ml_collections.ConfigDict(dict(
      name=name, builder_config=builder_config, data_dir=str(data_dir),
      build_if_missing=False))
  if splits is None:
    splits = input_pipeline.get_builder(cfg).info.splits
  return {s: input_pipeline.load_split(cfg, s) for s in splits}


def cut_after_frames(path, keep: int) -> None:
  """Truncates a video file right after its `keep`-th video packet.

  As an interrupted download or copy usually ends: a clean end of file, so
  a file whose header comes first (faststart .mp4/.mov, .avi) still opens
  and decodes its first `keep` frames.
  """
  import av  # pylint: disable=g-import-not-at-top
  with av.open(str(path)) as container:
    ends = sorted(p.pos + p.size for p in container.demux(video=0)
                  if p.pos is not None and p.pos >= 0 and p.size)
  with open(path, 'rb') as f:
    data = f.read(ends[keep - 1])
  with open(path, 'wb') as f:
    f.write(data)
