"""Turns a dataset copy into TFDS array_record records, without TensorFlow.

  python -m affect_jax.prepare --dataset=synthetic_faces --data_dir=DIR
  python -m affect_jax.prepare --dataset=NAME --manual_dir=YOUR_COPY \
      --data_dir=DIR   # NAME: realeyes, recola (see tfds_builders/)

(The `tfds build` CLI imports TensorFlow; this goes through the TFDS Python
API instead.) `--dataset` takes a builder name, optionally with its config
(`synthetic_faces/tiny`).
"""

import os
import sys
import time

from absl import app
from absl import flags

from affect_jax.errors import AffectJaxError

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset', None, 'Builder name, e.g. synthetic_faces.')
flags.DEFINE_string('manual_dir', None,
                    'Folder with your copy of the dataset in its owners\' '
                    'layout (DATA_FORMATS.md); not needed for synthetic_faces.')
flags.DEFINE_string('data_dir', None,
                    'Where to write records (default $TFDS_DATA_DIR or '
                    '~/tensorflow_datasets).')
flags.mark_flag_as_required('dataset')


def available() -> list[str]:
  import tfds_builders  # pylint: disable=g-import-not-at-top
  return tfds_builders.register_all()


def prepare(dataset: str, data_dir: str | None, manual_dir: str | None):
  """Builds `dataset` (name[/config]) into `data_dir`; returns the builder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  names = available()
  name = dataset.split('/')[0]
  if name not in names:
    raise AffectJaxError(
        f'No builder for dataset {name!r} yet; available: {names}. The '
        'builders for aff_wild2, afew_va, afew, affectnet and frame_list '
        'are being added (issue #5).')
  data_dir = os.path.expanduser(data_dir or os.environ.get('TFDS_DATA_DIR')
                                or '~/tensorflow_datasets')
  builder = tfds.builder(dataset, data_dir=data_dir)
  config = None
  if manual_dir:
    if not os.path.isdir(manual_dir):
      raise AffectJaxError(
          f'--manual_dir={manual_dir!r} is not a folder; point it at your '
          f'copy of {name} in the layout of DATA_FORMATS.md.')
    config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  t0 = time.time()
  builder.download_and_prepare(download_config=config)
  print(f'Prepared {builder.info.full_name} in {builder.data_dir} '
        f'({time.time() - t0:.1f}s): ' + ', '.join(
            f'{s}={v.num_examples}' for s, v in builder.info.splits.items()))
  return builder


def main(argv):
  del argv
  try:
    prepare(FLAGS.dataset, FLAGS.data_dir, FLAGS.manual_dir)
  except AffectJaxError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
