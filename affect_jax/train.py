"""Training of one stage: state, `train_step`, the loop, the best checkpoint.

A train stage trains one model on one task of `affect_jax.tasks` (the loss,
targets and metrics come from the task table) and keeps the best checkpoint
by a validation metric, with early stopping. `affect_jax.experiment` chains
stages (pretrain -> fine-tune -> test -> post-process).

Data parallel: one jitted step over a (`data`, `model`) `Mesh`
(`config.mesh`); the batch is sharded over `data`, parameters and optimizer
state are replicated, or with `model` > 1 their large 2-D kernels are split
over it (`inference.param_shardings`; XLA inserts the collectives). The
same code runs on 1 CPU, 8 simulated CPU devices, a GPU, or many processes
(`affect_jax.distributed`): each process loads only its rows of every
global batch (`input_pipeline.process_batches`), all of them take part in
the Orbax checkpoints, evaluation gathers every process's predictions (the
same metrics on each), only process 0 writes logs, metrics and plots, and a
SIGTERM on any process stops all of them at the same step.
Training metrics are clu `Average`s merged on the device and fetched only
when logged, so the loop does not wait for every step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import threading
import time
from typing import Any

from clu import metrics as clu_metrics
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import ml_collections
import optax

from affect_jax import checkpointing
from affect_jax import distributed
from affect_jax import features as F
from affect_jax import inference
from affect_jax import input_pipeline
from affect_jax import losses
from affect_jax import models
from affect_jax import plots
from affect_jax import tasks as tasks_lib
from affect_jax import writers
from affect_jax.errors import AffectJaxError, Interrupted

build_model = inference.build_model
make_mesh = inference.make_mesh

# Batch keys the train step reads.
_TRAIN_KEYS = inference.MODEL_KEYS + (F.VALENCE, F.AROUSAL, F.EMOTIONS,
                                      F.HAS_FACE)


class TrainState(train_state.TrainState):
  batch_stats: Any


# `NonFinite.first_step` when every step was finite.
_NO_STEP = np.iinfo(np.int32).max


@flax.struct.dataclass
class NonFinite(clu_metrics.Metric):
  """Steps whose loss or gradient norm was NaN / inf: how many, the first."""
  count: jnp.ndarray
  first_step: jnp.ndarray

  @classmethod
  def from_step(cls, finite, step) -> 'NonFinite':
    bad = jnp.logical_not(finite)
    return cls(count=bad.astype(jnp.int32),
               first_step=jnp.where(bad, step, _NO_STEP).astype(jnp.int32))

  @classmethod
  def empty(cls) -> 'NonFinite':
    return cls(count=jnp.array(0, jnp.int32),
               first_step=jnp.array(_NO_STEP, jnp.int32))

  def merge(self, other: 'NonFinite') -> 'NonFinite':
    return type(self)(count=self.count + other.count,
                      first_step=jnp.minimum(self.first_step,
                                             other.first_step))

  def compute(self) -> dict[str, int]:
    return {'count': int(self.count), 'first_step': int(self.first_step)}


# Averages over the finite steps between two log lines, and the others
# (merged on the device, fetched when logged).
TrainMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average, grad_norm=clu_metrics.Average,
    nonfinite=NonFinite)


def _step_metrics(loss, grad_norm, finite, step):
  def average(x):
    return clu_metrics.Average(total=jnp.where(finite, x, 0.0),
                               count=finite.astype(jnp.int32))
  return TrainMetrics.empty().replace(
      loss=average(loss), grad_norm=average(grad_norm),
      nonfinite=NonFinite.from_step(finite, step))


def learning_rate_schedule(cfg) -> optax.Schedule:
  """'constant' (tzirakis2019), 'exponential' (kollias2019: 0.97 / 400 steps)
  or 'cosine'; each starts with `warmup_steps` of linear warmup from 0 (the
  exponential decay then counts its steps from the end of the warmup)."""
  lr = cfg.learning_rate
  if cfg.schedule in ('constant', 'exponential'):
    after = (optax.constant_schedule(lr) if cfg.schedule == 'constant' else
             optax.exponential_decay(lr, cfg.decay_steps, cfg.decay_rate,
                                     staircase=True))
    if cfg.get('warmup_steps'):
      # Linear warmup from 0, then the schedule.
      return optax.join_schedules(
          [optax.linear_schedule(0.0, lr, cfg.warmup_steps), after],
          [cfg.warmup_steps])
    return after
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, cfg.warmup_steps, max(cfg.num_train_steps, 1))
  raise AffectJaxError(
      f'Unknown schedule {cfg.schedule!r}; use constant, exponential or '
      'cosine.')


# What `init_keep` may name: the models' top-level submodules
# (docs/models.md, "Top-level parameter names").
KEEPABLE = ('trunk', 'fc', 'rnn', 'head')


def check_options(config, cfg, output_names=None) -> None:
  """Raises for a train stage option value that training would refuse.

  Called by `Stage` and, before the first stage runs, by affect_jax.preflight
  (so that a misspelt value in a later stage never ends an hour of work).
  With `output_names`, also `best_metric` against the task's metrics.
  """
  task = tasks_lib.get(cfg.get('task', 'va'))
  task.loss_fn(cfg.get('loss') or task.default_loss)
  on_nonfinite = cfg.get('on_nonfinite', 'stop')
  if on_nonfinite not in ('stop', 'skip'):
    raise AffectJaxError(
        f"on_nonfinite={on_nonfinite!r} (config train stage); use 'stop' "
        "(the default: raise at the first non-finite step) or 'skip'.")
  accum = int(cfg.get('grad_accum_steps', 1))
  if accum < 1 or config.batch_size % accum:
    raise AffectJaxError(
        f'grad_accum_steps={accum} (config train stage) must be >= 1 and '
        f'divide batch_size={config.batch_size}; micro-batches are '
        'batch_size / grad_accum_steps windows.')
  learning_rate_schedule(cfg)  # An unknown schedule raises.
  if cfg.get('best_mode', 'max') not in ('max', 'min'):
    raise AffectJaxError(f"best_mode={cfg.best_mode!r} (config train stage); "
                         "use 'max' or 'min'.")
  unknown = [k for k in _as_tuple(cfg.get('init_keep')) if k not in KEEPABLE]
  if unknown:
    raise AffectJaxError(
        f'init_keep names {", ".join(map(repr, unknown))} (config train '
        f'stage); use a comma list of {", ".join(KEEPABLE)}.')
  input_pipeline.check_sampler(cfg.get('sampler', 'shuffle'),
                               cfg.get('sampler_targets', ''))
  if output_names is not None and cfg.get('best_metric'):
    metrics = sorted(k for k, v in task.result(
        task.accumulator(), tuple(output_names)).items() if np.isscalar(v))
    if cfg.best_metric not in metrics:
      raise AffectJaxError(
          f'best_metric={cfg.best_metric!r} is not a metric of task '
          f'{task.name!r}; use one of {metrics}.')


def make_optimizer(cfg, params) -> optax.GradientTransformation:
  """Adam with the stage's schedule; parameters under the `cfg.freeze` path
  prefixes (e.g. 'trunk', or 'trunk/conv1,trunk/layer1_0') get no updates."""
  tx = optax.adam(learning_rate_schedule(cfg))
  frozen = _as_tuple(cfg.freeze)
  if not frozen:
    return tx
  return optax.multi_transform(
      {'train': tx, 'frozen': optax.set_to_zero()},
      models.trainable_labels(params, frozen))


def _as_tuple(value) -> tuple[str, ...]:
  if not value:
    return ()
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(',') if v.strip())
  return tuple(value)


def _micro_batches(tree, k: int):
  """[B, ...] leaves -> [k, B/k, ...]; micro-batch j holds rows j, j+k, ...

  Interleaved, so that each micro-batch keeps rows of every device of the
  `data` axis (a device's rows are one contiguous block of the batch).
  """
  def split(x):
    return jnp.swapaxes(jnp.reshape(x, (x.shape[0] // k, k) + x.shape[1:]),
                        0, 1)
  return jax.tree.map(split, tree)


def train_step(state: TrainState, batch, *, task: tasks_lib.Task, loss_fn,
               class_weights, normalization: str, train_without_face: bool,
               skip_nonfinite: bool = False, grad_accum_steps: int = 1):
  """One optimisation step on a global batch; returns (state, metrics).

  `skip_nonfinite`: a step whose loss or gradient is not finite leaves
  params, optimizer state and batch statistics as they were (the step
  counter still advances, so the batches stay those of the step).

  `grad_accum_steps` k > 1: the batch runs as k micro-batches of B/k windows
  (a `lax.scan`, so activations of one micro-batch at a time), and loss and
  gradient are their means weighted by each one's labelled (frame, output)
  count: the big batch's loss and gradient for frame-mean losses (BCE, MSE)
  on a model without batch-dependent layers. CCC is computed per
  micro-batch. BatchNorm normalises each micro-batch by its own statistics
  and updates the running averages once per micro-batch, in order; dropout
  draws per micro-batch.
  """
  # Frames without a face still run through the RNN (its state carries over
  # them) but do not count in the loss unless asked.
  loss_mask = batch[F.MASK]
  if not train_without_face:
    loss_mask = loss_mask * batch[F.HAS_FACE]
  inputs = {'frames': batch[F.FRAMES], 'mask': batch[F.MASK],
            'landmarks': batch.get(F.LANDMARKS), 'loss_mask': loss_mask,
            'targets': task.targets(batch)}
  dropout_rng = jax.random.fold_in(jax.random.PRNGKey(0), state.step)

  def compute_loss(params, batch_stats, x, rng):
    outputs, new_vars = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats},
        input_pipeline.normalize(x['frames'], normalization), mask=x['mask'],
        landmarks=x['landmarks'], train=True, mutable=['batch_stats'],
        rngs={'dropout': rng})
    loss = loss_fn(outputs.astype(jnp.float32), x['targets'], x['loss_mask'],
                   class_weights)
    return loss, new_vars['batch_stats']

  loss_and_grad = jax.value_and_grad(compute_loss, has_aux=True)
  if grad_accum_steps == 1:
    (loss, batch_stats), grads = loss_and_grad(
        state.params, state.batch_stats, inputs, dropout_rng)
  else:
    micro = _micro_batches(inputs, grad_accum_steps)
    labelled = jnp.sum((micro['loss_mask'][..., None] > 0) &
                       jnp.isfinite(micro['targets']), axis=(1, 2, 3))
    weights = labelled / jnp.maximum(jnp.sum(labelled), 1)

    def accumulate(carry, xs):
      loss_sum, grad_sum, stats = carry
      x, weight, j = xs
      (loss_j, stats), grads_j = loss_and_grad(
          state.params, stats, x, jax.random.fold_in(dropout_rng, j))
      grad_sum = jax.tree.map(lambda a, g: a + weight * g, grad_sum, grads_j)
      return (loss_sum + weight * loss_j, grad_sum, stats), None

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (loss, grads, batch_stats), _ = jax.lax.scan(
        accumulate, (jnp.zeros((), jnp.float32), zeros, state.batch_stats),
        (micro, weights, jnp.arange(grad_accum_steps)))
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if skip_nonfinite:
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                             new_state, state.replace(step=new_state.step))
  return new_state, _step_metrics(loss, grad_norm, finite, new_state.step)


class Stage:
  """Compiled network, train step and prediction of one stage.

  Args:
    config: the experiment config (model, input, batch size).
    cfg: the resolved stage section (task, loss, freeze, schedule).
    n_out: head width.
    class_weights: [n_out] loss weights (weighted BCE), or None.
  """

  def __init__(self, config, cfg, n_out: int, class_weights=None):
    self.config, self.cfg = config, cfg
    self.task = tasks_lib.get(cfg.get('task', 'va'))
    mesh_cfg = config.get('mesh') or {}
    self.mesh = make_mesh(int(mesh_cfg.get('data', -1)),
                          int(mesh_cfg.get('model', 1)))
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P('data'))
    self.model = build_model(config.model, n_out)
    # Before any compilation: the global batch splits over processes and
    # the devices of the data axis.
    input_pipeline.local_batch_size(config.batch_size,
                                    device_count=self.mesh.shape['data'])
    inp = config.input
    self.input_shape = (config.batch_size, inp.window, inp.image_size,
                        inp.image_size, 3)
    # Where the state lives: replicated, or with a `model` axis its large
    # 2-D kernels (and their Adam moments) split over it.
    self._tx = None
    self.state_sharding = self.replicated
    variables_sharding = None
    if self.mesh.shape['model'] > 1:
      self.state_sharding = inference.param_shardings(
          self.mesh, jax.eval_shape(
              lambda: self._create(self._init(self.init_key(0)))),
          mesh_cfg.get('min_sharded_size'))
      variables_sharding = {'params': self.state_sharding.params,
                            'batch_stats': self.state_sharding.batch_stats}
    cw = (jnp.ones((n_out,), jnp.float32) if class_weights is None
          else jnp.asarray(class_weights, jnp.float32))
    check_options(config, cfg)
    loss_name = cfg.get('loss') or self.task.default_loss
    on_nonfinite = cfg.get('on_nonfinite', 'stop')
    accum = int(cfg.get('grad_accum_steps', 1))
    self._train_step = jax.jit(
        functools.partial(train_step, task=self.task,
                          loss_fn=self.task.loss_fn(loss_name),
                          class_weights=cw, normalization=inp.normalization,
                          train_without_face=inp.get('train_without_face',
                                                     False),
                          skip_nonfinite=on_nonfinite == 'skip',
                          grad_accum_steps=accum),
        in_shardings=(self.state_sharding, self.data_sharding),
        out_shardings=(self.state_sharding, self.replicated),
        donate_argnums=0)
    self._predict = inference.make_predict_fn(
        self.model, inp.normalization, self.mesh, variables_sharding)

  @staticmethod
  def init_key(seed: int):
    return {'params': jax.random.PRNGKey(seed),
            'dropout': jax.random.PRNGKey(seed + 1)}

  def _init(self, rngs):
    x = jnp.zeros(self.input_shape[:1] + (2,) + self.input_shape[2:],
                  jnp.float32)
    landmarks = jnp.zeros(x.shape[:2] + (F.NUM_LANDMARKS, 2), jnp.float32)
    return dict(self.model.init(rngs, x, landmarks=landmarks, train=False))

  def _create(self, variables) -> TrainState:
    if self._tx is None:
      # One optimizer object: a state's static fields (and so the tree of
      # its shardings) must compare equal across states of this stage.
      self._tx = make_optimizer(self.cfg, variables['params'])
    return TrainState.create(
        apply_fn=self.model.apply, params=variables['params'], tx=self._tx,
        batch_stats=variables.get('batch_stats', {}))

  def init_variables(self, seed: int) -> dict[str, Any]:
    return jax.jit(self._init, out_shardings=self.replicated)(
        self.init_key(seed))

  def create_state(self, variables) -> TrainState:
    return jax.jit(self._create, out_shardings=self.state_sharding)(variables)

  def put(self, batch):
    """A host batch's training arrays on the devices (sharded over data)."""
    return inference.to_device(batch, self.data_sharding, _TRAIN_KEYS)

  def train_step(self, state, batch):
    """One step on a host batch or on one `put` on the devices already."""
    return self._train_step(state, self.put(batch))

  def logits_fn(self, state):
    """host batch -> logits of this process's rows, with `state`'s weights."""
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    return lambda batch: self._predict(variables, batch)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}


