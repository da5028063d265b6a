"""The one prediction path: frames -> per-frame predictions of a model.

`predict_split` turns a prepared split into per-window predictions with the
video, frame index, time and has-face flag of every frame (and its labels
where the split has them). Evaluation during training, the test stage and
the prediction files all consume what it yields; nothing else runs a model
over a split.

`Predictor` is a trained model as its self-contained best checkpoint
describes it (network config, input size and normalisation, task, output
names, face-crop settings): `Predictor.load(path)` needs nothing but that
folder (a workdir, a stage folder or a checkpoint folder).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from affect_jax import checkpointing
from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax import models
from affect_jax import tasks as tasks_lib
from affect_jax.errors import AffectJaxError

# Batch keys the network reads (the rest stay on the host).
MODEL_KEYS = (F.FRAMES, F.MASK, F.LANDMARKS)


@dataclasses.dataclass
class WindowPredictions:
  """Predictions of a batch of windows, host arrays.

  Attributes:
    video_ids: B video id strings.
    frame_index: int [B, T] frame index in the video; -1 at padding.
    time: float [B, T] seconds from the video's start.
    has_face: bool [B, T] whether the builder found a face.
    mask: bool [B, T] real (not padded) frames.
    outputs: float [B, T, K] activated outputs (probabilities for class
      tasks).
    targets: float [B, T, K] labels in output order (NaN = none).
  """
  video_ids: list[str]
  frame_index: np.ndarray
  time: np.ndarray
  has_face: np.ndarray
  mask: np.ndarray
  outputs: np.ndarray
  targets: np.ndarray


def build_model(model_cfg, num_outputs: int):
  """The network of a `config.model` section with a `num_outputs` head."""
  # An unset (None) key takes the network's default (e.g. a config's
  # `width` placeholder: the published width).
  kwargs = {k: v for k, v in dict(model_cfg).items() if v is not None}
  arch = kwargs.pop('arch')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  for key in ('stage_sizes', 'fc_features'):
    if key in kwargs and kwargs[key] is not None:
      kwargs[key] = tuple(kwargs[key])
  return models.build(arch, num_outputs=num_outputs, **kwargs)


def make_mesh(data: int = -1, model: int = 1) -> jax.sharding.Mesh:
  """A (`data`, `model`) mesh over every device of every process.

  Devices are laid out process-major and a process's devices fill whole
  rows of `model` devices, so process p's devices hold rows
  [p * B / P, (p + 1) * B / P) of a global batch, the block
  `input_pipeline.process_batches` gives it: a run on P processes sees the
  one-process batch row for row. The batch is split over `data` only;
  `model` (`config.mesh.model`, default 1) shards the large 2-D parameters
  (`param_shardings`).

  Args:
    data: devices along the data axis; -1 = all devices / `model`.
    model: devices along the model axis.

  Raises:
    AffectJaxError: the shape does not fit the devices.
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  n, local = len(devices), jax.local_device_count()
  fix = ('fix config.mesh.data / config.mesh.model (--config.mesh.model=M '
         'with data=-1 takes every device)')
  if model < 1 or local % model:
    raise AffectJaxError(
        f'config.mesh.model={model} must be >= 1 and divide the devices of '
        f'each process ({local}); {fix}.')
  if data == -1:
    data = n // model
  if data * model != n:
    raise AffectJaxError(
        f'config.mesh data={data} x model={model} = {data * model} devices, '
        f'but this run has {n}; {fix}.')
  # Auto axes: jit's in/out shardings place the arrays and XLA propagates
  # them (Explicit axes would make ops such as dropout's select demand
  # matching shardings of their operands).
  return jax.sharding.Mesh(
      np.asarray(devices).reshape(data, model), ('data', 'model'),
      axis_types=(jax.sharding.AxisType.Auto,) * 2)


# 2-D kernels of fewer elements stay whole on a model axis: splitting them
# costs more in collectives than it saves (config.mesh.min_sharded_size).
MIN_SHARDED_SIZE = 2 ** 16


