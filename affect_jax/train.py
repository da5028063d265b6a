"""Training and evaluation of one stage: state, `train_step`, `eval_step`, loop.

A stage trains one model on one task ('emotions': multi-label sigmoid with the
weighted BCE of tzirakis2019; 'va': arousal and valence with the 1 - CCC loss)
and keeps the best checkpoint by a validation metric. `affect_jax.experiment`
chains stages (pretrain -> fine-tune -> test).

Data parallel: one jitted step over a `Mesh` with a single `data` axis; the
batch is sharded over it, parameters and optimizer state are replicated. The
same code runs on 1 CPU, 8 simulated CPU devices, a GPU, or many hosts.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from affect_jax import checkpointing
from affect_jax import features as F
from affect_jax import input_pipeline
from affect_jax import losses
from affect_jax import metrics as metrics_lib
from affect_jax import models
from affect_jax import writers
from affect_jax.errors import AffectJaxError

# Output order of the 2-unit regression head (tzirakis2019: "arousal, valence").
VA_OUTPUTS = (F.AROUSAL, F.VALENCE)
TASKS = ('emotions', 'va')


class TrainState(train_state.TrainState):
  batch_stats: Any


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), ('data',))


def num_outputs(task: str, num_emotions: int) -> int:
  if task == 'emotions':
    return num_emotions
  if task == 'va':
    return len(VA_OUTPUTS)
  raise AffectJaxError(f'Unknown task {task!r}; use one of {TASKS}.')


def build_model(model_cfg, n_out: int):
  """The config's network with an `n_out`-unit per-frame head."""
  kwargs = dict(model_cfg)
  arch = kwargs.pop('arch')
  if 'dtype' in kwargs:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  for key in ('stage_sizes', 'fc_features'):
    if key in kwargs:
      kwargs[key] = tuple(kwargs[key])
  return models.build(arch, num_outputs=n_out, **kwargs)


def learning_rate_schedule(cfg) -> optax.Schedule:
  """'constant' (tzirakis2019), 'exponential' (kollias2019: 0.97 / 400 steps)
  or 'cosine' with linear warmup."""
  lr = cfg.learning_rate
  if cfg.schedule == 'constant':
    return optax.constant_schedule(lr)
  if cfg.schedule == 'exponential':
    return optax.exponential_decay(lr, cfg.decay_steps, cfg.decay_rate,
                                   staircase=True)
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, cfg.warmup_steps, max(cfg.num_train_steps, 1))
  raise AffectJaxError(
      f'Unknown schedule {cfg.schedule!r}; use constant, exponential or '
      'cosine.')


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


def targets(task: str, batch) -> jnp.ndarray:
  if task == 'va':
    return jnp.stack([batch[k] for k in VA_OUTPUTS], axis=-1)
  return batch[F.EMOTIONS]


def compute_loss(task: str, loss_name: str, outputs, batch,
                 class_weights) -> jnp.ndarray:
  """Scalar loss of [B, T, K] outputs against the batch's labels."""
  y, mask = targets(task, batch), batch[F.MASK]
  if loss_name == 'ccc':
    return losses.ccc_loss(outputs, y, mask)
  if loss_name == 'mse':
    return losses.mse_loss(outputs, y, mask)
  if loss_name == 'weighted_bce':
    return losses.weighted_sigmoid_bce(outputs, y, mask, class_weights)
  raise AffectJaxError(
      f'Unknown loss {loss_name!r}; use ccc, mse or weighted_bce.')


def train_step(state: TrainState, batch, *, task: str, loss_name: str,
               class_weights, normalization: str):
  """One optimisation step on a global batch; returns (state, metrics)."""
  frames = input_pipeline.normalize(batch[F.FRAMES], normalization)
  dropout_rng = jax.random.fold_in(jax.random.PRNGKey(0), state.step)

  def loss_fn(params):
    outputs, new_vars = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, frames,
        mask=batch[F.MASK], landmarks=batch.get(F.LANDMARKS), train=True,
        mutable=['batch_stats'],
        rngs={'dropout': dropout_rng})
    loss = compute_loss(task, loss_name, outputs.astype(jnp.float32), batch,
                        class_weights)
    return loss, new_vars['batch_stats']

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, {'loss': loss, 'grad_norm': optax.tree.norm(grads)}


