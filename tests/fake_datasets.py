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
RealEyes, AFEW, Aff-Wild2's raw videos) are prepared with the builders'
default, dlib's HOG detector (and dlib's 68 landmarks). dlib finds the
cartoon faces of only about half of the subjects (docs/datasets.md: 57% of
40 at 640x480; 4 of 12 at 320x240 here), where it finds the frontal faces
of these datasets' real recordings; so these writers cast only subjects
whose face dlib finds on 4 frames of the video they appear in (`_cast`), as
a real recording shows a findable face: dlib then finds the face on >= 95%
of the frames that show one after encoding, and no face on the frames drawn
without one (the person out of the picture). Nothing needs
`--face_detector=none`. Aff-Wild ships boxes and landmarks (none where no
face was found), AFEW-VA landmarks, AffectNet a box and landmarks,
Aff-Wild2 and the frame lists aligned crops: those are used as a user's
copy would use them, with no detector involved.

Sizes: 24-32 frames a video, 240x320 frames where dlib must find the face
(it needs faces of ~80 pixels), 96-160 pixels where the geometry is
shipped, 112x112 aligned crops, a few subjects a split: seconds to write,
seconds to prepare.

Format writers (`write_arff`, `write_raters`, `write_pts`, `write_values`,
...) are public: the builder tests write their edge-case fixtures with them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import zipfile

import numpy as np
from PIL import Image

from affect_jax import features as F
from affect_jax.errors import AffectJaxError
from tfds_builders.afew import afew
from tfds_builders.afew_va import afew_va
from tfds_builders.aff_wild import aff_wild
from tfds_builders.aff_wild2 import aff_wild2
from tfds_builders.affectnet import affectnet
from tfds_builders.core import face
from tfds_builders.core import video as video_lib
from tfds_builders.realeyes import realeyes
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


# MPEG-4 Part 2 .avi (AFEW's, some of Aff-Wild's) at a bit rate where the
# faces stay as sharp as in the H.264 .mp4 files: FFmpeg's default blurs them
# after the first keyframe interval, and dlib then misses them.
AVI_BIT_RATE = 2_000_000


def write_video(path: str, images, fps: float, codec: str = 'libx264'
                ) -> None:
  """`video_lib.write_video`, creating the folder."""
  _makedirs_for(path)
  video_lib.write_video(path, images, fps, codec=codec,
                        bit_rate=AVI_BIT_RATE if codec == 'mpeg4' else None)


def _detect_all(images) -> bool:
  detect = face.make_detector('dlib')
  return all(len(detect(image)) for image in images)


def _cast(rng: np.random.Generator, size: tuple[int, int],
          video: faces.Video, probes: int = 4, tries: int = 40
          ) -> faces.Subject:
  """A subject from `rng` whose cartoon face dlib finds (module doc) on
  `probes` frames spread over `video`, the recording it will appear in."""
  frames = np.linspace(0, video.num_frames - 1, probes).round().astype(int)
  for _ in range(tries):
    subject = faces.make_subject(rng)
    if _detect_all(faces.render_frame(subject, video, i, size)[0]
                   for i in frames):
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
      video = faces.make_video(rng, frames + 1, fps)
      subject = _cast(rng, size, video)
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
  fps = 30.0
  rng = np.random.default_rng([seed, 3])
  names = [f'p{k:03d}' for k in range(subjects)]
  members = realeyes.split_subjects(names, 0.2, 0.0)
  split_of = {s: split for split, ids in members.items() for s in ids}
  videos = {}
  os.makedirs(os.path.join(root, 'labels'), exist_ok=True)
  for k, person in enumerate(names):
    recordings = [faces.make_video(rng, frames, fps)
                  for _ in range(2 if k == 0 else 1)]
    subject = _cast(rng, size, recordings[0])
    for v, video in enumerate(recordings):
      vid = f'{person}_v{v}'
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


def _aligned(video: faces.Video) -> faces.Video:
  """The video as an aligner's crops show it: the face upright, centred and
  filling the picture."""
  n = video.num_frames
  return dataclasses.replace(
      video, center=np.tile(np.float32([0.5, 0.47]), (n, 1)),
      scale=np.full(n, 0.36, np.float32), angle=np.zeros(n, np.float32))