def check_init_fits(variables, loaded, meta, source: str,
                    keep: tuple[str, ...],
                    key: str = 'config.STAGE.init_keep') -> list[str]:
  """The submodules of `keep` that `loaded` restores into `variables`.

  `variables` may be abstract (shapes only). Raises one error naming what
  fits and the `init_keep` that would work when a kept submodule's shapes
  differ, or when the checkpoint holds none of them.
  """
  fits, differ = [], []
  for name in keep:
    if name not in variables.get('params', {}) or name not in loaded.get(
        'params', {}):
      continue  # Absent on either side: stays fresh.
    same = all(
        name not in variables.get(c, {}) or (
            loaded.get(c, {}).get(name) is not None and
            _shapes(loaded[c][name]) == _shapes(variables[c][name]))
        for c in ('params', 'batch_stats'))
    (fits if same else differ).append(name)
  if differ:
    model = meta.get('model', {}) if isinstance(meta, dict) else {}
    raise AffectJaxError(
        f'{", ".join(differ)} of checkpoint {source!r} do(es) not fit this '
        f'model (the checkpoint was trained with model {model}); '
        + (f'{", ".join(fits)} fit(s): set --{key}='
           f'{",".join(fits)} to take only that and train the rest fresh, '
           'or use the config.model of the run that wrote it.' if fits else
           'nothing of it fits: use the config.model of the run that wrote '
           'it.'))
  if not fits:
    raise AffectJaxError(
        f'Checkpoint {source!r} holds none of {key}={list(keep)} (it has '
        f'{sorted(loaded.get("params", {}))}); check {key} and the '
        'init_from beside it.')
  return fits


