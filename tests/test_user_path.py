"""The user's door: one-line errors, `:list`, `--help`, preconditions
checked before any training, and records found however they were prepared.

Every command runs as a user types it (a subprocess from the repository
root), except where a test needs a finished run's folder.
"""

import importlib
import json
import os
import subprocess
import sys

import pytest

from affect_jax import experiment
from affect_jax.errors import AffectJaxError
from configs import affwildnet
from configs import common
from tests import conftest
from tests import test_recola

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ('realeyes', 'recola_finetune', 'affwildnet', 'cnn_m_baseline',
           'transfer', 'affect4k')
COMMANDS = ('main', 'prepare', 'predict', 'export', 'import_weights',
            'compare', 'postprocess')


def _run(*args, cwd=REPO, env=None):
  return subprocess.run([sys.executable, '-m', *args], cwd=cwd,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, **(env or {})))


def _one_line_error(out, *expected):
  assert out.returncode == 2, out.stdout + out.stderr
  assert 'Traceback' not in out.stderr, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr
  for text in expected:
    assert text in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize('command', COMMANDS)
def test_help_exits_zero(command):
  out = _run(f'affect_jax.{command}', '--help')
  assert out.returncode == 0, out.stderr[-2000:]
  assert len(out.stdout) > 200


@pytest.mark.parametrize('override,expected', [
    ('--config.finetune.learning_rat=0.1',
     ('--config.finetune.learning_rat', 'Did you mean '
      '--config.finetune.learning_rate?')),
    ('--config.finetune.early_stoping_patience=3',
     ('Did you mean --config.finetune.early_stopping_patience?',)),
    ('--config.finetune.learning_rate=fast',
     ('--config.finetune.learning_rate=fast', 'float')),
    ('--config.dataset.builder_confg=x',
     ('config.dataset has no key', 'prepared_with')),
    ('--config.input.image_size.x=3', ('is a value',)),
])
def test_a_config_mistake_is_one_line_before_any_work(tmp_path, override,
                                                      expected):
  out = _run('affect_jax.main', '--config=configs/realeyes.py:synthetic',
             f'--workdir={tmp_path / "w"}', override)
  _one_line_error(out, *expected)
  assert not os.path.exists(tmp_path / 'w')


def test_a_copied_stage_takes_its_schedule_from_the_command_line(tmp_path):
  # configs/affect4k.py's train_b is a copy of train_a: its unset keys must
  # stay settable as every other stage's (`--config.STAGE.KEY=VALUE`).
  out = _run('affect_jax.main',
             '--config=configs/affect4k.py:synthetic_crossdb',
             f'--workdir={tmp_path / "w"}',
             '--config.train_b.num_train_steps=2',
             '--config.train_b.eval_every_epochs=0.5',
             '--config.stages=train_b,nosuch')
  _one_line_error(out, "config.stages names 'nosuch'")


def test_an_unknown_variant_is_one_line_naming_the_list(tmp_path):
  out = _run('affect_jax.main', '--config=configs/affwildnet.py:syntetic',
             f'--workdir={tmp_path}')
  _one_line_error(out, "['syntetic']", 'configs/affwildnet.py:list')
  out = _run('affect_jax.main', '--config=configs/realeyes.py:bogus',
             f'--workdir={tmp_path}')
  _one_line_error(out, "'bogus'", 'configs/realeyes.py:list')
  out = _run('affect_jax.main', '--config=configs/nosuch.py',
             f'--workdir={tmp_path}')
  _one_line_error(out, 'no such config file')


@pytest.mark.parametrize('name', CONFIGS)
def test_list_prints_every_variant_and_modifier_with_a_line(name):
  module = importlib.import_module(f'configs.{name}')
  # From another folder too: the config path is the repository's.
  out = _run('affect_jax.main', f'--config=configs/{name}.py:list',
             cwd='/')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  for v in [v for v in module.VARIANTS if '+' not in v]:
    row = [l for l in lines if l.split()[:1] == [v or '(none)']]
    assert row and len(row[0].split()) > 2, (v, out.stdout)
  for m in getattr(module, 'MODIFIERS', ()):
    row = [l for l in lines if l.split()[:1] == [m]]
    assert row and len(row[0].split()) > 2, (m, out.stdout)


def test_a_missing_split_is_refused_before_training(tiny_data_dir, tmp_path):
  c = conftest.tiny_config(tiny_data_dir)
  c.test.splits = 'validation,final'
  with pytest.raises(AffectJaxError, match=r"config\.test\.dataset: .*no "
                     r"split 'final'.*--config\.test\.splits"):
    experiment.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain' / 'checkpoints')
  assert not os.path.exists(tmp_path / 'config.json')


def test_a_postprocess_split_the_test_stage_does_not_predict(tiny_data_dir,
                                                            tmp_path):
  c = conftest.tiny_config(tiny_data_dir)
  c.test.splits = 'validation'
  with pytest.raises(AffectJaxError, match=r"config\.postprocess\."
                     r"apply_split='test' but stage 'test' predicts only "
                     r"\['validation'\]"):
    experiment.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain')


