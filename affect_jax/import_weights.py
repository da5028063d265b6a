"""Imports published weights: a torch trunk, or a released Aff-Wild TF1 model.

  python -m affect_jax.import_weights --arch=resnet50 \
      --torch_checkpoint=resnet50-0676ba61.pth --output=/tmp/imagenet_resnet50

  python -m affect_jax.import_weights --from=affwild-tf1 \
      --network=affwildnet_vggface|affwildnet_resnet|vggface_4096|vggface_2000 \
      --checkpoint=PATH/model.ckpt-N --output=DIR

--from=torch (the default) converts a PyTorch state dict into an Orbax
checkpoint of a model trunk (below). --from=affwild-tf1 converts one of the
four TensorFlow 1.8 checkpoints kollias2019's authors released
(github.com/dkollias/Aff-Wild-models) into a whole, self-contained model
folder, as `python -m affect_jax.export` writes one:

  DIR/best/<step>/...   Orbax: the variables and the model record
  DIR/model.json        the record, readable: task 'va' (outputs arousal,
                        valence), the network (`models.tf1_import`), input
                        96 px, (x - 128) / 128 ('symmetric'), window 80, the
                        face-crop settings predict uses, where it came from

which `predict --model=DIR`, `export --workdir=DIR` and a test stage's
`checkpoint_from=DIR` take as they take a trained run. The checkpoint is
read by `models.tf_bundle` (TensorFlow's bundle format, decoded without
TensorFlow); docs/models.md has the download, the licence (research use, no
redistribution) and how the face crops differ from the authors'.

`--arch` is resnet50, vgg16, vgg_face (a VGG-Face state dict in torchvision's
VGG-16 naming) or alexnet. The output folder holds one Orbax step with
`variables = {'params': {'trunk': ...}, 'batch_stats': {'trunk': ...}}`
(the classifier dropped) and a JSON `meta`, which is what
`checkpointing.restore_best_variables` reads; a config then initialises the
trunk of any model built on that arch with

  config.<stage>.init_from = '/tmp/imagenet_resnet50'
  config.<stage>.init_keep = 'trunk'

Nothing is downloaded: docs/models.md says where the published files are.
Needs the optional torch extra (`pip install -e '.[torch]'`) to read `.pth`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

from absl import app
from absl import flags
from absl import logging
import orbax.checkpoint as ocp

from affect_jax import cli
from affect_jax.errors import AffectJaxError
from affect_jax.models import tf1_import
from affect_jax.models import torch_import

FLAGS = flags.FLAGS


def read_torch_state_dict(path: str) -> dict[str, Any]:
  """torch.load(path, weights_only=True), with user-facing errors."""
  if not os.path.isfile(path):
    raise AffectJaxError(
        f'--torch_checkpoint {path!r} does not exist; download the .pth file '
        'first (docs/models.md lists where they are published).')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise AffectJaxError(
        f'Reading {path!r} needs PyTorch: pip install -e ".[torch]" '
        '(CPU build is enough).') from e
  try:
    # weights_only: a .pth is a pickle; never run code from a downloaded one.
    return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise AffectJaxError(
        f'Cannot read {path!r} as a PyTorch state dict ({type(e).__name__}: '
        f'{str(e)[:200]}); it must be torch.save(model.state_dict(), ...) '
        'output, not a whole pickled model or a truncated download.') from e


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def import_weights(arch: str, torch_checkpoint: str, output: str,
                   state_dict: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes the trunk of `torch_checkpoint` to `output`; returns its meta.

  Args:
    arch: one of `torch_import.TORCH_ARCHS`.
    torch_checkpoint: the .pth file (read unless `state_dict` is given).
    output: folder for the Orbax checkpoint (step 0); must not hold one.
    state_dict: the already loaded dict (the path then only names it).

  Returns:
    The JSON meta stored next to the variables.
  """
  if state_dict is None:
    state_dict = read_torch_state_dict(torch_checkpoint)
  variables = torch_import.load_torch_state_dict(arch, state_dict,
                                                 source=torch_checkpoint)
  trunk = torch_import.trunk_variables(arch, variables)
  build_kwargs = torch_import.build_kwargs_from_state_dict(
      arch, torch_import.normalise_state_dict(state_dict))
  build_kwargs.pop('num_classes', None)
  build_kwargs.pop('fc_hidden', None)
  meta = {
      'arch': arch,
      'source': os.path.abspath(torch_checkpoint),
      'source_sha256': (_sha256(torch_checkpoint)
                        if os.path.isfile(torch_checkpoint) else None),
      'trunk_kwargs': {k: list(v) if isinstance(v, tuple) else v
                       for k, v in build_kwargs.items()},
      'usage': "config.<stage>.init_from=<this folder>, init_keep='trunk'",
  }
  saved = {c: {'trunk': tree} for c, tree in trunk.items() if tree}
  output = os.path.abspath(output)
  mgr = ocp.CheckpointManager(
      output, options=ocp.CheckpointManagerOptions(max_to_keep=1,
                                                   create=True))
  if mgr.latest_step() is not None:
    mgr.close()
    raise AffectJaxError(
        f'--output {output!r} already holds a checkpoint; choose a new '
        'folder or delete it.')
  mgr.save(0, args=ocp.args.Composite(
      variables=ocp.args.StandardSave(saved), meta=ocp.args.JsonSave(meta)))
  mgr.wait_until_finished()
  mgr.close()
  return meta