def init_from_checkpoint(variables: dict[str, Any], source: str,
                         keep: tuple[str, ...]) -> dict[str, Any]:
  """Replaces the `keep` submodules (e.g. trunk, fc, rnn) with a checkpoint's.

  Everything else (the head) keeps its fresh initialisation: that is the head
  swap of the pretrain -> fine-tune chain (8 emotions -> arousal, valence).
  Submodules of `keep` that the checkpoint lacks (an ImageNet import holds
  only the trunk) stay fresh too; it is an error if nothing is restored.
  `source` may be a workdir, a stage folder or a checkpoint folder.
  """
  source = checkpointing.find_checkpoints(source)
  loaded, meta = checkpointing.restore_best_variables(source)
  restored = check_init_fits(variables, loaded, meta, source, keep)
  out = {c: dict(v) for c, v in variables.items()}
  for name in restored:
    for collection in ('params', 'batch_stats'):
      if name in out.get(collection, {}):
        out[collection][name] = jax.tree.map(
            lambda s, d: jax.device_put(jnp.asarray(s, d.dtype), d.sharding),
            loaded[collection][name], out[collection][name])
  fresh = sorted(set(out['params']) - set(restored))
  print(f'Initialised {", ".join(restored)} from {source}; fresh: '
        f'{", ".join(fresh)}.', flush=True)
  return out