def test_a_required_source_and_a_later_stage_are_refused_first(
    tiny_data_dir, tmp_path):
  c = conftest.tiny_config(tiny_data_dir)
  c.finetune.init_from = common.required('a RealEyes pretraining run')
  with pytest.raises(AffectJaxError, match='config.finetune.init_from must '
                     'be set for this variant'):
    experiment.run(c, str(tmp_path))
  c = conftest.tiny_config(tiny_data_dir)
  c.stages = 'finetune,pretrain,test,postprocess'
  with pytest.raises(AffectJaxError, match="stage 'pretrain' does not run "
                     'before it'):
    experiment.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'finetune')


@pytest.mark.parametrize('key,value,error', [
    ('finetune.sampler', 'va_quadrant', "Unknown sampler 'va_quadrant'"),
    ('finetune.sampler_targets', '0.5,0.5', 'must be 4 positive'),
    ('finetune.on_nonfinite', 'skipp', "on_nonfinite='skipp'"),
    ('finetune.schedule', 'cosin', "Unknown schedule 'cosin'"),
    ('finetune.loss', 'cc', "has no loss 'cc'"),
    ('finetune.best_mode', 'maximum', "best_mode='maximum'"),
    ('finetune.best_metric', 'ccc_meen', "best_metric='ccc_meen'"),
    ('finetune.init_keep', 'trunk,fcc', "init_keep names 'fcc'"),
    ('finetune.freeze', 'trunkk', r"\['trunkk'\] match no parameter"),
    ('finetune.grad_accum_steps', 3, 'must be >= 1 and divide batch_size'),
    ('test.aggregate', 'clips', "aggregate='clips'"),
    ('test.protocol', 'abw', "protocol='abw'"),
    ('postprocess.steps', 'median,scal', "steps names 'scal'"),
])
def test_a_wrong_value_of_a_later_stage_is_refused_before_the_first(
    tiny_data_dir, tmp_path, key, value, error):
  """A typo in the fine-tuning, test or post-processing stage's values
  stops the run before pretraining starts, naming the stage."""
  c = conftest.tiny_config(tiny_data_dir, **{key: value})
  stage = key.split('.')[0]
  with pytest.raises(AffectJaxError, match=rf'config\.{stage}.*{error}'):
    experiment.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'pretrain')


def test_an_init_that_only_partly_fits_names_init_keep(tiny_run, tmp_path):
  """An LSTM run as the source of a GRU model (Table 5's affwildnet row the
  other way round): refused before training, naming what fits."""
  workdir, _, _ = tiny_run
  data_dir = conftest.tiny_config('x')  # Only for the dataset section.
  del data_dir
  c = conftest.shrink(affwildnet.get_config('synthetic+no_landmarks'),
                      json.load(open(os.path.join(
                          workdir, 'config.json')))['finetune']['dataset'][
                              'data_dir'])
  c.stages = 'train'
  c.train.init_from = os.path.join(workdir, 'finetune')
  c.train.init_keep = 'trunk,fc,rnn'
  with pytest.raises(AffectJaxError, match=r'rnn of checkpoint .* not fit .*'
                     r'trunk fit\(s\): set --config\.train\.init_keep=trunk'):
    experiment.run(c, str(tmp_path))
  assert not os.path.exists(tmp_path / 'train')


@pytest.mark.slow
def test_records_prepared_with_options_are_found_by_one_key(tmp_path):
  """`prepare --image_size=...` renames the builder config; training finds
  it with --config.dataset.prepared_with, and without it the error lists
  the prepared variant and the flag that selects it."""
  copy = test_recola._write_copy(str(tmp_path / 'copy'))  # pylint: disable=protected-access
  data = str(tmp_path / 'tfds')
  out = _run('affect_jax.prepare', '--dataset=recola', f'--manual_dir={copy}',
             f'--data_dir={data}', '--face_detector=none', '--landmarks=none',
             '--image_size=24')
  assert out.returncode == 0, out.stderr[-3000:]
  hint = ('--config.dataset.prepared_with=detector_none-landmarks_none-'
          'image_size_24')
  assert hint in out.stdout
  assert f'--config.dataset.data_dir={data}' in out.stdout
  args = ['affect_jax.main', '--config=configs/recola_finetune.py:random',
          f'--config.dataset.data_dir={data}']
  out = _run(*args, f'--workdir={tmp_path / "a"}')
  _one_line_error(out, 'default-detector_none-landmarks_none-image_size_24: '
                  + hint)
  # Found, and Table 5 runs on the AVEC layout (no test labels): validation.
  budget = ['--config.model.width=4', '--config.model.stage_sizes=(1,1,1,1)',
            '--config.model.lstm_hidden=8', '--config.input.window=4',
            '--config.input.train_stride=2', '--config.input.image_size=24',
            '--config.input.resize_size=24', '--config.finetune.num_epochs=1',
            '--config.stages=finetune,test']
  out = _run(*args, hint, *budget, f'--workdir={tmp_path / "b"}')
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
  results = json.load(open(tmp_path / 'b' / 'test' / 'results.json'))
  assert list(results['splits']) == ['validation'], results.keys()