def _write_images(folder: str, images, names) -> None:
  os.makedirs(folder, exist_ok=True)
  for image, name in zip(images, names):
    Image.fromarray(image).save(os.path.join(folder, name), quality=95)


def nearest_expression(valence, arousal, names) -> np.ndarray:
  """Per frame, the index in `names` of the expression whose circumplex
  point (`faces.EXPRESSION_VA`) is nearest to (valence, arousal). `names`
  are the dataset's class names for faces.AFEW_EXPRESSIONS, in the same
  order, or None for a class the dataset lacks; returns int [T] indices
  into the dataset's own class list given by `names`' positions."""
  points = np.array([faces.EXPRESSION_VA[e] for e in faces.AFEW_EXPRESSIONS])
  va = np.stack([np.asarray(valence), np.asarray(arousal)], -1)
  nearest = np.argmin(((va[:, None] - points[None]) ** 2).sum(-1), -1)
  return np.array([names[k] for k in nearest], np.int64)


# faces.AFEW_EXPRESSIONS (angry, disgust, fear, happy, neutral, sad,
# surprise) -> the class index of each dataset.
_AFF_WILD2_EXPR = (1, 2, 3, 4, 0, 5, 6)  # Neutral, Anger, ... Surprise, Other
_AFFECTNET_EXPR = (6, 5, 4, 1, 0, 2, 3)  # neutral, happy, sad, surprise, ...


