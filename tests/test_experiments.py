"""The experiment frame: config schema, stage references, self-contained
checkpoints, and a smoke run of every variant of every config file."""

import csv
import importlib
import json
import os
import shutil

import numpy as np
import pytest

from affect_jax import checkpointing
from affect_jax import compare
from affect_jax import evaluate
from affect_jax import experiment
from affect_jax import inference
from affect_jax import input_pipeline as ip
from affect_jax.errors import AffectJaxError
from configs import common
from tests.conftest import shrink
from tests.test_paper_experiments import all_variants

# Every variant of every config file (each file lists its own VARIANTS).
CONFIG_VARIANTS = {}
for _m, _v in all_variants():
  CONFIG_VARIANTS.setdefault(_m, []).append(_v)


def _get(module, variant):
  return importlib.import_module(f'configs.{module}').get_config(variant)


@pytest.mark.parametrize('module,variant', [
    (m, v) for m, vs in CONFIG_VARIANTS.items() for v in vs])
def test_every_config_variant_fits_the_schema(module, variant):
  config = _get(module, variant)
  names = experiment.check(config)
  assert names and config.name
  for name in names:
    cfg = common.resolve_stage(config, name)
    assert cfg.kind in experiment.stage_kinds()


def test_every_config_file_is_in_the_smoke_list():
  here = os.path.join(os.path.dirname(__file__), '..', 'configs')
  files = {f[:-3] for f in os.listdir(here)
           if f.endswith('.py') and f not in ('__init__.py', 'common.py')}
  assert files == set(CONFIG_VARIANTS)


def test_unknown_or_misspelt_key_is_one_clear_error_before_any_work(tmp_path):
  config = _get('realeyes', 'synthetic')
  config.finetune.early_stoping_patience = 3
  with pytest.raises(AffectJaxError) as e:
    experiment.run(config, str(tmp_path / 'w'))
  msg = str(e.value)
  assert "config.finetune (a train stage): 'early_stoping_patience'" in msg
  assert "did you mean 'early_stopping_patience'?" in msg
  assert not os.path.exists(tmp_path / 'w')  # Nothing was started.
  config = _get('realeyes', 'synthetic')
  config.input.windw = 3
  with pytest.raises(AffectJaxError, match=r"config.input: 'windw' \(did you "
                     r"mean 'window'\?\)"):
    experiment.check(config)
  config = _get('realeyes', 'synthetic')
  config.test.dataset.split = 'x'
  with pytest.raises(AffectJaxError, match='config.test.dataset'):
    experiment.check(config)
  config = _get('realeyes', 'synthetic')
  config.stages = 'pretrain,fintune'
  with pytest.raises(AffectJaxError, match="no such stage section"):
    experiment.check(config)


def test_required_path_of_a_variant_is_named(tmp_path, tiny_data_dir):
  config = shrink(_get('recola_finetune', 'realeyes'), tiny_data_dir)
  with pytest.raises(AffectJaxError,
                     match=r'finetune.init_from must be set for this variant: '
                     r'a RealEyes pretraining run.*--config.finetune.'
                     r'init_from=PATH'):
    experiment.run(config, str(tmp_path))


