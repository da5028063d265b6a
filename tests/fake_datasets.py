"""Format-exact fake copies of every dataset layout the builders read.

Each writer puts into `root` what the dataset's owners distribute
(docs/data_formats.md): their folder and file names, file formats and
quirks, including what the real release lacks. The pictures are synthetic
cartoon faces drawn from the labels (`tfds_builders.synthetic_faces.faces`:
valence bends the mouth, arousal opens the eyes), so the labels carry a
learnable signal, and some frames show no face at all.

  from tests import fake_datasets
  fake = fake_datasets.write('recola', tmp_path / 'recola')
  # python -m affect_jax.prepare --dataset=recola --manual_dir=<fake.root>
  fake.splits        # {'train': [...], 'validation': [...]}: TFDS splits
  fake.videos['dev_1'].valence   # float32 [T], one value per record

`LAYOUTS` names, for each layout, the builder (`--dataset=` of
`affect_jax.prepare`) and the paper config + variant that trains on it, with
what a user must add to that command (`user_flags`) and the other layouts
the config reads (`needs`).

Faces and detection. The layouts without shipped face geometry (RECOLA,
RealEyes, AFEW: raw videos) are prepared with the builders' default, dlib's
HOG detector. dlib finds the cartoon faces of only about half of the
subjects (docs/datasets.md: 57% of 40 at 640x480; 4 of 12 at 320x240 here),
where it finds the frontal faces of these datasets' real recordings; so
these writers cast only subjects whose face dlib finds on probe frames of
their first video (`_cast`), as a real recording shows a findable face.
Frames drawn without a face (the person out of the picture) are then
flagged has_face=False by the detector. Aff-Wild ships boxes and landmarks,
AFEW-VA and AffectNet landmarks (and AffectNet a box), Aff-Wild2 and the
frame lists ship aligned crops: those are used as a user's copy would use
them, with no detector involved.

Format writers (`write_arff`, `write_raters`, `write_pts`, `write_values`,
...) are public: the builder tests write their edge-case fixtures with them.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.core import video as video_lib
from tfds_builders.synthetic_faces import faces
from tfds_builders.synthetic_faces import realeyes_layout

# --------------------------------------------------------------- results ---


@dataclasses.dataclass(eq=False)
class FakeVideo:
  """One recording of a fake copy, as its records must come out.

  Attributes:
    video_id, subject_id: as the builder names them.
    split: the TFDS split it must land in.
    valence, arousal: float32 [T] per record (frame order), NaN where the
      copy gives no label; T = the number of records.
    emotions: float32 [T, C] multi-hot / one-hot, or None (no emotion
      labels).
    no_face: bool [T], frames drawn without a face.
  """
  video_id: str
  subject_id: str
  split: str
  valence: np.ndarray
  arousal: np.ndarray
  emotions: np.ndarray | None = None
  no_face: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return len(self.valence)


@dataclasses.dataclass(eq=False)
class FakeCopy:
  """A fake copy on disk and what its records must hold.

  Attributes:
    layout: the writer's name (a key of WRITERS).
    root: the folder to pass as --manual_dir.
    videos: {video id: FakeVideo}, every recording the builder must write.
    unlabelled: video ids on disk that the builder must leave out (e.g.
      RECOLA's test recordings, whose labels are not distributed).
    emotion_names: the class names of `FakeVideo.emotions`.
  """
  layout: str
  root: str
  videos: dict[str, FakeVideo]
  unlabelled: tuple[str, ...] = ()
  emotion_names: tuple[str, ...] = ()

  @property
  def splits(self) -> dict[str, list[str]]:
    """{TFDS split: sorted video ids}."""
    out: dict[str, list[str]] = {}
    for v in self.videos.values():
      out.setdefault(v.split, []).append(v.video_id)
    return {k: sorted(ids) for k, ids in sorted(out.items())}

  def frames(self, split: str) -> int:
    """Number of records of `split`."""
    return sum(v.num_frames for v in self.videos.values() if v.split == split)


# --------------------------------------------------------- format writers ---


def _makedirs_for(path: str) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)


def write_lines(path: str, lines) -> None:
  """Writes `lines` with a newline after each (creating the folder)."""
  _makedirs_for(path)
  with open(path, 'w', newline='') as f:
    f.write(''.join(f'{line}\n' for line in lines))


ARFF_HEADER = ('@relation GOLDSTANDARD', '@attribute Instance_name string',
               '@attribute frameTime numeric',
               '@attribute GoldStandard numeric', '@data')
RATERS_HEADER = 'time;FM1 ;FM2 ;FM3 ;FF1 ;FF2 ;FF3'  # As distributed.


def write_arff(path: str, instance: str, values, step: float = 0.04) -> None:
  """An AVEC 2016 gold-standard file: one row `instance,time,value` a step."""
  write_lines(path, list(ARFF_HEADER) + [
      f'{instance},{r * step:.2f},{v:.6f}' for r, v in enumerate(values)])


def write_raters(path: str, values, step: float = 0.04) -> None:
  """An AVEC 2016 `ratings_individual` CSV of [N, 6] ratings."""
  write_lines(path, [RATERS_HEADER] + [
      f'{r * step:.2f};' + ';'.join(f'{v:.6f}' for v in row)
      for r, row in enumerate(np.asarray(values))])


def write_pts(path: str, points) -> None:
  """An iBUG .pts file (`version: 1`, `n_points: N`, `{`, `x y`..., `}`)."""
  points = np.asarray(points, np.float64)
  write_lines(path, ['version: 1', f'n_points: {len(points)}', '{'] +
              [f'{x:.3f} {y:.3f}' for x, y in points] + ['}'])


def write_values(path: str, values, digits: int = 4) -> np.ndarray:
  """An Aff-Wild annotation file (one value a line); returns the values as
  they read back (float32)."""
  text = [f'{v:.{digits}f}' for v in values]
  write_lines(path, text)
  return np.array([float(t) for t in text], np.float32)


def box_corners(box) -> np.ndarray:
  """(ymin, xmin, ymax, xmax) -> the 4 corner points (x, y) of a .pts box."""
  y0, x0, y1, x1 = (float(v) for v in box)
  return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64)


# -------------------------------------------------------------- rendering ---


@dataclasses.dataclass(eq=False)
class Rendered:
  """One rendered recording: the frames and what was drawn.

  Attributes:
    video: the label trajectories (faces.Video, `num_frames` long; a
      writer may use more labels than frames, see `render`).
    images: uint8 [T, H, W, 3].
    landmarks: float32 [T, 68, 2] (x, y) frame pixels (meaningless where
      no_face).
    boxes: float32 [T, 4] (ymin, xmin, ymax, xmax) frame pixels.
    no_face: bool [T].
  """
  video: faces.Video
  images: np.ndarray
  landmarks: np.ndarray
  boxes: np.ndarray
  no_face: np.ndarray


def _with_no_face(video: faces.Video, no_face: np.ndarray) -> faces.Video:
  """The person leaves the picture on the `no_face` frames: the face centre
  moves far outside the frame (background, light and noise stay)."""
  center = video.center.copy()
  center[no_face] = (4.0, 4.0)
  return dataclasses.replace(video, center=center)


def render(subject: faces.Subject, video: faces.Video, num_frames: int,
           size: tuple[int, int], no_face=()) -> Rendered:
  """Frames 0..num_frames-1 of `video` (which may be longer: labels that
  run past the video) at `size` = (height, width)."""
  mask = np.zeros(video.num_frames, bool)
  mask[list(no_face)] = True
  shown = _with_no_face(video, mask)
  h, w = size
  images, marks, boxes = [], [], []
  for i in range(num_frames):
    image, lm, box = faces.render_frame(subject, shown, i, size)
    images.append(image)
    marks.append(lm * [w, h])
    boxes.append(box * [h, w, h, w])
  return Rendered(video, np.stack(images), np.float32(marks),
                  np.float32(boxes), mask[:num_frames])


def write_video(path: str, images, fps: float, codec: str = 'libx264'
                ) -> None:
  """`video_lib.write_video`, creating the folder."""
  _makedirs_for(path)
  video_lib.write_video(path, images, fps, codec=codec)


def _detect_all(images) -> bool:
  from tfds_builders.core import face  # pylint: disable=g-import-not-at-top
  detect = face.make_detector('dlib')
  return all(len(detect(image)) for image in images)


def _cast(rng: np.random.Generator, size: tuple[int, int],
          probes: int = 3, tries: int = 40) -> faces.Subject:
  """A subject whose cartoon face dlib finds (module doc), from `rng`."""
  for _ in range(tries):
    subject = faces.make_subject(rng)
    probe = faces.make_video(np.random.default_rng(rng.integers(2**31)),
                             probes, 1.0)
    if _detect_all(faces.render_frame(subject, probe, i, size)[0]
                   for i in range(probes)):
      return subject
  raise AffectJaxError(f'fake_datasets: no subject dlib finds at {size} in '
                       f'{tries} tries; use larger frames.')


def _no_face_frames(n: int, start: float = 0.4, length: int = 5) -> list[int]:
  """A stretch of `length` frames from `start` of the way in."""
  first = int(n * start)
  return list(range(first, min(n, first + length)))


# ---------------------------------------------------------------- layouts ---


def _recola(root: str, *, subjects: int = 3, frames: int = 32,
            seed: int = 0, size=(240, 320), test: int = 1,
            test_labels: bool = False) -> FakeCopy:
  """RECOLA as released for AVEC 2016 (docs/data_formats.md).

  `subjects` recordings each of train and dev (+ `test` test recordings),
  25 fps .mp4; gold standard .arff and the six raters' CSV, one row per
  40 ms and one row past the last frame (7,501 rows for 7,500 frames), for
  train and dev only unless `test_labels` (the AVEC release ships no test
  labels). The second train recording shows no face for 5 frames.
  """
  fps = 25.0
  rng = np.random.default_rng([seed, 1])
  videos, unlabelled = {}, []
  splits = [('train', 'train', subjects), ('dev', 'validation', subjects),
            ('test', 'test', test)]
  for avec, split, count in splits:
    for n in range(1, count + 1):
      rec = f'{avec}_{n}'
      subject = _cast(rng, size)
      video = faces.make_video(rng, frames + 1, fps)
      no_face = _no_face_frames(frames) if rec == 'train_2' else ()
      shown = render(subject, video, frames, size, no_face)
      write_video(
          os.path.join(root, 'recordings_video', f'{rec}.mp4'), shown.images,
          fps)
      labelled = avec != 'test' or test_labels
      if not labelled:
        unlabelled.append(rec)
        continue
      values = {}
      for dim in ('arousal', 'valence'):
        gold = getattr(video, dim)
        write_arff(os.path.join(root, 'ratings_gold_standard', dim,
                                f'{rec}.arff'), rec, gold)
        values[dim] = np.float32([float(f'{v:.6f}') for v in gold])
        # Six raters: the gold standard plus rater-specific noise.
        noise = np.random.default_rng([seed, n, len(avec), len(dim)]).normal(
            0, 0.1, (len(gold), 6))
        write_raters(os.path.join(root, 'ratings_individual', dim,
                                  f'{rec}.csv'),
                     np.clip(gold[:, None] + noise, -1, 1))
      videos[rec] = FakeVideo(rec, rec, split, values['valence'][:frames],
                              values['arousal'][:frames],
                              no_face=shown.no_face)
  return FakeCopy('recola', root, videos, tuple(unlabelled))


def _aff_wild(root: str, *, subjects: int = 6, frames: int = 32,
              seed: int = 0, test: int = 2, test_labels: bool = True
              ) -> FakeCopy:
  """Aff-Wild (kollias2019) with shipped boxes and landmarks.

  `subjects` train videos (one person each, mixed resolutions, .mp4 and
  .avi), `test` test videos; one value per line, line i = frame i; the
  second video's annotation is 2 lines shorter than the video (the builder
  drops the frames past it); bboxes/ and landmarks/ `<frame>.pts` for every
  frame showing a face, none for the 5 frames of the first video without
  one. `test_labels`: annotations/test/ present (released after the
  challenge).
  """
  from tfds_builders.aff_wild import aff_wild  # pylint: disable=g-import-not-at-top
  fps = 30.0
  rng = np.random.default_rng([seed, 2])
  sizes = ((96, 128), (120, 160), (112, 144))
  videos, unlabelled = {}, []
  train_ids = [f'{100 + k}' for k in range(subjects)]
  members = aff_wild.split_videos(train_ids, 0.1)
  split_of = {vid: s for s, ids in members.items() for vid in ids}
  ids = [('train', v) for v in train_ids] + [
      ('test', f'{200 + k}') for k in range(test)]
  for k, (avec, vid) in enumerate(ids):
    size = sizes[k % len(sizes)]
    ext = '.avi' if k % 3 == 2 else '.mp4'
    subject = faces.make_subject(rng)
    video = faces.make_video(rng, frames, fps)
    no_face = _no_face_frames(frames) if k == 0 else ()
    shown = render(subject, video, frames, size, no_face)
    write_video(
        os.path.join(root, 'videos', avec, vid + ext), shown.images, fps,
        codec='mpeg4' if ext == '.avi' else 'libx264')
    for i in range(frames):
      if not shown.no_face[i]:
        write_pts(os.path.join(root, 'bboxes', avec, vid, f'{i}.pts'),
                  box_corners(shown.boxes[i]))
        write_pts(os.path.join(root, 'landmarks', avec, vid, f'{i}.pts'),
                  shown.landmarks[i])
    if avec == 'test' and not test_labels:
      unlabelled.append(vid)
      continue
    lines = frames - 2 if k == 1 else frames
    values = {dim: write_values(
        os.path.join(root, 'annotations', avec, dim, f'{vid}.txt'),
        getattr(video, dim)[:lines]) for dim in ('valence', 'arousal')}
    split = split_of.get(vid, 'test')
    videos[vid] = FakeVideo(vid, vid, split, values['valence'],
                            values['arousal'], no_face=shown.no_face[:lines])
  return FakeCopy('aff_wild', root, videos, tuple(unlabelled))


def _realeyes(root: str, *, subjects: int = 5, frames: int = 32,
              seed: int = 0, size=(240, 320)) -> FakeCopy:
  """RealEyes-format emotion videos (our definition of the private layout).

  One 30 fps .mp4 a subject (the first subject has a second video, which
  shows no face for 5 frames), subjects.csv, labels/<id>.csv with the 8
  emotions of each frame, `faces.emotions_from_va` of the frame's
  valence/arousal under the `realeyes_table4` rule (tzirakis2019's class
  frequencies). Split 80/20 by subject as the builder splits (valence and
  arousal: NaN, the layout has none).
  """
  from tfds_builders.realeyes import realeyes  # pylint: disable=g-import-not-at-top
  fps = 30.0
  rng = np.random.default_rng([seed, 3])
  names = [f'p{k:03d}' for k in range(subjects)]
  members = realeyes.split_subjects(names, 0.2, 0.0)
  split_of = {s: split for split, ids in members.items() for s in ids}
  videos = {}
  os.makedirs(os.path.join(root, 'labels'), exist_ok=True)
  for k, person in enumerate(names):
    subject = _cast(rng, size)
    for v in range(2 if k == 0 else 1):
      vid = f'{person}_v{v}'
      video = faces.make_video(rng, frames, fps)
      no_face = _no_face_frames(frames) if v == 1 else ()
      shown = render(subject, video, frames, size, no_face)
      write_video(os.path.join(root, 'videos', f'{vid}.mp4'),
                            shown.images, fps)
      emotions = faces.emotions_from_va(video.valence, video.arousal,
                                        'realeyes_table4')
      realeyes_layout.write_labels(
          os.path.join(root, 'labels', f'{vid}.csv'), emotions)
      nan = np.full(frames, np.nan, np.float32)
      videos[vid] = FakeVideo(vid, person, split_of[person], nan, nan.copy(),
                              emotions, shown.no_face)
  with open(os.path.join(root, 'subjects.csv'), 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('video_id', 'subject_id'))
    for vid in sorted(videos):
      w.writerow((vid, videos[vid].subject_id))
  return FakeCopy('realeyes', root, videos,
                  emotion_names=F.REALEYES_EMOTIONS)


WRITERS = {'recola': _recola, 'aff_wild': _aff_wild, 'realeyes': _realeyes}


# ------------------------------------------------------ layouts -> configs ---


@dataclasses.dataclass(frozen=True)
class Layout:
  """A dataset layout and the paper config that trains on it.

  Attributes:
    name: the key in LAYOUTS.
    writer: the key of WRITERS that writes its fake copy.
    dataset: `--dataset=` of affect_jax.prepare (builder[/config]).
    config: `--config=` of affect_jax.main (FILE[:VARIANT]).
    needs: other layouts the config also reads (prepared into the same
      data dir first).
    user_flags: what the config's own docstring tells a user to add
      (placeholders such as `init_from`, here filled as `init_from` says).
    init_from: (config key, layout, stage folder): the key takes the
      workdir of that layout's run, e.g. transfer's AffWildNet source run.
    result_stages: {stage folder: the splits its results.json must list}.
    doc: one line.
  """
  name: str
  writer: str
  dataset: str
  config: str
  needs: tuple[str, ...] = ()
  user_flags: tuple[str, ...] = ()
  init_from: tuple[str, str, str] | None = None
  result_stages: tuple[tuple[str, tuple[str, ...]], ...] = ()
  doc: str = ''


LAYOUTS = {l.name: l for l in (
    Layout('recola', 'recola', 'recola', 'configs/recola_finetune.py:random',
           result_stages=(('test', ('validation',)),),
           doc='RECOLA AVEC 2016 (no test labels): Table 5 row 1, '
               'validation only'),
    Layout('aff_wild', 'aff_wild', 'aff_wild', 'configs/affwildnet.py',
           user_flags=('--config.train.init_from=',),
           result_stages=(('test', ('validation', 'test')),),
           doc='Aff-Wild with its test annotations: AffWildNet (VGG-Face '
               'CNN-GRU + landmarks) from a random trunk'),
    Layout('realeyes', 'realeyes', 'realeyes', 'configs/realeyes.py',
           needs=('recola',), result_stages=(('test', ('validation',)),),
           doc='RealEyes format: emotion pretraining -> RECOLA fine-tuning'),
)}


def write(layout: str, root, **options) -> FakeCopy:
  """Writes the fake copy of `layout` (a key of LAYOUTS or WRITERS) into
  `root` (created) and returns what its records must hold.

  `options`: the writer's sizes (`subjects`, `frames`, `seed`, ...; see
  each writer's docstring). Deterministic for the same options.
  """
  name = LAYOUTS[layout].writer if layout in LAYOUTS else layout
  if name not in WRITERS:
    raise AffectJaxError(f'fake_datasets: unknown layout {layout!r}; use one '
                         f'of {sorted(set(LAYOUTS) | set(WRITERS))}.')
  root = str(root)
  os.makedirs(root, exist_ok=True)
  return WRITERS[name](root, **options)