def evaluate(logits_fn, split: input_pipeline.SplitData, input_cfg,
             batch_size: int, task: tasks_lib.Task, output_names
             ) -> tuple[dict[str, Any], inference.FrameTable]:
  """Metrics over a whole split (every frame once) and its frame table."""
  acc = task.accumulator()
  table = inference.collect(
      inference.predict_split(logits_fn, split, input_cfg, batch_size, task,
                              output_names), acc)
  return task.result(acc, output_names), table


def _is_better(value: float, best: float | None, mode: str) -> bool:
  if best is None or np.isnan(best):
    return not np.isnan(value)
  return value > best if mode == 'max' else value < best


def model_record(config, task: tasks_lib.Task, output_names, split, step: int,
                 metrics: dict[str, Any]) -> dict[str, Any]:
  """What a best checkpoint says about itself (checkpointing.load_model)."""
  inp = config.input
  return {
      'format': checkpointing.MODEL_FORMAT,
      'step': int(step),
      'task': task.name,
      'outputs': list(output_names),
      'label_names': list(split.emotion_names),
      'model': config.model.to_dict(),
      'input': {'window': int(inp.window), 'image_size': int(inp.image_size),
                'resize_size': int(inp.resize_size),
                'normalization': inp.normalization},
      'data': split.metadata,
      'validation': {k: v for k, v in metrics.items() if np.isscalar(v)},
      'versions': writers.versions(),
  }