def eval_step(state: TrainState, batch, *, task: str, normalization: str):
  """Per-frame predictions [B, T, K] (probabilities for emotions)."""
  frames = input_pipeline.normalize(batch[F.FRAMES], normalization)
  outputs = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, frames,
      mask=batch[F.MASK], landmarks=batch.get(F.LANDMARKS),
      train=False).astype(jnp.float32)
  if task == 'emotions':
    outputs = jax.nn.sigmoid(outputs)
  return outputs


_DEVICE_KEYS = (F.FRAMES, F.MASK, F.VALENCE, F.AROUSAL, F.EMOTIONS,
                F.LANDMARKS)


def to_device(batch, sharding: NamedSharding):
  """Host-local batch -> global arrays sharded over the `data` axis."""
  return {k: jax.make_array_from_process_local_data(sharding, batch[k])
          for k in _DEVICE_KEYS if k in batch}


class Stage:
  """Compiled model, state and steps of one training/evaluation stage."""

  def __init__(self, config, cfg, n_out: int, class_weights=None):
    self.config, self.cfg = config, cfg
    self.mesh = make_mesh()
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P('data'))
    self.model = build_model(config.model, n_out)
    inp = config.input
    self.input_shape = (config.batch_size, inp.window, inp.image_size,
                        inp.image_size, 3)
    cw = (jnp.ones((n_out,), jnp.float32) if class_weights is None
          else jnp.asarray(class_weights, jnp.float32))
    self._train_step = jax.jit(
        functools.partial(train_step, task=cfg.task,
                          loss_name=cfg.get('loss', 'ccc'),
                          class_weights=cw,
                          normalization=inp.normalization),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=(self.replicated, self.replicated),
        donate_argnums=0)
    self._eval_step = jax.jit(
        functools.partial(eval_step, task=cfg.task,
                          normalization=inp.normalization),
        in_shardings=(self.replicated, self.data_sharding),
        out_shardings=self.data_sharding)

  def init_variables(self, seed: int) -> dict[str, Any]:
    x = jnp.zeros(self.input_shape[:1] + (2,) + self.input_shape[2:],
                  jnp.float32)
    init = jax.jit(functools.partial(self.model.init, train=False),
                   out_shardings=self.replicated)
    return dict(init({'params': jax.random.PRNGKey(seed),
                      'dropout': jax.random.PRNGKey(seed + 1)}, x))

  def create_state(self, variables) -> TrainState:
    tx = make_optimizer(self.cfg, variables['params'])
    create = jax.jit(
        lambda v: TrainState.create(
            apply_fn=self.model.apply, params=v['params'], tx=tx,
            batch_stats=v.get('batch_stats', {})),
        out_shardings=self.replicated)
    return create(variables)

  def eval_state(self, variables) -> TrainState:
    """A state for evaluation only (no optimizer)."""
    return TrainState.create(apply_fn=self.model.apply,
                             params=variables['params'], tx=optax.identity(),
                             batch_stats=variables.get('batch_stats', {}))

  def train_step(self, state, batch):
    return self._train_step(state, to_device(batch, self.data_sharding))

  def predict(self, state, batch) -> np.ndarray:
    out = self._eval_step(state, to_device(batch, self.data_sharding))
    # Each process keeps the rows of its own windows.
    return np.concatenate([np.asarray(s.data) for s in sorted(
        out.addressable_shards, key=lambda s: s.index[0].start or 0)])


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in flat}


def init_from_checkpoint(variables: dict[str, Any], source: str,
                         keep: tuple[str, ...]) -> dict[str, Any]:
  """Replaces the `keep` submodules (e.g. trunk, fc, rnn) with a checkpoint's.

  Everything else (the head) keeps its fresh initialisation: that is the head
  swap of the pretrain -> fine-tune chain (8 emotions -> arousal, valence).
  Submodules of `keep` that the checkpoint lacks (an ImageNet import holds
  only the trunk) stay fresh too; it is an error if nothing is restored.
  """
  loaded, meta = checkpointing.restore_best_variables(source)
  out = {c: dict(v) for c, v in variables.items()}
  restored = []
  for name in keep:
    if name not in out.get('params', {}):
      continue
    if name not in loaded.get('params', {}):
      continue
    for collection in ('params', 'batch_stats'):
      if name not in out.get(collection, {}):
        continue
      src = loaded.get(collection, {}).get(name)
      dst = out[collection][name]
      if src is None or _shapes(src) != _shapes(dst):
        raise AffectJaxError(
            f'{collection}/{name} in checkpoint {source!r} does not match the '
            f'model (different architecture or width; the checkpoint says '
            f'{meta}); use the config.model of the run that wrote it.')
      out[collection][name] = jax.tree.map(
          lambda s, d: jax.device_put(jnp.asarray(s, d.dtype), d.sharding),
          src, dst)
    restored.append(name)
  if not restored:
    raise AffectJaxError(
        f'Checkpoint {source!r} holds none of init_keep={list(keep)} (it has '
        f'{sorted(loaded.get("params", {}))}); check config init_from / '
        'init_keep.')
  fresh = sorted(set(out['params']) - set(restored))
  print(f'Initialised {", ".join(restored)} from {source}; fresh: '
        f'{", ".join(fresh)}.', flush=True)
  return out