def test_a_run_leaves_results_tables_predictions_and_plots(tiny_run):
  workdir, config, results = tiny_run
  for stage in ('pretrain', 'finetune'):
    for f in ('summary.json', 'metrics.csv', 'learning_curves.png',
              'config.json', 'DONE.json'):
      assert os.path.exists(os.path.join(workdir, stage, f)), (stage, f)
  test = os.path.join(workdir, 'test')
  for f in ('results.json', 'results.md', 'predictions/test.csv',
            'predictions/validation.csv', 'plots/test_traces.png',
            'plots/test_va_histogram.png'):
    assert os.path.exists(os.path.join(test, f)), f
  split = ip.load_split(config.test.dataset, 'test')
  with open(os.path.join(test, 'predictions', 'test.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == split.num_frames
  assert list(rows[0]) == ['video_id', 'frame', 'time_s', 'has_face',
                           'pred_valence', 'pred_arousal', 'gold_valence',
                           'gold_arousal']
  per_video = os.listdir(os.path.join(test, 'predictions', 'test'))
  assert sorted(per_video) == sorted(f'{v}.csv' for v in split.video_ids)
  assert results['test']['splits']['validation']['split'].endswith(
      'validation')
  assert 'ccc_valence' in results['postprocess']
  summary = json.load(open(os.path.join(workdir, 'finetune',
                                        'summary.json')))
  assert summary['best_epoch'] == pytest.approx(
      summary['best_step'] / summary['steps_per_epoch'], abs=0.01)
  # No NaN scalar reaches TensorBoard's CSV twin.
  with open(os.path.join(workdir, 'pretrain', 'metrics.csv')) as f:
    assert all(np.isfinite(float(r['value'])) for r in csv.DictReader(f))


def test_the_checkpoint_alone_is_enough_to_evaluate(tiny_run, tmp_path):
  workdir, config, _ = tiny_run
  # Copy only the best checkpoint folder: no config, no workdir around it.
  alone = tmp_path / 'model'
  shutil.copytree(os.path.join(workdir, 'finetune', 'checkpoints', 'best'),
                  alone / 'best')
  predictor = inference.Predictor.load(str(alone))
  meta = predictor.meta
  assert meta['task'] == 'va' and meta['outputs'] == ['arousal', 'valence']
  assert meta['model']['width'] == config.model.width
  assert meta['input']['image_size'] == config.input.image_size
  assert meta['data']['dataset'].startswith('synthetic_faces/tiny')
  assert meta['data']['fps'] == 10.0
  split = ip.load_split(config.test.dataset, 'test')
  acc = predictor.task.accumulator()
  table = inference.collect(predictor.predict_split(split, 2), acc)
  res = predictor.task.result(acc, predictor.output_names)
  want = json.load(open(os.path.join(workdir, 'test', 'results.json')))
  assert res['ccc_valence'] == pytest.approx(want['ccc_valence'], abs=1e-6)
  assert len(table.frame) == split.num_frames
  assert table.has_face.all() and np.isfinite(table.time).all()
  # A weights-only folder is refused for evaluation, with the reason.
  ckpts = checkpointing.StageCheckpoints(str(tmp_path / 'imported'))
  ckpts.save_best(0, {'params': {'trunk': {'w': np.zeros(2)}}}, {})
  ckpts.wait()
  with pytest.raises(AffectJaxError, match='holds weights only'):
    inference.Predictor.load(str(tmp_path / 'imported'))


def test_postprocess_cli_and_compare_on_a_finished_run(tiny_run, tmp_path,
                                                       capsys):
  from affect_jax import postprocess  # pylint: disable=g-import-not-at-top
  workdir, _, results = tiny_run
  assert postprocess.main([f'--workdir={workdir}',
                           f'--output={tmp_path / "pp"}']) == 0
  again = json.load(open(tmp_path / 'pp' / 'results.json'))
  assert again['ccc_valence'] == pytest.approx(
      results['postprocess']['ccc_valence'])
  assert compare.main([workdir, workdir, f'--output={tmp_path / "t.md"}']) == 0
  out = capsys.readouterr().out
  row = compare.run_row(workdir)
  assert row['test/ccc_valence'] == pytest.approx(
      results['test']['ccc_valence'])
  assert row['best_epoch'] is not None
  assert '± 0.000' in out  # The two identical runs form one group.
  assert compare.main([str(tmp_path)]) == 2


def test_compare_leaves_unfinished_runs_out_of_the_groups(tiny_run, tmp_path,
                                                          capsys):
  workdir, config, _ = tiny_run
  runs = [str(tmp_path / f'run{i}') for i in range(3)]
  for r in runs:
    shutil.copytree(workdir, r)
  os.remove(os.path.join(runs[2], 'postprocess', 'DONE.json'))  # It failed.
  assert compare.main(runs) == 0
  out = capsys.readouterr().out
  assert '| run2 | ' in out and 'unfinished: postprocess' in out
  group = [l for l in out.splitlines() if l.startswith(f'| {config.name} | ')]
  assert len(group) == 1 and group[0].startswith(f'| {config.name} | 2 | '), out
  assert '1 unfinished run(s) left out' in out
  assert compare.main([*runs, f'--output={tmp_path / "no" / "t.md"}']) == 2
  assert 'folder' in capsys.readouterr().err


def test_compare_groups_by_sample_std():
  rows = [dict(run=f'r{i}', name='a', seed=i, status='finished', task='va',
               **{'test/ccc_valence': v, 'test/ccc_arousal': 0.5})
          for i, v in enumerate((0.1, 0.2, 0.6))]
  text = compare.table(rows + [dict(run='r9', name='b', seed=0, task='va',
                                    status='finished',
                                    **{'test/ccc_valence': 0.3})])
  mean, std = np.mean([0.1, 0.2, 0.6]), np.std([0.1, 0.2, 0.6], ddof=1)
  assert f'| a | 3 | {mean:.3f} ± {std:.3f} | 0.500 ± 0.000 |' in text
  assert '| b | 1 | 0.300 | – |' in text  # No std of one run.


def test_frames_without_a_face_are_scored_but_not_trained_on(tiny_run):
  _, config, _ = tiny_run
  cfg = common.resolve_stage(config, 'finetune')
  from affect_jax import train  # pylint: disable=g-import-not-at-top
  split = ip.load_split(cfg.dataset, 'train')
  stage = train.Stage(config, cfg, n_out=2)
  state = stage.create_state(stage.init_variables(0))
  batch = next(ip.iterate(ip.train_dataset(split, config.input, 2, seed=0,
                                           augment=False), config.input))
  # With no face anywhere nothing counts: the CCC loss of an empty set is 1
  # and nothing is learnt; the same batch with faces trains.
  empty = dict(batch, has_face=np.zeros_like(batch['has_face']))
  _, m = stage.train_step(state, empty)
  assert float(m.compute()['loss']) == pytest.approx(1.0)
  assert float(m.compute()['grad_norm']) == 0.0
  state = stage.create_state(stage.init_variables(0))
  _, m = stage.train_step(state, batch)
  assert float(m.compute()['grad_norm']) > 0
  config.input.train_without_face = True
  stage = train.Stage(config, cfg, n_out=2)
  state = stage.create_state(stage.init_variables(0))
  _, m = stage.train_step(state, empty)
  assert float(m.compute()['grad_norm']) > 0
  config.input.train_without_face = False