def _schedule_in_steps(cfg, steps_per_epoch: int):
  """num_train_steps / eval_every_steps / checkpoint_every_steps, from the
  epoch keys where set."""
  if cfg.get('num_epochs'):
    cfg.num_train_steps = max(1, math.ceil(cfg.num_epochs * steps_per_epoch))
  if cfg.get('eval_every_epochs'):
    cfg.eval_every_steps = max(1, round(cfg.eval_every_epochs *
                                        steps_per_epoch))
  if cfg.get('checkpoint_every_epochs'):
    cfg.checkpoint_every_steps = max(1, round(cfg.checkpoint_every_epochs *
                                              steps_per_epoch))


def train_and_evaluate(ctx) -> dict[str, Any]:
  """The `train` stage kind: trains in ctx.workdir, resuming if it can.

  Returns:
    A summary (best step and epoch, best validation metrics), also written
    to `<stage>/summary.json`.
  """
  cfg = ctx.cfg
  train_split = input_pipeline.load_split(cfg.dataset, cfg.dataset.train_split)
  eval_split = input_pipeline.load_split(cfg.dataset, cfg.dataset.eval_split)
  return train(ctx.config, cfg, ctx.workdir, train_split, eval_split,
               init_source=ctx.source(cfg.init_from), name=ctx.name)


