"""Generation through Apache Beam (the `beam` extra): the plain path's records.

Skipped without apache-beam; `bash scripts/test_beam.sh` (run by CI) runs
them in their own environment (constraints-beam.txt), where
AFFECT_JAX_REQUIRE_BEAM=1 makes a missing apache_beam a failure.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

if os.environ.get('AFFECT_JAX_REQUIRE_BEAM') == '1':
  import apache_beam  # pylint: disable=unused-import  # Fails: not skipped.
else:
  pytest.importorskip('apache_beam',
                      reason='the beam extra: bash scripts/test_beam.sh')

# pylint: disable=g-import-not-at-top,wrong-import-position
from apache_beam.options import pipeline_options
import tensorflow_datasets as tfds

from affect_jax import features as F
from affect_jax import prepare
from affect_jax.errors import AffectJaxError
from tfds_builders import core
from tfds_builders.affectnet import affectnet
from tfds_builders.core import video as video_lib
from tfds_builders.realeyes import realeyes
from tfds_builders.synthetic_faces import realeyes_layout
from tests import builder_util
from tests import test_affectnet

OPTIONS = dict(detector='none', landmarks='none', image_size=24)
FRAMES, FPS = 10, 30.0


@pytest.fixture(scope='module')
def copy_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('realeyes_copy'))
  realeyes_layout.write_realeyes_layout(root, num_subjects=3,
                                        videos_per_subject=2,
                                        frames_per_video=FRAMES, fps=FPS,
                                        height=48, width=64)
  return root


@pytest.fixture(scope='module')
def plain(copy_dir, tmp_path_factory):
  return prepare.prepare('realeyes', str(tmp_path_factory.mktemp('plain')),
                         copy_dir, **OPTIONS)


def _keyed(builder) -> dict[str, list[tuple[int, dict]]]:
  """{split: [(record_key, record), ...]} in stored order."""
  out = {}
  for split, records in builder_util.records(builder).items():
    ids = sorted({r[F.RECORD_VIDEO_ID] for r in records})
    out[split] = [(core.record_key(ids.index(r[F.RECORD_VIDEO_ID]),
                                   int(r[F.RECORD_FRAME_INDEX])), r)
                  for r in records]
  return out


def _assert_same_records(expected, actual):
  want, got = _keyed(expected), _keyed(actual)
  assert sorted(want) == sorted(got)
  for split in want:
    keys = [k for k, _ in want[split]]
    # Same keys, and both stored in key order (the input pipeline needs it).
    assert [k for k, _ in got[split]] == keys == sorted(keys), split
    for (key, a), (_, b) in zip(want[split], got[split]):
      assert a.keys() == b.keys()
      for name in a:
        np.testing.assert_array_equal(a[name], b[name],
                                      err_msg=f'{split} {key:#x} {name}')
  assert ({s: v.num_examples for s, v in expected.info.splits.items()} ==
          {s: v.num_examples for s, v in actual.info.splits.items()})


def _assert_array_record_only(builder):
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  files = os.listdir(builder.data_dir)
  shards = [f for f in files if '.array_record-' in f]
  assert len(shards) == len(builder.info.splits)
  # Beam's helper files (tasks, skipped videos) do not stay behind.
  assert not [f for f in files if f.startswith('beam_')], files
  core.check_prepared(builder)


def test_direct_runner_writes_the_plain_records(copy_dir, plain, tmp_path):
  beamed = prepare.prepare('realeyes', str(tmp_path), copy_dir,
                           beam_runner='DirectRunner', **OPTIONS)
  assert beamed.builder_config.name == plain.builder_config.name
  _assert_same_records(plain, beamed)
  _assert_array_record_only(beamed)
  assert core.skipped_videos(beamed) == []
  assert 'tensorflow' not in sys.modules


def test_tfds_download_config_with_worker_processes(copy_dir, plain,
                                                     tmp_path):
  # TFDS's own DownloadConfig, options only (Beam's default DirectRunner),
  # two worker processes: tasks and records cross process boundaries.
  builder = realeyes.RealEyes(
      data_dir=str(tmp_path),
      config=realeyes.RealEyesConfig(name='t', **OPTIONS))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=copy_dir,
      beam_options=pipeline_options.PipelineOptions(flags=[
          '--direct_num_workers=2', '--direct_running_mode=multi_processing'
      ])))
  _assert_same_records(plain, builder)
  _assert_array_record_only(builder)


def test_skip_broken_leaves_out_the_same_videos(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  videos = root / 'videos'
  # Does not open (index at the end, cut off): left out before decoding.
  cut = videos / 's0000_v01.mp4'
  cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 2])
  # Opens, then ends early: left out by the worker that decodes it.
  _cut_while_decoding(videos / 's0002_v00.mp4', 2)
  options = dict(OPTIONS, skip_broken=True)
  plain = prepare.prepare('realeyes', str(tmp_path / 'plain'), str(root),
                          **options)
  beamed = prepare.prepare('realeyes', str(tmp_path / 'beam'), str(root),
                           beam_runner='DirectRunner', **options)
  _assert_same_records(plain, beamed)
  _assert_array_record_only(beamed)
  skipped = core.skipped_videos(plain)
  assert sorted(s['video_id'] for s in skipped) == ['s0000_v01', 's0002_v00']
  assert any('ends early' in s['reason'] for s in skipped)
  assert core.skipped_videos(beamed) == skipped
  reloaded = tfds.builder_from_directory(str(beamed.data_dir))
  assert core.skipped_videos(reloaded) == skipped


def _cut_while_decoding(path, keep: int):
  """`path` opens (faststart), then ends after `keep` of its frames."""
  images = [f.image for f in video_lib.iter_frames(str(path))]
  video_lib.write_video(str(path), images, FPS,
                        options={'movflags': 'faststart'})
  builder_util.cut_after_frames(path, keep)


def test_broken_videos_on_workers_are_errors_naming_them(copy_dir, tmp_path):
  root = shutil.copytree(copy_dir, tmp_path / 'copy')
  split = realeyes.RealEyes(data_dir=str(tmp_path), config='default')._videos(
      str(root))['validation']  # pylint: disable=protected-access
  for spec in split:
    _cut_while_decoding(spec.path, 2)
  with pytest.raises(AffectJaxError, match=(
      "skip_broken left out every video of split 'validation'")):
    prepare.prepare('realeyes', str(tmp_path / 'beam'), str(root),
                    beam_runner='DirectRunner', skip_broken=True, **OPTIONS)
  # Without skip_broken the worker's error stops the build, naming the file.
  with pytest.raises(AffectJaxError, match=(
      rf'{os.path.basename(split[0].path)} ends early.*--skip_broken')):
    prepare.prepare('realeyes', str(tmp_path / 'beam'), str(root),
                    beam_runner='DirectRunner', **OPTIONS)
  assert not [f for _, _, fs in os.walk(tmp_path / 'beam') for f in fs
              if 'array_record' in f or f == 'dataset_info.json']


def test_one_image_videos_grouped_into_tasks(tmp_path):
  # AffectNet: every photo is a one-frame video, several to a Beam element.
  root = test_affectnet._write_copy(str(tmp_path / 'copy'))  # pylint: disable=protected-access
  plain = builder_util.build(affectnet.AffectNet, affectnet.AffectNetConfig,
                             root, tmp_path / 'plain')
  beamed = affectnet.AffectNet(
      data_dir=str(tmp_path / 'beam'),
      config=affectnet.AffectNetConfig(name='t', detector='none',
                                       landmarks='none', image_size=32))
  beamed.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=root, beam_runner='DirectRunner'))
  _assert_same_records(plain, beamed)
  _assert_array_record_only(beamed)


def test_cli_refuses_an_unknown_beam_option(copy_dir, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'affect_jax.prepare', '--dataset=realeyes',
       f'--manual_dir={copy_dir}', f'--data_dir={tmp_path}',
       '--face_detector=none', '--beam_runner=DirectRunner',
       '--beam_options=direct_num_worker=2'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr
  assert "no option ['direct_num_worker']" in result.stderr
  assert not os.path.exists(tmp_path / 'realeyes')
