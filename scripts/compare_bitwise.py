"""Are two runs of the same command bitwise the same? (docs/cluster.md)

  python scripts/compare_bitwise.py WORKDIR_A WORKDIR_B [DATA_DIR_A DATA_DIR_B]

Compares, for every stage the two workdirs share: each train stage's logged
metric values (speed and time columns left out) and final train loss, the
variables of its best checkpoint array by array, and the test and
postprocess stages' `results.json` and prediction CSVs byte for byte. With
two TFDS data dirs it also compares the prepared records once parsed (the
`array_record` files themselves differ between builds of the same data: the
order in which a record's features are serialised is not fixed).

Exits 0 when everything compared is identical, 1 otherwise.
"""

import csv
import filecmp
import hashlib
import os
import sys

import numpy as np


def _metrics(path):
  out = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      name = row['name']
      if 'per_sec' in name or 'time' in name or name.endswith('_s'):
        continue
      out[(int(row['step']), name)] = row['value']
  return out


def _compare_train(a, b, stage):
  import jax  # pylint: disable=g-import-not-at-top
  from affect_jax import checkpointing  # pylint: disable=g-import-not-at-top
  same = True
  ma = _metrics(os.path.join(a, stage, 'metrics.csv'))
  mb = _metrics(os.path.join(b, stage, 'metrics.csv'))
  diff = sorted(k for k in ma.keys() | mb.keys() if ma.get(k) != mb.get(k))
  losses = sorted(k for k in ma if k[1] == 'train/loss')
  line = f'{stage}: {len(ma)} logged values, {len(diff)} differ'
  if diff:
    k = diff[0]
    line += f' (first: step {k[0]} {k[1]} {ma.get(k)} vs {mb.get(k)})'
    same = False
  if losses:
    k = losses[-1]
    line += f'; final train loss (step {k[0]}) {ma[k]} vs {mb.get(k)}'
  print(line)
  va, _ = checkpointing.restore_best_variables(
      os.path.join(a, stage, 'checkpoints'))
  vb, _ = checkpointing.restore_best_variables(
      os.path.join(b, stage, 'checkpoints'))
  la = jax.tree_util.tree_leaves_with_path(va)
  lb = jax.tree.leaves(vb)
  equal, worst, where = 0, 0.0, ''
  for (path, x), y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    if x.shape == y.shape and x.tobytes() == y.tobytes():
      equal += 1
      continue
    rel = float(np.max(np.abs(x.astype(np.float64) - y))
                / (np.max(np.abs(x)) + 1e-30))
    if rel > worst:
      worst, where = rel, jax.tree_util.keystr(path)
  same &= equal == len(la) == len(lb)
  line = f'  best checkpoint: {equal}/{len(la)} arrays bitwise equal'
  if worst:
    line += f', largest relative difference {worst:.3g} in {where}'
  print(line)
  return same


def _compare_files(a, b, stage):
  results, csvs, differ = True, 0, 0
  for root, _, files in os.walk(os.path.join(a, stage)):
    for name in sorted(files):
      if not (name == 'results.json' or name.endswith('.csv')):
        continue
      pa = os.path.join(root, name)
      pb = os.path.join(b, os.path.relpath(pa, a))
      ok = os.path.exists(pb) and filecmp.cmp(pa, pb, shallow=False)
      if name == 'results.json':
        results = ok
      else:
        csvs += 1
        differ += not ok
  print(f'{stage}: results.json {"identical" if results else "DIFFERS"}; '
        f'{differ} of {csvs} prediction CSVs differ')
  return results and not differ


def _records(path):
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
  reader = array_record_module.ArrayRecordReader(path)
  out = []
  for raw in reader.read_all():
    example = tf_example_pb2.Example.FromString(raw)
    items = sorted((k, v.SerializeToString())
                   for k, v in example.features.feature.items())
    out.append(hashlib.sha256(repr(items).encode()).hexdigest())
  reader.close()
  return out


def _compare_data(da, db):
  same = True
  for root, _, files in os.walk(da):
    for name in sorted(files):
      if '.array_record' not in name:
        continue
      pa = os.path.join(root, name)
      ra, rb = _records(pa), _records(os.path.join(db, os.path.relpath(pa, da)))
      ok = ra == rb
      same &= ok
      print(f'{os.path.relpath(pa, da)}: {len(ra)} records, '
            f'{"identical" if ok else "DIFFER"} once parsed')
  return same


def main(argv):
  if len(argv) not in (3, 5):
    sys.exit(__doc__)
  a, b = argv[1], argv[2]
  same = True
  order = ['pretrain', 'finetune', 'train', 'test', 'postprocess']
  for stage in sorted(os.listdir(a), key=lambda n: (
      order.index(n) if n in order else len(order), n)):
    if not os.path.isdir(os.path.join(b, stage)):
      continue
    if os.path.exists(os.path.join(a, stage, 'metrics.csv')):
      same &= _compare_train(a, b, stage)
    elif os.path.exists(os.path.join(a, stage, 'results.json')):
      same &= _compare_files(a, b, stage)
  if len(argv) == 5:
    same &= _compare_data(argv[3], argv[4])
  print('bitwise identical' if same else 'NOT bitwise identical')
  return 0 if same else 1


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  sys.exit(main(sys.argv))
