"""Runs an experiment: `python -m affect_jax.main --config=... --workdir=...`.

Example (the quick start, the RealEyes pretrain -> fine-tune chain on the
embedded synthetic dataset):

  python -m affect_jax.main --config=configs/realeyes.py:synthetic \
      --workdir=/tmp/realeyes_synthetic

Rerunning the same command resumes an interrupted run. SIGTERM / SIGINT
save the running stage's `latest` checkpoint at the current step and exit
with 143 / 130 (128 + the signal), which schedulers read as "stopped".
Config fields can be overridden on the command line, e.g.
`--config.num_train_steps=100`; `--config=FILE:list` lists a file's
variants. Under SLURM (`srun`, several tasks) the
processes find each other by themselves; elsewhere pass
`--coordinator_address/--num_processes/--process_id` (docs/cluster.md).
"""

import os
import sys

from affect_jax import hugepages

if __name__ == '__main__':  # First: the process may start again with glibc's
  hugepages.use_huge_pages()  # huge-page setting (affect_jax.hugepages).

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from affect_jax import cli
from affect_jax import distributed
from affect_jax import experiment

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs, results.')
flags.DEFINE_enum('distributed', 'auto', distributed.MODES,
                  'Multi-process start (affect_jax.distributed): auto = the '
                  'flags below, else a SLURM srun step of several tasks or a '
                  'TPU slice\'s worker list; on = jax.distributed.initialize '
                  'with JAX\'s own detection (TPU VM pods); off = never.')
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0 for multi-process runs '
                    '(jax.distributed); with --num_processes and '
                    '--process_id. Not needed under SLURM.')
flags.DEFINE_integer('num_processes', None,
                     'Processes of a multi-process run.')
flags.DEFINE_integer('process_id', None,
                     'This process in a multi-process run, 0-based.')
config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/realeyes.py:synthetic',
    lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  found = distributed.initialize(FLAGS.coordinator_address,
                                 FLAGS.num_processes, FLAGS.process_id,
                                 FLAGS.distributed)
  if found:
    print(f'jax.distributed ({found}): process {jax.process_index()} of '
          f'{jax.process_count()}, {jax.local_device_count()} of '
          f'{jax.device_count()} devices here.', flush=True)
    if jax.process_index():
      # Only process 0 logs (errors still reach every process's stderr).
      sys.stdout = open(os.devnull, 'w')
  experiment.run(FLAGS.config, FLAGS.workdir)

if __name__ == '__main__':
  cli.run(main, config_flag='config')