def param_shardings(mesh: jax.sharding.Mesh, tree,
                    min_size: int | None = None):
  """Shardings of a tree of arrays (parameters, optimizer state, a state).

  On a mesh with a `model` axis of M > 1 devices, every 2-D leaf (the
  dense and recurrent kernels: the LSTM/GRU input and hidden projections,
  the FC layers) of at least `min_size` elements
  (`config.mesh.min_sharded_size`) is split over `model` along its larger
  dimension divisible by M; everything else (convolution kernels, biases,
  BatchNorm, counters, small kernels) is replicated. The rule reads shapes
  only, so Adam's moments get their parameter's sharding. With M = 1 every
  leaf is replicated (pure data parallelism). `min_size` None:
  MIN_SHARDED_SIZE.
  """
  m = mesh.shape['model']
  min_size = MIN_SHARDED_SIZE if min_size is None else int(min_size)
  replicated = NamedSharding(mesh, P())

  def rule(x):
    shape = tuple(getattr(x, 'shape', ()))
    if m > 1 and len(shape) == 2 and math.prod(shape) >= min_size:
      for axis in sorted(range(2), key=lambda a: -shape[a]):
        if shape[axis] % m == 0:
          return NamedSharding(
              mesh, P(*('model' if a == axis else None for a in range(2))))
    return replicated

  return jax.tree.map(rule, tree)


def to_device(batch, sharding: NamedSharding, keys: Sequence[str]):
  """Host-local batch -> global arrays sharded over the `data` axis.

  Raises:
    AffectJaxError: the global batch does not split evenly over the
      devices along the data axis (`input_pipeline.local_batch_size`).
  """
  arrays = {k: batch[k] for k in keys if k in batch}
  host = [v for v in arrays.values() if not isinstance(v, jax.Array)]
  if host:
    input_pipeline.local_batch_size(len(host[0]) * jax.process_count(),
                                    device_count=sharding.mesh.shape['data'])
  # Arrays already on the devices (`prefetch_to_device`) pass through.
  return {k: v if isinstance(v, jax.Array) else
          jax.make_array_from_process_local_data(sharding, v)
          for k, v in arrays.items()}


