"""`python -m affect_jax.prepare` options: overrides, names, errors."""

import os
import subprocess
import sys

import pytest

from affect_jax import prepare
from affect_jax.errors import AffectJaxError
from tfds_builders.synthetic_faces import realeyes_layout
from tests import builder_util


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('realeyes_copy'))
  realeyes_layout.write_realeyes_layout(root, num_subjects=2,
                                        frames_per_video=4, height=48,
                                        width=64)
  return root


def test_face_options_rename_the_config_and_load(copy_dir, tmp_path):
  builder = prepare.prepare('realeyes', str(tmp_path), copy_dir,
                            detector='none', landmarks='none', image_size=24,
                            num_workers=None)
  name = 'default-detector_none-landmarks_none-image_size_24'
  assert builder.builder_config.name == name
  split = builder_util.load_splits('realeyes', tmp_path, name,
                                   splits=('train',))['train']
  assert split.source[0]['image'][:2] == b'\xff\xd8'  # JPEG.
  assert builder.info.metadata['image_size'] == 24
  # prepare indexed the splits: training starts without a scan.
  assert os.path.exists(os.path.join(builder.data_dir, 'index-train.npz'))


def test_run_options_keep_the_name(copy_dir, tmp_path):
  builder = prepare.prepare('realeyes/whole_frame', str(tmp_path), copy_dir,
                            landmarks='none', skip_broken=True)
  assert builder.builder_config.name == 'whole_frame-landmarks_none'
  assert builder.builder_config.skip_broken


def test_unknown_option_and_dataset(copy_dir, tmp_path):
  with pytest.raises(AffectJaxError, match=r"synthetic_faces takes no option "
                     r"\['detector'\]"):
    prepare.prepare('synthetic_faces/tiny', str(tmp_path), None,
                    detector='haar')
  with pytest.raises(AffectJaxError, match="No builder for dataset 'nope'"):
    prepare.prepare('nope', str(tmp_path), copy_dir)
  with pytest.raises(AffectJaxError, match='has no config'):
    prepare.prepare('realeyes/nope', str(tmp_path), copy_dir, image_size=32)


def test_cli_reports_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'affect_jax.prepare', '--dataset=recola',
       f'--manual_dir={tmp_path / "missing"}', f'--data_dir={tmp_path}',
       '--face_detector=haar'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'missing' in result.stderr


def test_beam_options_need_a_video_builder_and_apache_beam(copy_dir, tmp_path,
                                                           monkeypatch):
  with pytest.raises(AffectJaxError, match='synthetic_faces has no Beam path'):
    prepare.prepare('synthetic_faces/tiny', str(tmp_path), None,
                    beam_runner='DirectRunner')
  monkeypatch.setitem(sys.modules, 'apache_beam', None)  # Not installed.
  with pytest.raises(AffectJaxError, match=r"pip install -e '\.\[beam\]'"):
    prepare.prepare('realeyes', str(tmp_path), copy_dir, detector='none',
                    beam_runner='DirectRunner')
  assert not os.path.exists(tmp_path / 'realeyes')


@pytest.mark.parametrize('argv, workers', [
    ([], prepare.AUTO_WORKERS), (['--num_workers=0'], 0)])
def test_cli_workers_default_to_the_usable_cores(monkeypatch, tmp_path, argv,
                                                 workers):
  """Without --num_workers the command decodes on every core it may use
  (the builder caps that by the videos of a split); the API keeps 0."""
  called = {}
  monkeypatch.setattr(prepare, 'prepare',
                      lambda *args, **kw: called.update(kw))
  prepare.FLAGS(['prepare', '--dataset=realeyes', *argv])
  try:
    prepare.main([])
  finally:
    prepare.FLAGS.unparse_flags()
  assert called['num_workers'] == workers
  prepare.available()
  auto = {'num_workers': prepare.AUTO_WORKERS}
  # pylint: disable=protected-access
  video = prepare._builder('realeyes', str(tmp_path), auto)
  assert video.builder_config.name == 'default'
  assert video.builder_config.num_workers == len(os.sched_getaffinity(0))
  # A builder without workers (rendered, not decoded) takes no such option.
  assert prepare._builder('synthetic_faces/tiny', str(tmp_path),
                          auto).builder_config.name == 'tiny'
  assert prepare._builder('realeyes', str(tmp_path),
                          {}).builder_config.num_workers == 0