def evaluate(stage: Stage, state: TrainState, split: input_pipeline.SplitData,
             task: str, emotion_names=()) -> tuple[dict[str, float], Any]:
  """Metrics over a whole split (every frame once), and the accumulator."""
  config = stage.config
  n_emotions = len(emotion_names) if task == 'emotions' else None
  ds = input_pipeline.eval_dataset(split, config.input, config.batch_size,
                                   num_emotions=n_emotions)
  if task == 'va':
    acc = metrics_lib.RegressionAccumulator()
  else:
    acc = metrics_lib.MultiLabelAccumulator()
  for batch in input_pipeline.iterate(ds, config.input):
    pred = stage.predict(state, batch)
    vids = [split.video_ids[int(i)] for i in batch[F.VIDEO_INDEX]]
    frame_index = batch[input_pipeline.FRAME_INDEX]
    if task == 'va':
      y = np.stack([batch[k] for k in VA_OUTPUTS], axis=-1)
    else:
      y = batch[F.EMOTIONS]
    acc.update(pred, y, batch[F.MASK], vids, frame_index)
  if task == 'va':
    return acc.result(names=VA_OUTPUTS), acc
  return acc.result(class_names=tuple(emotion_names)), acc


def _is_better(value: float, best: float | None, mode: str) -> bool:
  if best is None or np.isnan(best):
    return not np.isnan(value)
  return value > best if mode == 'max' else value < best