def import_affwild_tf1(network: str, checkpoint: str, output: str,
                       margin: float = tf1_import.DEFAULT_MARGIN
                       ) -> dict[str, Any]:
  """Writes a released Aff-Wild TF1 model as a model folder; returns its record.

  Args:
    network: one of `tf1_import.NETWORKS`.
    checkpoint: the TF checkpoint prefix (PATH/model.ckpt-N), its .index,
      or a folder with a TF `checkpoint` file.
    output: the model folder to create (must not exist or be empty).
    margin: the face-crop margin recorded for prediction.

  Raises:
    AffectJaxError: output not empty, or the checkpoint missing, damaged or
      not `network`'s (each tensor at fault named).
  """
  import json  # pylint: disable=g-import-not-at-top
  from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from affect_jax import export  # pylint: disable=g-import-not-at-top
  output = os.path.abspath(os.path.expanduser(output))
  if os.path.exists(output) and (not os.path.isdir(output) or
                                 os.listdir(output)):
    raise AffectJaxError(f'--output {output} exists and is not an empty '
                         'folder; pass a new folder.')
  variables, model_cfg, step = tf1_import.load_checkpoint(network, checkpoint)
  prefix = tf1_import.tf_bundle.checkpoint_prefix(checkpoint)
  record = tf1_import.model_record(network, model_cfg, step, prefix, margin)
  record['imported_from']['index_sha256'] = _sha256(prefix + '.index')
  tmp = f'{output.rstrip(os.sep)}.tmp-{os.getpid()}'
  try:
    mgr = ocp.CheckpointManager(
        os.path.join(tmp, 'best'),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    mgr.save(record['step'], args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        meta=ocp.args.JsonSave(record)))
    mgr.wait_until_finished()
    mgr.close()
    with open(os.path.join(tmp, export.MODEL_JSON), 'w') as f:
      json.dump(record, f, indent=2, sort_keys=True)
      f.write('\n')
    if os.path.isdir(output):
      os.rmdir(output)
    os.replace(tmp, output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  checkpointing.load_model(output)  # What predict reads: check it now.
  return record


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  source = FLAGS['from'].value
  needed = (('arch', 'torch_checkpoint', 'output') if source == 'torch'
            else ('network', 'checkpoint', 'output'))
  missing = [f'--{n}' for n in needed if not FLAGS[n].value]
  if missing:
    raise AffectJaxError(f'--from={source} needs {", ".join(missing)} '
                         '(see --help).')
  if source == 'torch':
    import_weights(FLAGS.arch, FLAGS.torch_checkpoint, FLAGS.output)
  else:
    record = import_affwild_tf1(FLAGS.network, FLAGS.checkpoint,
                                FLAGS.output, FLAGS.margin)
  if source == 'torch':
    print(f'Wrote the {FLAGS.arch} trunk to {FLAGS.output}; use it with '
          f"init_from='{FLAGS.output}', init_keep='trunk'.")
  else:
    print(f'Wrote the released {FLAGS.network} (step {record["step"]}) to '
          f'{FLAGS.output}: python -m affect_jax.predict '
          f'--model={FLAGS.output} --input=VIDEO --output=OUT.csv')


def define_flags() -> None:
  """The command's flags (defined only when it runs: no clash on import)."""
  flags.DEFINE_enum('from', 'torch', ['torch', 'affwild-tf1'],
                    'torch: a torchvision-layout .pth trunk (--arch, '
                    '--torch_checkpoint); affwild-tf1: a released Aff-Wild '
                    'TF1 model (--network, --checkpoint).')
  flags.DEFINE_enum('arch', None, list(torch_import.TORCH_ARCHS),
                    'Architecture of the state dict.')
  flags.DEFINE_string('torch_checkpoint', None,
                      'A torch.save()d state dict (.pth), e.g. '
                      'torchvision\'s resnet50-0676ba61.pth.')
  flags.DEFINE_enum('network', None, list(tf1_import.NETWORKS),
                    '--from=affwild-tf1: which released network '
                    '(eval_script.py --network).')
  flags.DEFINE_string('checkpoint', None,
                      '--from=affwild-tf1: the TF checkpoint prefix '
                      'PATH/model.ckpt-N (or its .index, or its folder).')
  flags.DEFINE_float('margin', tf1_import.DEFAULT_MARGIN,
                     '--from=affwild-tf1: face-crop margin predict uses, a '
                     'fraction of the detected box\'s side (docs/models.md).')
  flags.DEFINE_string('output', None, 'Folder to write to: the trunk\'s '
                      'Orbax checkpoint, or the TF1 model\'s model folder.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