def _aff_wild2(root: str, *, frames: int = 32, seed: int = 0,
               crop: int = 112, size=(240, 320)) -> FakeCopy:
  """Aff-Wild2 as distributed for ABAW, both label sets.

  Train_Set: two videos as cropped_aligned/ JPEGs (`crop` px, 1-based,
  no image for the 5 frames where the aligner found no face; their first
  three VA rows `-5,-5`, EXPR rows `-1`), one raw video only (videos/,
  dlib-detected; 5 frames without a face), and one raw video with two
  people, annotated as `<video>_left` / `<video>_right`. Validation_Set:
  two cropped_aligned videos, one of which also has a raw video (the
  builder's 'auto' takes the crops), the other ends with two unlabelled
  rows. EXPR files: the 7-class header in Train_Set, the newer 8-class one
  (`,Other`) in Validation_Set; each row the expression nearest the frame's
  valence/arousal. The records of `va` and of `expr` differ only in their
  labels: `FakeCopy.videos` has both (valence/arousal NaN where `-5`;
  `emotions` the 8 one-hot EXPR classes, NaN where `-1`).
  """
  fps = 30.0
  rng = np.random.default_rng([seed, 4])
  ann = os.path.join(root, 'Annotations')
  classes = len(aff_wild2.EXPR_CLASSES)
  plan = [('1-30-1280x720', 'Train_Set', 'cropped'),
          ('2-30-640x360', 'Train_Set', 'cropped'),
          ('video3', 'Train_Set', 'raw'),
          ('10-60-1280x720', 'Train_Set', 'pair'),
          ('4-30-1920x1080', 'Validation_Set', 'both'),
          ('5-60-1920x1080', 'Validation_Set', 'cropped')]
  videos = {}

  def annotate(vid, folder, video, no_label, no_face):
    va = np.stack([video.valence, video.arousal], -1).astype(np.float64)
    text = [f'{v:.3f},{a:.3f}' for v, a in va]
    expr = nearest_expression(video.valence, video.arousal, _AFF_WILD2_EXPR)
    rows = [str(k) for k in expr]
    for i in no_label:
      text[i], rows[i] = '-5,-5', '-1'
    write_lines(os.path.join(ann, 'VA_Estimation_Challenge', folder,
                             f'{vid}.txt'), ['valence,arousal'] + text)
    header = aff_wild2.EXPR_CLASSES[:7 if folder == 'Train_Set' else 8]
    write_lines(os.path.join(ann, 'EXPR_Recognition_Challenge', folder,
                             f'{vid}.txt'), [','.join(header)] + rows)
    values = np.array([[float(x) for x in t.split(',')] for t in text],
                      np.float32)
    values[values == -5] = np.nan
    emotions = np.eye(classes, dtype=np.float32)[expr]
    emotions[list(no_label)] = np.nan
    person = vid.rsplit('_', 1)[0] if vid.endswith(('_left', '_right')) \
        else vid
    split = {'Train_Set': 'train', 'Validation_Set': 'validation'}[folder]
    videos[vid] = FakeVideo(vid, person, split, values[:, 0], values[:, 1],
                            emotions, no_face)

  for vid, folder, kind in plan:
    if kind == 'pair':
      half = (size[0], size[1] * 5 // 8)
      recordings = [faces.make_video(rng, frames, fps) for _ in range(2)]
      people = [(_cast(rng, half, v), v) for v in recordings]
      shown = [render(p, v, frames, half) for p, v in people]
      write_video(os.path.join(root, 'videos', f'{vid}.mp4'),
                  np.concatenate([s.images for s in shown], 2), fps)
      for side, (_, video), r in zip(('left', 'right'), people, shown):
        annotate(f'{vid}_{side}', folder, video, (), r.no_face)
      continue
    video = faces.make_video(rng, frames, fps)
    subject = (_cast(rng, size, video) if kind == 'raw' else
               faces.make_subject(rng))
    no_face = _no_face_frames(frames, 0.3 if kind != 'raw' else 0.6)
    no_label = no_face[:3] if kind != 'raw' else ()
    if vid == '5-60-1920x1080':
      no_face, no_label = [], (frames - 2, frames - 1)
    if kind in ('cropped', 'both'):
      shown = render(subject, _aligned(video), frames, (crop, crop))
      keep = [i for i in range(frames) if i not in no_face]
      _write_images(os.path.join(root, 'cropped_aligned', vid),
                    shown.images[keep], [f'{i + 1:05d}.jpg' for i in keep])
      mask = np.isin(np.arange(frames), no_face)
    if kind in ('raw', 'both'):
      raw = render(subject, video, frames, size, no_face)
      write_video(os.path.join(root, 'videos', f'{vid}.mp4'), raw.images,
                  fps)
      mask = raw.no_face if kind == 'raw' else mask
    annotate(vid, folder, video, no_label, mask)
  return FakeCopy('aff_wild2', root, videos,
                  emotion_names=aff_wild2.EXPR_NAMES)


def write_afew_va_clip(folder: str, actor: str, images, labels,
                       frames=None) -> None:
  """An AFEW-VA clip folder: `00000.png ...` and `<clip>.json`.

  Args:
    folder: the clip's folder (its name is the clip id).
    actor: the JSON's "actor".
    images: uint8 [T, H, W, 3] frames, or {frame number: image}.
    labels: {frame number: (valence, arousal, [68, 2] landmarks)} with
      integer labels in [-10, 10]; frames without an entry have no label.
  """
  clip = os.path.basename(os.path.normpath(folder))
  items = images.items() if isinstance(images, dict) else enumerate(images)
  numbers, pictures = zip(*sorted(items, key=lambda kv: kv[0]))
  _write_images(folder, pictures, [f'{i:05d}.png' for i in numbers])
  entries = {f'{i:05d}': {'valence': int(v), 'arousal': int(a),
                          'landmarks': np.round(np.asarray(lm, np.float64),
                                                2).tolist()}
             for i, (v, a, lm) in sorted(labels.items())}
  with open(os.path.join(folder, f'{clip}.json'), 'w') as f:
    json.dump({'actor': actor, 'video_id': clip, 'frames': entries}, f)


def zip_clips(folder: str) -> str:
  """Zips the clip folders of `folder` as AFEW-VA's parts are distributed
  (`01.zip` holding `<clip>/...`) and removes `folder`; returns the zip."""
  path = os.path.normpath(folder) + '.zip'
  with zipfile.ZipFile(path, 'w') as z:
    for clip in sorted(os.listdir(folder)):
      for name in sorted(os.listdir(os.path.join(folder, clip))):
        z.write(os.path.join(folder, clip, name), f'{clip}/{name}')
  shutil.rmtree(folder)
  return path


def _afew_va(root: str, *, frames: int = 24, seed: int = 0,
             size=(96, 128)) -> FakeCopy:
  """AFEW-VA as distributed: zips `01.zip`, `02.zip` of clip folders
  `<clip>/00000.png ...` + `<clip>/<clip>.json` (integer valence/arousal in
  [-10, 10] and 68 landmarks per frame). Six actors, seven clips; one actor
  in two clips spelled two ways ('Ann Lee', 'ann  lee': one subject); clip
  002's last PNG has no JSON entry (NaN labels). Folds: the builder's 5
  actor-disjoint folds.
  """
  rng = np.random.default_rng([seed, 5])
  clips = {'001': 'Ann Lee', '002': 'Bob Ray', '003': 'Cid Moe',
           '004': 'Dee Fox', '005': 'ann  lee', '006': 'Eve Kim',
           '007': 'Fay Lu'}
  parts = {'01': ('001', '002', '003', '004'), '02': ('005', '006', '007')}
  canonical = {'ann  lee': 'Ann Lee'}
  videos, labelled = {}, {}
  for part, names in parts.items():
    for clip in names:
      subject, video = faces.make_subject(rng), faces.make_video(rng, frames,
                                                                 25.0)
      shown = render(subject, video, frames, size)
      values = {dim: np.round(faces.quantize(getattr(video, dim), 21) *
                              10).astype(int) for dim in ('valence',
                                                          'arousal')}
      count = frames - 1 if clip == '002' else frames
      write_afew_va_clip(os.path.join(root, part, clip), clips[clip],
                         shown.images, {i: (values['valence'][i],
                                            values['arousal'][i],
                                            shown.landmarks[i])
                                        for i in range(count)})
      actor = canonical.get(clips[clip], clips[clip])
      labelled[actor] = labelled.get(actor, 0) + count
      nan = np.full(frames - count, np.nan, np.float32)
      videos[clip] = FakeVideo(
          clip, actor, '', np.concatenate([values['valence'][:count] / 10,
                                           nan]).astype(np.float32),
          np.concatenate([values['arousal'][:count] / 10, nan]).astype(
              np.float32), no_face=np.zeros(frames, bool))
    zip_clips(os.path.join(root, part))
  folds = afew_va.assign_folds(labelled, 5)
  for v in videos.values():
    v.split = f'fold_{folds[v.subject_id]}'
  return FakeCopy('afew_va', root, videos)


def _afew(root: str, *, train: int = 5, validation: int = 3,
          frames: int = 24, seed: int = 0, size=(240, 320)) -> FakeCopy:
  """AFEW / EmotiW: `Train_AFEW/<Emotion>/<clip>.avi` and `Val_AFEW/...`
  (25 fps MPEG-4 .avi), one expression per clip drawn with AFEW's class
  shares (`faces.make_expression_clip`); the release's extra
  `AlignedFaces_LBPTOP_Points/` folder and an empty class folder; the
  second train clip shows no face for 5 frames. Labels: the clip's one-hot
  emotion on every frame (valence/arousal NaN).
  """
  rng = np.random.default_rng([seed, 6])
  names = afew.Afew.EMOTION_NAMES
  videos = {}
  used = set()
  for folder, split, count in (('Train_AFEW', 'train', train),
                               ('Val_AFEW', 'validation', validation)):
    for n in range(count):
      clip = f'{1000 + 37 * len(videos):06d}'
      video, k = faces.make_expression_clip(rng, frames, 25.0)
      subject = _cast(rng, size, video)
      no_face = _no_face_frames(frames) if len(videos) == 1 else ()
      shown = render(subject, video, frames, size, no_face)
      write_video(os.path.join(root, folder, afew.EMOTION_FOLDERS[k],
                               f'{clip}.avi'), shown.images, 25.0,
                  codec='mpeg4')
      used.add(afew.EMOTION_FOLDERS[k])
      nan = np.full(frames, np.nan, np.float32)
      videos[clip] = FakeVideo(
          clip, clip, split, nan, nan.copy(),
          np.tile(np.eye(len(names), dtype=np.float32)[k], (frames, 1)),
          shown.no_face)
  extra = os.path.join(root, 'Train_AFEW', 'AlignedFaces_LBPTOP_Points',
                       'Faces', '001000')
  os.makedirs(extra, exist_ok=True)
  open(os.path.join(extra, 'frame_001.png'), 'wb').close()
  empty = next(e for e in afew.EMOTION_FOLDERS if e not in used)
  os.makedirs(os.path.join(root, 'Train_AFEW', empty), exist_ok=True)
  return FakeCopy('afew', root, videos, emotion_names=names)


def affectnet_line(name: str, box, landmarks, expression, valence,
                   arousal) -> str:
  """One AffectNet CSV row: box (x, y, w, h) and 68 (x, y) landmarks in
  image pixels, the expression code, valence and arousal as written."""
  x, y, w, h = box
  marks = ';'.join(f'{v:.2f}' for v in np.asarray(landmarks).reshape(-1))
  return f'{name},{x},{y},{w},{h},{marks},{expression},{valence},{arousal}'


def _affectnet(root: str, *, train: int = 8, validation: int = 4,
               seed: int = 0, size=(96, 96)) -> FakeCopy:
  """AffectNet's manually annotated set: Manually_Annotated_file_lists/
  {training,validation}.csv and Manually_Annotated_Images/<dir>/<file>.jpg,
  one face per image with its box and 68 landmarks; expression = the
  AffectNet class nearest the face's valence/arousal. Quirks: a No-Face
  image (expression 10, valence/arousal -2, no face drawn), an Uncertain one
  (9: no emotion, valence/arousal kept) and one with valence -2 only.
  """
  rng = np.random.default_rng([seed, 7])
  lists = os.path.join(root, 'Manually_Annotated_file_lists')
  lines = {'train': [], 'validation': []}
  videos = {}
  k = 0
  for split, count in (('train', train), ('validation', validation)):
    for n in range(count):
      name = f'{100 + k % 3}/{k * 7919 % 100003:06d}.jpg'
      k += 1
      subject, video = faces.make_subject(rng), faces.make_video(rng, 1, 1.0)
      no_face = split == 'train' and n == 1
      shown = render(subject, video, 1, size, [0] if no_face else ())
      _write_images(os.path.join(root, 'Manually_Annotated_Images',
                                 os.path.dirname(name)), shown.images,
                    [os.path.basename(name)])
      v, a = float(video.valence[0]), float(video.arousal[0])
      code = int(nearest_expression([v], [a], _AFFECTNET_EXPR)[0])
      text_v, text_a = f'{v:.4f}', f'{a:.4f}'
      if no_face:
        code, text_v, text_a = 10, '-2', '-2'
        box = (0, 0, size[1], size[0])
      else:
        y0, x0, y1, x1 = shown.boxes[0]
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        box = (x0, y0, min(int(round(x1)), size[1]) - x0,
               min(int(round(y1)), size[0]) - y0)
      if split == 'train' and n == 2:
        code = 9
      if split == 'validation' and n == 0:
        text_v = '-2'
      lines[split].append(affectnet_line(name, box, shown.landmarks[0], code,
                                         text_v, text_a))
      emotions = np.zeros((1, len(affectnet.EXPRESSIONS)), np.float32)
      if code < len(affectnet.EXPRESSIONS):
        emotions[0, code] = 1

      def value(t):
        return np.float32([np.nan if t == '-2' else float(t)])

      videos[name] = FakeVideo(name, name, split, value(text_v),
                               value(text_a), emotions,
                               np.array([no_face]))
  for split, csv_name in (('train', 'training.csv'),
                          ('validation', 'validation.csv')):
    write_lines(os.path.join(lists, csv_name),
                [','.join(affectnet.HEADER)] + lines[split])
  return FakeCopy('affectnet', root, videos,
                  emotion_names=affectnet.EXPRESSIONS)


def _frame_list(root: str, *, videos_per_split=(3, 2, 2), frames: int = 24,
                seed: int = 0, crop: int = 112) -> FakeCopy:
  """4K-style CSV frame lists: `train.csv` (with the header line),
  `val.csv` (no header, a `subject_id` column), `test.csv`; rows
  `frame_path,valence,arousal` relative to the CSV, aligned face crops
  `clips/<video>/<frame>.jpg` ordered by video then frame; one validation
  frame has an empty (unlabelled) valence.
  """
  rng = np.random.default_rng([seed, 8])
  out = {}
  for (csv_name, split), count in zip((('train.csv', 'train'),
                                       ('val.csv', 'validation'),
                                       ('test.csv', 'test')),
                                      videos_per_split):
    rows = ['frame_path,valence,arousal'] if split == 'train' else []
    for n in range(count):
      vid = f'clips/{split[:2]}{n:02d}'
      person = f'person{len(out)}'
      subject, video = faces.make_subject(rng), faces.make_video(rng, frames,
                                                                 25.0)
      shown = render(subject, _aligned(video), frames, (crop, crop))
      names = [f'{i:05d}.jpg' for i in range(frames)]
      _write_images(os.path.join(root, vid), shown.images, names)
      text = {dim: [f'{x:.4f}' for x in getattr(video, dim)]
              for dim in ('valence', 'arousal')}
      if split == 'validation' and n == 0:
        text['valence'][3] = ''
      for i, name in enumerate(names):
        row = f'{vid}/{name},{text["valence"][i]},{text["arousal"][i]}'
        rows.append(row + (f',{person}' if split == 'validation' else ''))
      floats = {dim: np.float32([float(x) if x else np.nan for x in t])
                for dim, t in text.items()}
      out[vid] = FakeVideo(vid, person if split == 'validation' else vid,
                           split, floats['valence'], floats['arousal'],
                           no_face=np.zeros(frames, bool))
    write_lines(os.path.join(root, csv_name), rows)
  return FakeCopy('frame_list', root, out)


WRITERS = {'recola': _recola, 'aff_wild': _aff_wild, 'realeyes': _realeyes,
           'aff_wild2': _aff_wild2, 'afew_va': _afew_va, 'afew': _afew,
           'affectnet': _affectnet, 'frame_list': _frame_list}


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
    Layout('aff_wild2_va', 'aff_wild2', 'aff_wild2/va',
           'configs/affwildnet.py:affwild2_va',
           user_flags=('--config.train.init_from=',),
           result_stages=(('test', ('validation',)),),
           doc='Aff-Wild2 valence/arousal (-5 = no label): AffWildNet'),
    Layout('aff_wild2_expr', 'aff_wild2', 'aff_wild2/expr',
           'configs/affwildnet.py:affwild2_expr',
           user_flags=('--config.train.init_from=',),
           result_stages=(('test', ('validation',)),),
           doc='Aff-Wild2 expressions (-1 = no label): AffWildNet, softmax'),
    Layout('afew_va', 'afew_va', 'afew_va', 'configs/transfer.py:afew_va',
           init_from=('cv.train.init_from', 'aff_wild', 'train'),
           result_stages=(('cv', ()),),
           doc='AFEW-VA zips: AffWildNet fine-tuned, 5-fold cross '
               'validation'),
    Layout('afew', 'afew', 'afew', 'configs/transfer.py:afew',
           init_from=('finetune.init_from', 'aff_wild', 'train'),
           result_stages=(('test', ('validation',)),),
           doc='AFEW / EmotiW: AffWildNet fine-tuned on 7 expressions, clip '
               'accuracy on validation'),
    Layout('frame_list', 'frame_list', 'frame_list', 'configs/affect4k.py',
           result_stages=(('test', ('test',)),),
           doc='4K-style CSV frame lists: AlexNet-GRU'),
    Layout('affectnet', 'affectnet', 'affectnet', 'configs/affect4k.py:crossdb',
           needs=('frame_list', 'aff_wild'),
           result_stages=(('test', ('test',)), ('cross', ())),
           doc='AffectNet: the 4K model scored on its own test split, '
               'Aff-Wild (train) and AffectNet (validation)'),
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