def train_and_evaluate(config: ml_collections.ConfigDict, cfg,
                       workdir: str,
                       init_source: str | None = None) -> dict[str, Any]:
  """Trains one stage in `workdir` (resuming if it holds a checkpoint).

  Args:
    config: the experiment config (model, input, batch size, seed).
    cfg: the resolved stage config (task, loss, dataset, schedule, steps...).
    workdir: the stage's folder.
    init_source: checkpoint folder to initialise `cfg.init_keep` from.

  Returns:
    A summary dict (best step, best validation metrics), also written to
    `<workdir>/summary.json`.
  """
  os.makedirs(workdir, exist_ok=True)
  train_split = input_pipeline.load_split(cfg.dataset, cfg.dataset.train_split)
  eval_split = input_pipeline.load_split(cfg.dataset, cfg.dataset.eval_split)
  emotion_names = train_split.emotion_names
  n_out = num_outputs(cfg.task, len(emotion_names))
  class_weights = None
  if cfg.loss == 'weighted_bce':
    counts = train_split.emotion_counts()
    class_weights = np.asarray(losses.class_weights_from_counts(counts))
    logging.info('Class frame counts %s -> weights %s',
                 dict(zip(emotion_names, counts.tolist())),
                 np.round(class_weights, 3).tolist())

  stage = Stage(config, cfg, n_out, class_weights)
  variables = stage.init_variables(config.seed)
  if init_source:
    variables = init_from_checkpoint(variables, init_source,
                                     _as_tuple(cfg.init_keep))
  state = stage.create_state(variables)
  ckpts = checkpointing.StageCheckpoints(os.path.join(workdir, 'checkpoints'))
  loop = {'best_metric': None, 'best_step': None, 'evals_without_gain': 0,
          'stopped_early': False}
  restored = ckpts.restore_latest(state)
  if restored is not None:
    state, loop = restored
    print(f'Resuming {os.path.basename(workdir)} from step '
          f'{int(state.step)}.', flush=True)
  start = int(state.step)

  ds = input_pipeline.train_dataset(
      train_split, config.input, config.batch_size, seed=config.seed,
      augment=cfg.augment, rare_repeats=cfg.rare_window_repeats,
      num_emotions=len(emotion_names) if cfg.task == 'emotions' else None)
  writer = writers.MetricWriter(workdir)
  frames_per_step = config.batch_size * config.input.window
  name = os.path.basename(os.path.normpath(workdir))
  print(f'[{name}] task={cfg.task} loss={cfg.loss} train={train_split.name} '
        f'({train_split.num_frames} frames, {len(train_split.video_ids)} '
        f'videos) eval={eval_split.name} ({eval_split.num_frames} frames); '
        f'{jax.device_count()} device(s)', flush=True)

  it = input_pipeline.iterate(ds, config.input, start=start)
  t_last, step_last, train_losses = time.time(), start, []
  step = start
  while step < cfg.num_train_steps and not loop['stopped_early']:
    batch = next(it)
    state, m = stage.train_step(state, batch)
    step += 1
    train_losses.append(m['loss'])
    if step % config.log_every_steps == 0 or step == cfg.num_train_steps:
      loss = float(np.mean(jax.device_get(train_losses)))
      train_losses = []
      dt = time.time() - t_last
      sps = (step - step_last) / max(dt, 1e-9)
      print(f'[{name}] step {step}/{cfg.num_train_steps} loss {loss:.4f} | '
            f'{sps:.2f} steps/s {sps * frames_per_step:.0f} frames/s',
            flush=True)
      if not np.isfinite(loss):
        raise AffectJaxError(
            f'Training loss became {loss} at step {step} in {workdir}; lower '
            'the learning rate or check the labels for NaN/out-of-range values.')
      writer.write_scalars(step, {'train/loss': loss,
                                  'train/grad_norm': float(m['grad_norm']),
                                  'train/steps_per_sec': sps,
                                  'train/frames_per_sec': sps *
                                  frames_per_step,
                                  'train/learning_rate': float(
                                      learning_rate_schedule(cfg)(step))})
      t_last, step_last = time.time(), step

    if step % cfg.eval_every_steps == 0 or step == cfg.num_train_steps:
      t_eval = time.time()
      results, _ = evaluate(stage, state, eval_split, cfg.task, emotion_names)
      value = float(results[cfg.best_metric])
      improved = _is_better(value, loop['best_metric'], cfg.best_mode)
      if improved:
        loop.update(best_metric=value, best_step=step, evals_without_gain=0)
        ckpts.save_best(step, {'params': state.params,
                               'batch_stats': state.batch_stats},
                        {'step': step, cfg.best_metric: value,
                         'task': cfg.task, 'num_outputs': n_out})
      else:
        loop['evals_without_gain'] += 1
        if (cfg.early_stopping_patience and
            loop['evals_without_gain'] >= cfg.early_stopping_patience):
          loop['stopped_early'] = True
      writer.write_scalars(step, {f'val/{k}': v for k, v in results.items()
                                  if np.isscalar(v)})
      shown = ' '.join(f'{k} {results[k]:.3f}' for k in _summary_keys(
          cfg.task, results))
      print(f'[{name}] eval step {step}: {shown} '
            f'(best {cfg.best_metric} {loop["best_metric"]:.3f} at step '
            f'{loop["best_step"]}; {time.time() - t_eval:.1f}s)', flush=True)
      ckpts.save_latest(step, state, loop)
      t_last += time.time() - t_eval
    elif step % cfg.checkpoint_every_steps == 0:
      ckpts.save_latest(step, state, loop)

  if ckpts.latest.latest_step() != step:
    ckpts.save_latest(step, state, loop)
  ckpts.wait()
  ckpts.close()
  writer.close()
  summary = {'best_step': loop['best_step'],
             f'best_{cfg.best_metric}': loop['best_metric'],
             'final_step': step, 'stopped_early': loop['stopped_early']}
  writers.write_json(os.path.join(workdir, 'summary.json'), summary)
  return summary


def _summary_keys(task: str, results) -> list[str]:
  if task == 'va':
    keys = ['ccc_arousal', 'ccc_valence', 'ccc_mean']
  else:
    keys = ['auc_mean', 'f1_mean', 'accuracy']
  return [k for k in keys if k in results]