def _batch_videos(ds, step: int, split: input_pipeline.SplitData
                  ) -> list[str]:
  """Video ids of the batch of `step` (this process's rows): the pipeline
  is a function of the step, so it is read again."""
  return [split.video_ids[int(i)] for i in ds[step - 1][F.VIDEO_INDEX]]


def _stop_if_nonfinite(nonfinite: dict[str, int], ds, split, ckpts,
                       workdir: str):
  if not nonfinite['count']:
    return
  first = nonfinite['first_step']
  ckpts.wait()  # The saves in flight are of earlier, finite states.
  ckpts.close()
  raise AffectJaxError(
      f'The loss or gradient was not finite at step {first} in {workdir} '
      f'(batch of videos {_batch_videos(ds, first, split)}; '
      f'{nonfinite["count"]} such step(s) since the last check); stopped '
      'without saving that state (the latest checkpoint is of step '
      f'{ckpts.latest.latest_step()}). Lower the learning rate, check those '
      "videos' labels and frames, or set the train stage's "
      "on_nonfinite='skip' to skip such steps.")


def _copy_to_host_async(tree):
  """`tree`, its arrays' copies to host memory started (read them later)."""
  for x in jax.tree.leaves(tree):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      x.copy_to_host_async()
  return tree


def _save_and_stop(ckpts, writer, step, state, loop, signum, name):
  if ckpts.latest.latest_step() != step:
    ckpts.save_latest(step, state, loop)
  ckpts.wait()
  ckpts.close()
  writer.close()
  sig = signal.Signals(signum).name
  print(f'[{name}] {sig}: saved the latest checkpoint at step {step} in '
        f'{ckpts.latest.directory}.', flush=True)
  raise Interrupted(f'Stopped by {sig} at step {step}; rerun the same '
                    'command to resume from there.', signum)


def uses_landmarks(model_cfg) -> bool:
  """Whether `config.model` fuses landmarks (AffWildNet does by default)."""
  if 'use_landmarks' in model_cfg:
    return bool(model_cfg.use_landmarks)
  return model_cfg.arch == 'affwildnet'


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals():
  """Yields a dict that SIGTERM / SIGINT set ('signum') instead of killing.

  The train loop reads it once per step (a Python read, no device sync).
  A second SIGINT raises KeyboardInterrupt at once. The previous handlers
  are back on exit. Outside the main thread (where Python cannot install
  handlers) the dict stays empty.
  """
  got: dict[str, int] = {}
  if threading.current_thread() is not threading.main_thread():
    yield got
    return

  def handler(signum, frame):
    del frame
    if signum == signal.SIGINT and 'signum' in got:
      raise KeyboardInterrupt
    got.setdefault('signum', signum)

  previous = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
  try:
    yield got
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


def _stop_requested(stop: dict[str, int], step: int, every: int) -> bool:
  """Whether every process stops after `step`.

  One process: as soon as its signal came. Several: they must stop (and
  save, a collective) at the same step, so they agree every `every` steps
  (the log steps, which wait for the device anyway).
  """
  if jax.process_count() == 1:
    return 'signum' in stop
  if step % every:
    return False
  signum = distributed.max_over_processes(stop.get('signum', 0))
  if signum:
    stop.setdefault('signum', signum)
  return bool(signum)


def train(config, cfg, workdir: str, train_split: input_pipeline.SplitData,
          eval_split: input_pipeline.SplitData, init_source: str | None = None,
          name: str = 'train') -> dict[str, Any]:
  """Trains `cfg` (a resolved train section) on given splits in `workdir`.

  The train stage loads its splits by name; cross validation
  (`affect_jax.cross_validation`) passes the folds of one split.

  Raises:
    Interrupted: SIGTERM / SIGINT came; the `latest` checkpoint holds the
      step reached, and calling again resumes from it.
  """
  with stop_on_signals() as stop:
    return _train(config, cfg, workdir, train_split, eval_split, init_source,
                  name, stop)