def prefetch_to_device(batches: Iterator[dict[str, Any]],
                       put: Callable[[dict[str, Any]], dict[str, Any]],
                       size: int) -> Iterator[dict[str, Any]]:
  """Yields `put(batch)` of each batch, `size` batches ahead.

  `put` (e.g. `to_device`) starts a batch's host-to-device copy; holding
  `size` of them in flight lets the copies of the next batches overlap the
  current step (`config.input.device_prefetch`; 0 = copy when consumed).
  """
  queue = collections.deque()
  for batch in batches:
    queue.append(put(batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded array, in batch order (one copy
  of each row block: a `model` axis holds replicas of it)."""
  shards = sorted((s for s in x.addressable_shards if s.replica_id == 0),
                  key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def forward(apply_fn, variables, batch, normalization: str):
  """Logits [B, T, K] of a batch in eval mode (float32)."""
  frames = input_pipeline.normalize(batch[F.FRAMES], normalization)
  return apply_fn(variables, frames, mask=batch[F.MASK],
                  landmarks=batch.get(F.LANDMARKS),
                  train=False).astype(jnp.float32)


def make_predict_fn(model, normalization: str, mesh=None,
                    variables_sharding=None
                    ) -> Callable[[Any, dict[str, np.ndarray]], np.ndarray]:
  """jit-compiled (variables, host batch) -> this process's logits rows.

  `variables_sharding`: how the variables lie on `mesh` (a training state's
  `param_shardings`); default replicated.
  """
  mesh = mesh or make_mesh()
  data = NamedSharding(mesh, P('data'))
  if variables_sharding is None:
    variables_sharding = NamedSharding(mesh, P())
  step = jax.jit(functools.partial(forward, model.apply,
                                   normalization=normalization),
                 in_shardings=(variables_sharding, data),
                 out_shardings=data)

  def predict(variables, batch):
    return local_rows(step(variables, to_device(batch, data, MODEL_KEYS)))

  return predict


def predict_split(logits_fn: Callable[[dict[str, np.ndarray]], np.ndarray],
                  split: input_pipeline.SplitData, input_cfg, batch_size: int,
                  task: tasks_lib.Task, output_names: Sequence[str]
                  ) -> Iterator[WindowPredictions]:
  """Yields the predictions of every frame of `split`, window by window.

  Windows do not overlap, so each frame is predicted once; labelled or not,
  with or without a face, every real frame is yielded (`mask`).

  Args:
    logits_fn: host batch -> logits [B, T, K] (e.g. a bound
      `make_predict_fn`).
    split: the prepared split.
    input_cfg: window, image_size, resize_size, loader threads.
    batch_size: global batch size (divisible by the device count).
    task: the model's task (activation, targets).
    output_names: the K output names, for the class tasks' label columns.
  """
  num_classes = None if task.needs == 'va' else len(output_names)
  ds = input_pipeline.eval_dataset(split, input_cfg, batch_size,
                                   num_emotions=num_classes)
  for batch in input_pipeline.iterate(ds, input_cfg):
    rows = {'logits': np.asarray(logits_fn(batch)),
            'targets': np.asarray(task.targets(batch), np.float32),
            **{k: batch[k] for k in _REPORTED_KEYS}}
    # Several processes: each loaded and ran its rows of the global batch;
    # all of them get the whole batch (in batch order), so every process
    # computes the same metrics over the whole split.
    rows = multihost_utils.process_allgather(rows, tiled=True)
    yield WindowPredictions(
        video_ids=[split.video_ids[int(i)] for i in rows[F.VIDEO_INDEX]],
        frame_index=rows[input_pipeline.FRAME_INDEX],
        time=rows[F.TIME],
        has_face=rows[F.HAS_FACE] > 0,
        # Real frames; a still's repeats (frame index -1) are not reported.
        mask=(rows[F.MASK] > 0) & (rows[input_pipeline.FRAME_INDEX] >= 0),
        outputs=task.activation(rows['logits']),
        targets=np.asarray(rows['targets'], np.float64))


# Host batch keys that predictions report, besides the outputs and targets.
_REPORTED_KEYS = (F.VIDEO_INDEX, input_pipeline.FRAME_INDEX, F.TIME,
                  F.HAS_FACE, F.MASK)


@dataclasses.dataclass
class FrameTable:
  """Per-frame predictions of a split, concatenated (one row per frame)."""
  video_id: np.ndarray  # str [N]
  frame: np.ndarray  # int [N]
  time: np.ndarray  # float [N]
  has_face: np.ndarray  # bool [N]
  outputs: np.ndarray  # float [N, K]
  targets: np.ndarray  # float [N, K]

  def videos(self) -> list[str]:
    """Video ids in order of appearance."""
    _, first = np.unique(self.video_id, return_index=True)
    return [str(self.video_id[i]) for i in sorted(first)]

  def rows_of(self, video_id: str) -> np.ndarray:
    return np.flatnonzero(self.video_id == video_id)


def collect(windows: Iterator[WindowPredictions], accumulator=None
            ) -> FrameTable:
  """Concatenates yielded windows into a FrameTable, feeding `accumulator`."""
  parts = []
  for w in windows:
    if accumulator is not None:
      accumulator.update(w.outputs, w.targets, w.mask, w.video_ids,
                         w.frame_index)
    b, t = w.mask.shape
    vids = np.broadcast_to(np.asarray(w.video_ids, dtype=object)[:, None],
                           (b, t))
    m = w.mask
    parts.append((vids[m], w.frame_index[m], w.time[m], w.has_face[m],
                  w.outputs[m], w.targets[m]))
  if not parts:
    return FrameTable(np.zeros(0, object), np.zeros(0, np.int64),
                      np.zeros(0), np.zeros(0, bool), np.zeros((0, 0)),
                      np.zeros((0, 0)))
  cols = [np.concatenate(c) for c in zip(*parts)]
  return FrameTable(video_id=cols[0].astype(str), frame=cols[1],
                    time=cols[2], has_face=cols[3], outputs=cols[4],
                    targets=cols[5])


class Predictor:
  """A trained model from its self-contained checkpoint."""

  def __init__(self, variables: dict[str, Any], meta: dict[str, Any],
               mesh=None):
    self.meta = meta
    self.task = tasks_lib.get(meta['task'])
    self.output_names = tuple(meta['outputs'])
    self.model = build_model(meta['model'], len(self.output_names))
    self.mesh = mesh or make_mesh()
    replicated = NamedSharding(self.mesh, P())
    self.variables = jax.device_put(
        {k: variables[k] for k in ('params', 'batch_stats') if k in variables},
        replicated)
    self._predict = make_predict_fn(self.model,
                                    meta['input']['normalization'], self.mesh)

  @classmethod
  def load(cls, path: str) -> 'Predictor':
    variables, meta = checkpointing.load_model(path)
    return cls(variables, meta)

  def input_config(self, loader_cfg=None):
    """The input settings the model was trained with (+ loader threads)."""
    from configs import common  # pylint: disable=g-import-not-at-top
    cfg = common.input_section()
    if loader_cfg is not None:
      for k in ('num_threads', 'prefetch_batches', 'num_workers',
                'repeat_stills'):
        if k in loader_cfg:
          cfg[k] = loader_cfg[k]
    cfg.update(self.meta['input'])
    return cfg

  def logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    return self._predict(self.variables, batch)

  def predict_split(self, split, batch_size: int, loader_cfg=None
                    ) -> Iterator[WindowPredictions]:
    return predict_split(self.logits, split, self.input_config(loader_cfg),
                         batch_size, self.task, self.output_names)
