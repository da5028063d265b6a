"""A shareable model folder from a training run.

  python -m affect_jax.export --workdir=RUN --output=MODEL_DIR [--chain=FILE]

copies the run's best checkpoint (its last stage with one, or the stage or
checkpoint folder given) into MODEL_DIR:

  MODEL_DIR/best/<step>/...   the Orbax checkpoint: weights + model record
  MODEL_DIR/model.json        the model record, readable: task, outputs,
                              input size, face-crop settings, validation
                              metrics, versions, where it came from
  MODEL_DIR/chain.json        the post-processing chain the run chose on its
                              validation predictions (affect_jax.postprocess,
                              a postprocess stage), where it has one; --chain
                              picks the file where the run has several
                              (`predict --postprocess` applies it)

`python -m affect_jax.predict --model=MODEL_DIR` (and
`inference.Predictor.load`) read the folder as they read the run, and give
the same numbers.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from absl import app
from absl import flags
from absl import logging

from affect_jax import checkpointing
from affect_jax import cli
from affect_jax.errors import AffectJaxError

FLAGS = flags.FLAGS

MODEL_JSON = 'model.json'


def export(workdir: str, output: str, chain: str | None = None
           ) -> dict[str, Any]:
  """Copies the best checkpoint behind `workdir` into the folder `output`.

  With it the run's post-processing chain (`predict.find_chain`), or the
  chain.json `chain` names, as `<output>/chain.json`.

  Returns:
    The model record written to `<output>/model.json`.

  Raises:
    AffectJaxError: no model there (or one of an incompatible format), or
      `output` exists and is not empty.
  """
  from affect_jax import predict  # pylint: disable=g-import-not-at-top
  source = checkpointing.find_checkpoints(predict.check_model_dir(workdir))
  _, meta = checkpointing.load_model(source)  # Refuses other formats.
  if chain:
    if not os.path.isfile(chain):
      raise AffectJaxError(f'--chain {chain} does not exist; pass the '
                           f'{predict.CHAIN_JSON} of the run\'s postprocess '
                           'stage.')
  else:
    chain = predict.find_chain(workdir)
  if chain:  # Checked against the model's outputs before anything is copied.
    predict.load_chain(chain, meta['outputs'])
  if os.path.exists(output) and (not os.path.isdir(output) or
                                 os.listdir(output)):
    raise AffectJaxError(f'--output {output} exists and is not an empty '
                         'folder; pass a new folder.')
  record = dict(meta, exported_from=os.path.abspath(source))
  if chain:
    record['postprocess_chain'] = os.path.abspath(chain)
  tmp = f'{output.rstrip(os.sep)}.tmp-{os.getpid()}'
  try:
    shutil.copytree(os.path.join(source, 'best'), os.path.join(tmp, 'best'))
    with open(os.path.join(tmp, MODEL_JSON), 'w') as f:
      json.dump(record, f, indent=2, sort_keys=True)
      f.write('\n')
    if chain:
      shutil.copyfile(chain, os.path.join(tmp, predict.CHAIN_JSON))
    if os.path.isdir(output):
      os.rmdir(output)
    os.replace(tmp, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if not FLAGS.workdir or not FLAGS.output:
    raise AffectJaxError('--workdir and --output are required (see --help).')
  record = export(FLAGS.workdir, FLAGS.output, FLAGS.chain)
  print(f'{FLAGS.output}: {record["task"]} model ({", ".join(record["outputs"])}'
        f'), step {record["step"]}' + (
            f', post-processing chain from {record["postprocess_chain"]}'
            if 'postprocess_chain' in record else ''))


def define_flags() -> None:
  """The command's flags (defined only when it runs: no clash on import)."""
  flags.DEFINE_string('workdir', None, 'Training workdir, stage folder or '
                      'checkpoint folder to export.')
  flags.DEFINE_string('output', None, 'Model folder to create (must not exist '
                      'or be empty).')
  flags.DEFINE_string('chain', None, 'The post-processing chain.json to carry '
                      '(default: the run\'s, where it has exactly one).')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