def _train(config, cfg, workdir, train_split, eval_split, init_source, name,
           stop):
  os.makedirs(workdir, exist_ok=True)
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  task = tasks_lib.get(cfg.task)
  task.check_dataset(train_split)
  if uses_landmarks(config.model):
    input_pipeline.check_landmarks(train_split)
  output_names = task.output_names(train_split.emotion_names)
  n_out = len(output_names)
  loss_name = cfg.loss or task.default_loss
  cfg.best_metric = cfg.best_metric or task.best_metric
  class_weights = None
  if loss_name == 'weighted_bce':
    counts = train_split.emotion_counts()
    class_weights = np.asarray(losses.class_weights_from_counts(counts))
    print(f'[{name}] class frame counts '
          f'{dict(zip(output_names, counts.tolist()))} -> weights '
          f'{np.round(class_weights, 3).tolist()}', flush=True)

  data = input_pipeline.train_batches(
      train_split, config.input, config.batch_size, cfg,
      num_emotions=None if task.needs == 'va' else n_out)
  ds, steps_per_epoch = data.dataset, data.steps_per_epoch
  _schedule_in_steps(cfg, steps_per_epoch)
  writers.write_json(os.path.join(workdir, 'config.json'), cfg.to_dict())
  stage = Stage(config, cfg, n_out, class_weights)
  variables = stage.init_variables(cfg.seed)
  if init_source:
    variables = init_from_checkpoint(variables, init_source,
                                     _as_tuple(cfg.init_keep))
  state = stage.create_state(variables)
  ckpts = checkpointing.StageCheckpoints(os.path.join(workdir, 'checkpoints'))
  loop = {'best_metric': None, 'best_step': None, 'evals_without_gain': 0,
          'stopped_early': False, 'best_results': {}}
  restored = ckpts.restore_latest(state)
  if restored is not None:
    state, loop = restored
    print(f'[{name}] resuming from step {int(state.step)}.', flush=True)
  start = int(state.step)

  writer = writers.MetricWriter(workdir)
  frames_per_step = config.batch_size * config.input.window
  print(f'[{name}] task={task.name} loss={loss_name} '
        f'train={train_split.name} ({train_split.num_frames} frames, '
        f'{len(train_split.video_ids)} videos, {steps_per_epoch} steps an '
        f'epoch) eval={eval_split.name} ({eval_split.num_frames} frames); '
        f'{cfg.num_train_steps} steps; {jax.device_count()} device(s)'
        + (f' (mesh data {stage.mesh.shape["data"]} x model '
           f'{stage.mesh.shape["model"]})' if jax.device_count() > 1 else ''),
        flush=True)

  it = inference.prefetch_to_device(
      input_pipeline.iterate(ds, config.input, start=start), stage.put,
      config.input.get('device_prefetch', 2))
  t_last, step_last, acc = time.time(), start, None
  check_nonfinite = cfg.get('on_nonfinite', 'stop') == 'stop'

  def write_log(logged: int, metrics) -> None:
    """The log line of step `logged` from its metrics (fetched here)."""
    nonlocal t_last, step_last
    if check_nonfinite:  # Before the state is logged, evaluated or saved.
      _stop_if_nonfinite(metrics.nonfinite.compute(), ds, train_split, ckpts,
                         workdir)
    scalars = metrics.compute()
    loss = float(scalars['loss'])
    skipped = scalars['nonfinite']['count']
    if skipped:
      loop['skipped_steps'] = loop.get('skipped_steps', 0) + skipped
      first = scalars['nonfinite']['first_step']
      print(f'[{name}] skipped {skipped} step(s) with a non-finite loss or '
            f'gradient since the last log line (first: step {first}, '
            f'videos {_batch_videos(ds, first, train_split)}); '
            f'{loop["skipped_steps"]} in all.', flush=True)
    dt = time.time() - t_last
    sps = (logged - step_last) / max(dt, 1e-9)
    print(f'[{name}] step {logged}/{cfg.num_train_steps} '
          f'(epoch {logged / steps_per_epoch:.1f}) loss {loss:.4f} | '
          f'{sps:.2f} steps/s {sps * frames_per_step:.0f} frames/s',
          flush=True)
    writer.write_scalars(logged, {
        'train/loss': loss, 'train/grad_norm': float(scalars['grad_norm']),
        'train/skipped_steps': loop.get('skipped_steps', 0),
        'train/steps_per_sec': sps,
        'train/frames_per_sec': sps * frames_per_step,
        'train/learning_rate': float(learning_rate_schedule(cfg)(logged)),
        'train/epoch': logged / steps_per_epoch})
    t_last, step_last = time.time(), logged

  # A log step's metrics start their copy to the host and are read after
  # the next step is dispatched, so the device never waits for the host's
  # log line; a step that evaluates, saves or stops reads them at once.
  pending = None
  step = start
  while step < cfg.num_train_steps and not loop['stopped_early']:
    state, m = stage.train_step(state, next(it))
    if pending is not None:
      write_log(*pending)
      pending = None
    acc = m if acc is None else acc.merge(m)
    step += 1
    log = step % config.log_every_steps == 0 or step == cfg.num_train_steps
    # The same answer on every process (it decides collective saves).
    stopping = _stop_requested(stop, step, config.log_every_steps)
    evaluates = (step % cfg.eval_every_steps == 0 or
                 step == cfg.num_train_steps)
    saves = step % cfg.checkpoint_every_steps == 0
    uses_state = evaluates or saves or stopping
    if log:
      pending, acc = (step, _copy_to_host_async(acc)), None
      if uses_state:
        write_log(*pending)
        pending = None
    elif uses_state and check_nonfinite:
      # Every step since the last check, one fetch of two scalars.
      _stop_if_nonfinite(acc.nonfinite.compute(), ds, train_split, ckpts,
                         workdir)

    if evaluates:
      t_eval = time.time()
      results, _ = evaluate(stage.logits_fn(state), eval_split, config.input,
                            config.batch_size, task, output_names)
      if cfg.best_metric not in results:
        raise AffectJaxError(
            f'best_metric={cfg.best_metric!r} is not a metric of task '
            f'{task.name!r}; use one of '
            f'{sorted(k for k, v in results.items() if np.isscalar(v))}.')
      value = float(results[cfg.best_metric])
      if _is_better(value, loop['best_metric'], cfg.best_mode):
        scalars = {k: float(v) for k, v in results.items() if np.isscalar(v)}
        loop.update(best_metric=value, best_step=step, evals_without_gain=0,
                    best_results=scalars)
        ckpts.save_best(step, {'params': state.params,
                               'batch_stats': state.batch_stats},
                        model_record(config, task, output_names, train_split,
                                     step, results))
      else:
        loop['evals_without_gain'] += 1
        if (cfg.early_stopping_patience and
            loop['evals_without_gain'] >= cfg.early_stopping_patience):
          loop['stopped_early'] = True
      writer.write_scalars(step, {f'val/{k}': v for k, v in results.items()
                                  if np.isscalar(v)})
      shown = ' '.join(f'{k} {results[k]:.3f}' for k in task.summary_keys
                       if k in results)
      best = loop['best_metric']
      print(f'[{name}] eval step {step}: {shown} (best '
            f'{cfg.best_metric} {best if best is None else round(best, 3)} '
            f'at step {loop["best_step"]}; {time.time() - t_eval:.1f}s)'
            + (' -> early stop' if loop['stopped_early'] else ''), flush=True)
      ckpts.save_latest(step, state, loop)
      t_last += time.time() - t_eval
    elif saves:
      ckpts.save_latest(step, state, loop)
    if stopping:
      _save_and_stop(ckpts, writer, step, state, loop, stop['signum'], name)

  # The last step evaluates and a stop saves: no log line is pending here.
  if ckpts.latest.latest_step() != step:
    ckpts.save_latest(step, state, loop)
  ckpts.wait()
  ckpts.close()
  writer.close()
  best_step = loop['best_step']
  summary = {'best_step': best_step,
             'best_epoch': (None if best_step is None else
                            round(best_step / steps_per_epoch, 2)),
             'steps_per_epoch': steps_per_epoch,
             'best_metric': cfg.best_metric,
             f'best_{cfg.best_metric}': loop['best_metric'],
             'validation': loop.get('best_results', {}),
             'final_step': step, 'stopped_early': loop['stopped_early'],
             'skipped_steps': loop.get('skipped_steps', 0)}
  writers.write_json(os.path.join(workdir, 'summary.json'), summary)
  if jax.process_index() == 0:
    plots.learning_curves(os.path.join(workdir, 'metrics.csv'),
                          os.path.join(workdir, 'learning_curves.png'),
                          task.summary_keys, title=f'{config.get("name", "")} {name}')
  return summary
