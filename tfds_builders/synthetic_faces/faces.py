"""Procedural cartoon face videos whose expression follows valence/arousal.

Pure numpy + PIL, deterministic, and size-agnostic: the same `Subject` and
`Video` render at 64x64 for the TFDS builder or at 640x480 for RealEyes-layout
.mp4 files.

  rng = np.random.default_rng(0)
  subject = make_subject(rng)
  video = make_video(rng, num_frames=120, fps=10.0)
  image, landmarks, box = render_frame(subject, video, 0, size=64)

What carries the signal (the labels) and what is nuisance:

* valence -> mouth curvature (smile / frown) and width; negative valence also
  lowers and knits the inner ends of the brows.
* arousal -> eye openness, brow raise and how far the mouth opens.
* nuisance, different per subject: skin tone, face width/height ratio, eye
  spacing and size, brow thickness, nose, hair colour and style, how
  expressive the subject is and a small resting mouth bias.
* nuisance, different per video and drifting smoothly within it: face
  position, scale and in-plane rotation, background colours and gradient
  direction, clothing colour, directional light, global brightness and
  contrast, sensor noise.

Geometry is built in "face units" (x right, y down, origin at the middle of
the face ellipse, 1 = half the face width) and mapped to pixels by one
similarity transform per frame, so landmarks come from the same numbers that
are drawn.
"""

import dataclasses

import numpy as np
from PIL import Image
from PIL import ImageDraw

from affect_jax import features
from affect_jax.errors import AffectJaxError

NUM_EMOTIONS = len(features.REALEYES_EMOTIONS)


@dataclasses.dataclass(frozen=True)
class Subject:
  """Identity: face shape and colours, fixed over all videos of a person."""
  skin: tuple[float, float, float]  # RGB in [0, 255].
  aspect: float  # Face half-height / half-width.
  eye_spacing: float  # Eye centre |x| in face units.
  eye_width: float  # Eye half-width in face units.
  iris: tuple[float, float, float]  # RGB.
  brow_thickness: float  # Face units.
  brow_color: tuple[float, float, float]  # RGB.
  nose_length: float  # Fraction of the face half-height.
  mouth_width: float  # Neutral mouth half-width in face units.
  lip: tuple[float, float, float]  # RGB.
  hair: tuple[float, float, float]  # RGB.
  hair_style: int  # 0 short, 1 long, 2 receding.
  expressiveness: float  # Scales how strongly valence/arousal show.
  mouth_bias: float  # Resting smile (>0) or frown (<0), in valence units.


# eq=False: fields are arrays, so identity is the only sensible equality.
@dataclasses.dataclass(frozen=True, eq=False)
class Video:
  """One recording: label trajectories and nuisance factors, per frame.

  All arrays have length `num_frames` on their first axis.
  """
  num_frames: int
  fps: float
  valence: np.ndarray  # float32 [T] in [-1, 1].
  arousal: np.ndarray  # float32 [T] in [-1, 1].
  center: np.ndarray  # float32 [T, 2] face centre (x, y), fraction of frame.
  scale: np.ndarray  # float32 [T] face half-width / min(frame H, W).
  angle: np.ndarray  # float32 [T] in-plane rotation, radians.
  bg_a: np.ndarray  # float32 [T, 3] background colour at one end.
  bg_b: np.ndarray  # float32 [T, 3] background colour at the other end.
  bg_direction: float  # Direction of the background gradient, radians.
  shirt: tuple[float, float, float]  # RGB.
  light_direction: float  # Direction the light comes from, radians.
  light_strength: np.ndarray  # float32 [T] relative brightness gradient.
  brightness: np.ndarray  # float32 [T] multiplicative gain.
  contrast: np.ndarray  # float32 [T] gain around mid-grey.
  noise_std: float  # Sensor noise std in uint8 levels.
  noise_seed: int  # Per-frame noise is drawn from (noise_seed, frame).


# Skin tones from light to dark (RGB); a subject interpolates between two.
_SKIN_TONES = np.array([
    (255, 224, 196), (241, 194, 158), (224, 172, 125), (198, 134, 90),
    (161, 102, 64), (120, 74, 45), (88, 54, 34)], np.float32)
_HAIR = np.array([
    (20, 16, 14), (60, 40, 25), (110, 70, 35), (170, 120, 60),
    (215, 180, 110), (140, 50, 25), (120, 120, 120)], np.float32)


def _f32(a) -> np.ndarray:
  return np.asarray(a, np.float32)


def _rgb(a) -> tuple[float, float, float]:
  return tuple(float(v) for v in np.clip(a, 0, 255))


def make_subject(rng: np.random.Generator) -> Subject:
  """Draws a random identity (shape and colours) from `rng`."""
  i = rng.integers(len(_SKIN_TONES) - 1)
  skin = _SKIN_TONES[i] + rng.uniform() * (_SKIN_TONES[i + 1] - _SKIN_TONES[i])
  skin = skin + rng.normal(0, 6, 3)
  hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.15)
  iris = rng.choice(np.array([(60, 40, 25), (90, 60, 30), (50, 90, 140),
                              (70, 110, 70)], np.float32))
  # Brows and lips keep a contrast with the skin for every skin tone.
  brow = np.minimum(hair * rng.uniform(0.5, 0.8), skin * 0.45)
  # A fixed-ish red lip contrasts in luminance with light and dark skin.
  lip = np.array([185, 70, 80]) * rng.uniform(0.8, 1.05) + rng.normal(0, 8, 3)
  return Subject(
      skin=_rgb(skin),
      aspect=float(rng.uniform(1.18, 1.42)),
      eye_spacing=float(rng.uniform(0.36, 0.46)),
      eye_width=float(rng.uniform(0.17, 0.22)),
      iris=_rgb(iris),
      brow_thickness=float(rng.uniform(0.06, 0.1)),
      brow_color=_rgb(brow),
      nose_length=float(rng.uniform(0.85, 1.1)),
      mouth_width=float(rng.uniform(0.4, 0.5)),
      lip=_rgb(lip),
      hair=_rgb(hair),
      hair_style=int(rng.integers(3)),
      expressiveness=float(rng.uniform(0.85, 1.15)),
      mouth_bias=float(rng.normal(0, 0.07)),
  )


def _smooth(rng: np.random.Generator, t: np.ndarray, num_waves: int,
            min_period: float, max_period: float) -> np.ndarray:
  """Sum of random low-frequency sinusoids, unit std on average. [T]."""
  out = np.zeros_like(t)
  for _ in range(num_waves):
    period = rng.uniform(min_period, max_period)
    out += rng.normal(0, 1) * np.sin(2 * np.pi * t / period +
                                     rng.uniform(0, 2 * np.pi))
  return out * np.sqrt(2.0 / num_waves)


def _affect(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
  # A small per-video mood plus waves of 3-12 s, squashed by tanh: std ~0.5
  # over the dataset, the whole [-1, 1] range reached within videos. Most of
  # the variance is within a video, so a model cannot score by recognising
  # the person or the background (the between-video share is ~1/4).
  z = 0.25 * rng.standard_normal() + 0.8 * _smooth(rng, t, 3, 3.0, 12.0)
  return np.tanh(z).astype(np.float32)


def make_video(rng: np.random.Generator, num_frames: int,
               fps: float) -> Video:
  """Draws label trajectories and nuisance factors of one video from `rng`."""
  if num_frames < 1 or fps <= 0:
    raise AffectJaxError(
        f'make_video got num_frames={num_frames}, fps={fps}; both must be '
        'positive.')
  t = np.arange(num_frames, dtype=np.float64) / fps
  valence = _affect(rng, t)
  arousal = _affect(rng, t)

  def drift():  # Slow wander of a nuisance factor, periods of 6-30 s.
    return _smooth(rng, t, 2, 6.0, 30.0)

  center = np.stack([
      0.5 + rng.uniform(-0.05, 0.05) + 0.02 * drift(),
      0.5 + rng.uniform(-0.03, 0.03) + 0.015 * drift()], -1)
  scale = rng.uniform(0.23, 0.28) * (1 + 0.04 * drift())
  angle = np.deg2rad(rng.normal(0, 5) + 4 * drift())
  bg_a = rng.uniform(20, 235, 3) + 12 * np.stack([drift() for _ in range(3)],
                                                 -1)
  bg_b = rng.uniform(20, 235, 3) + 12 * np.stack([drift() for _ in range(3)],
                                                 -1)
  return Video(
      num_frames=int(num_frames),
      fps=float(fps),
      valence=valence,
      arousal=arousal,
      center=_f32(np.clip(center, 0.42, 0.58)),
      scale=_f32(np.clip(scale, 0.21, 0.3)),
      angle=_f32(np.clip(angle, np.deg2rad(-15), np.deg2rad(15))),
      bg_a=_f32(np.clip(bg_a, 0, 255)),
      bg_b=_f32(np.clip(bg_b, 0, 255)),
      bg_direction=float(rng.uniform(0, 2 * np.pi)),
      shirt=_rgb(rng.uniform(20, 235, 3)),
      light_direction=float(rng.uniform(0, 2 * np.pi)),
      light_strength=_f32(np.clip(rng.uniform(0, 0.25) + 0.05 * drift(), 0,
                                 0.35)),
      brightness=_f32(np.clip(rng.uniform(0.75, 1.2) + 0.05 * drift(), 0.6,
                             1.3)),
      contrast=_f32(np.clip(rng.uniform(0.75, 1.15) + 0.04 * drift(), 0.6,
                           1.25)),
      noise_std=float(rng.uniform(1.0, 5.0)),
      noise_seed=int(rng.integers(2**31)),
  )


# Region thresholds of each rule (see `emotions_from_va`).
EMOTION_RULES = {
    # ~75% neutral only, rarest classes ~1-2% of the frames.
    'rare': dict(happy=0.86, surprise_a=0.8, surprise_v=-0.15,
                 disgust_v=-0.8, disgust_a=0.0, contempt_v=-0.6,
                 contempt_a=-0.7, confusion_lo=-0.6, confusion_hi=-0.15,
                 confusion_a=0.75, empathy_lo=0.25, empathy_a=-0.8,
                 other_v=0.25, other_a=-0.88),
    # Frequencies of tzirakis2019 Table 4 (RealEyes after resampling): happy
    # 23% (20), surprise 15% (16), confusion 18% (18), disgust 4% (2),
    # other 3% (3.5), empathy 2% (1.4), contempt 2% (1.2); neutral 41%.
    'realeyes_table4': dict(happy=0.52, surprise_a=0.5, surprise_v=-0.2,
                            disgust_v=-0.8, disgust_a=0.25, contempt_v=-0.7,
                            contempt_a=-0.75, confusion_lo=-0.8,
                            confusion_hi=-0.1, confusion_a=0.0,
                            empathy_lo=0.2, empathy_a=-0.75, other_v=0.2,
                            other_a=-0.7),
}


def emotions_from_va(valence, arousal, rule: str = 'rare') -> np.ndarray:
  """Multi-hot RealEyes emotions from valence and arousal, by a fixed rule.

  Classes follow `affect_jax.features.REALEYES_EMOTIONS`. With v = valence
  and a = arousal (both in [-1, 1]):

    happy      v > 0.86
    surprise   a > 0.8 and v > -0.15
    disgust    v < -0.8 and a > 0
    contempt   v < -0.6 and a < -0.7
    confusion  -0.6 < v < -0.15 and a > 0.75
    empathy    0.25 < v <= 0.86 and a < -0.8
    other      |v| < 0.25 and a < -0.88
    neutral    none of the above

  Regions overlap only for happy + surprise. On the `default` config about
  three quarters of the frames are neutral only and the rarest classes hold
  ~1-2% of the frames. These are the thresholds of rule 'rare';
  'realeyes_table4' moves them (EMOTION_RULES) so that the classes are as
  frequent as in tzirakis2019's Table 4.

  Args:
    valence: float array [...].
    arousal: float array [...], same shape.

  Returns:
    float32 [..., 8] with entries in {0, 1}.
  """
  v = np.asarray(valence, np.float32)
  a = np.asarray(arousal, np.float32)
  if v.shape != a.shape:
    raise AffectJaxError(
        f'emotions_from_va got valence of shape {v.shape} and arousal of '
        f'shape {a.shape}; pass arrays of the same shape.')
  if rule not in EMOTION_RULES:
    raise AffectJaxError(f'Unknown emotion rule {rule!r}; use one of '
                         f'{sorted(EMOTION_RULES)}.')
  r = EMOTION_RULES[rule]
  happy = v > r['happy']
  surprise = (a > r['surprise_a']) & (v > r['surprise_v'])
  disgust = (v < r['disgust_v']) & (a > r['disgust_a'])
  contempt = (v < r['contempt_v']) & (a < r['contempt_a'])
  confusion = ((v > r['confusion_lo']) & (v < r['confusion_hi']) &
               (a > r['confusion_a']))
  empathy = (v > r['empathy_lo']) & (v <= r['happy']) & (a < r['empathy_a'])
  other = (np.abs(v) < r['other_v']) & (a < r['other_a'])
  rest = np.stack([happy, surprise, disgust, contempt, confusion, empathy,
                   other], -1)
  neutral = ~rest.any(-1, keepdims=True)
  return np.concatenate([neutral, rest], -1).astype(np.float32)


# AFEW's seven classes (tfds_builders/afew order), each a point of the
# valence-arousal plane (the circumplex), and its share of AFEW's train
# clips (133/74/81/150/144/117/74 of 773).
AFEW_EXPRESSIONS = ('angry', 'disgust', 'fear', 'happy', 'neutral', 'sad',
                    'surprise')
EXPRESSION_VA = {'angry': (-0.75, 0.55), 'disgust': (-0.8, -0.15),
                 'fear': (-0.3, 0.85), 'happy': (0.75, 0.3),
                 'neutral': (0.0, 0.0), 'sad': (-0.4, -0.75),
                 'surprise': (0.35, 0.85)}
AFEW_CLIP_SHARES = np.array([133, 74, 81, 150, 144, 117, 74], np.float64)


def make_expression_clip(rng: np.random.Generator, num_frames: int,
                         fps: float) -> tuple[Video, int]:
  """A clip showing one expression: (video, class index in AFEW order).

  The class is drawn with AFEW's train shares; valence and arousal wander
  around the class's point (std ~0.1), so the face shows it throughout.
  """
  video = make_video(rng, num_frames, fps)
  k = int(rng.choice(len(AFEW_EXPRESSIONS),
                     p=AFEW_CLIP_SHARES / AFEW_CLIP_SHARES.sum()))
  v0, a0 = EXPRESSION_VA[AFEW_EXPRESSIONS[k]]
  valence = np.clip(v0 + 0.15 * video.valence, -1, 1).astype(np.float32)
  arousal = np.clip(a0 + 0.15 * video.arousal, -1, 1).astype(np.float32)
  return dataclasses.replace(video, valence=valence, arousal=arousal), k


def quantize(x: np.ndarray, levels: int) -> np.ndarray:
  """Labels on `levels` evenly spaced values of [-1, 1] (AFEW-VA: 21)."""
  half = (levels - 1) / 2
  return (np.round(np.asarray(x, np.float64) * half) / half).astype(
      np.float32)


# ---------------------------------------------------------------------------
# Geometry in face units.


def _ellipse(cx, cy, rx, ry, n=24):
  th = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cx + rx * np.cos(th), cy + ry * np.sin(th)], -1)


def _outline(aspect: float, theta: np.ndarray) -> np.ndarray:
  """Egg-shaped face outline (narrower jaw), at angles theta. [N, 2]."""
  s = np.sin(theta)
  width = 1.0 - 0.16 * np.clip(s, 0, None) ** 2
  return np.stack([width * np.cos(theta), aspect * s], -1)


def _face_geometry(subject: Subject, valence: float, arousal: float) -> dict:
  """All shapes of one face in face units, plus the 68 iBUG landmarks."""
  h = subject.aspect
  k = subject.expressiveness
  v = float(np.clip(valence * k + subject.mouth_bias, -1.2, 1.2))
  a = float(np.clip(arousal * k, -1.2, 1.2))
  g = {}

  # Jaw 0-16: from the subject's right ear level (image left) round the chin.
  jaw_theta = np.deg2rad(np.linspace(188.0, -8.0, 17))
  jaw = _outline(h, jaw_theta)
  g['outline'] = _outline(h, np.linspace(0, 2 * np.pi, 48, endpoint=False))

  # Eyes: openness follows arousal (nearly shut at -1, wide at +1).
  eye_y = -0.16 * h
  ew = subject.eye_width
  open_ = 0.055 + 0.085 * (a + 1.0)  # Half-height of the opening.
  eyes = []
  g['eyes'] = []
  for side in (-1, 1):  # Image left (subject's right) first, as in iBUG.
    cx = side * subject.eye_spacing
    # Both eyes start at their image-left corner (36 outer, 42 inner), go
    # along the upper lid to the other corner and back along the lower lid.
    u = np.array([-1.0, -0.5, 0.5, 1.0, 0.5, -0.5])
    ex = cx + ew * u
    lid = np.sqrt(np.clip(1 - u**2, 0, 1))
    ey = eye_y + np.array([0, -1, -1, 0, 1, 1]) * lid * open_ * np.array(
        [1, 1.25, 1.25, 1, 0.8, 0.8])
    pts = np.stack([ex, ey], -1)
    eyes.append(pts)
    # Smooth almond for drawing: upper lid arcs higher than the lower one.
    uu = np.linspace(-1, 1, 13)
    up = np.stack([cx + ew * uu, eye_y - 1.25 * open_ * np.sqrt(1 - uu**2)],
                  -1)
    lo = np.stack([cx - ew * uu, eye_y + 0.8 * open_ * np.sqrt(1 - uu**2)],
                  -1)
    g['eyes'].append(dict(shape=np.concatenate([up, lo[1:-1]]), upper=up,
                          center=(cx, eye_y), open=open_))

  # Brows 17-26: raised by arousal; negative valence lowers and knits the
  # inner ends (a frown).
  brow_y = eye_y - 0.2 - 0.11 * a
  knit = 0.12 * max(0.0, -v)
  brows = []
  g['brows'] = []
  for side in (-1, 1):
    cx = side * subject.eye_spacing
    u = np.linspace(-1, 1, 5)  # From image left to image right.
    t = (1 - u * side) / 2  # 0 at the outer end, 1 at the inner end.
    bx = cx + u * (ew + 0.08) - side * 0.05 * knit / 0.12 * t
    arch = 0.06 * (1 - u**2)
    by = brow_y - arch + knit * t**2 + 0.02 * (1 - t)
    pts = np.stack([bx, by], -1)
    brows.append(pts)
    thick = subject.brow_thickness
    g['brows'].append(np.concatenate(
        [pts + [0, -thick / 2], (pts + [0, thick / 2])[::-1]]))

  # Nose 27-35: bridge down to the tip, then the nostrils left to right.
  tip_y = eye_y + 0.38 * h * subject.nose_length
  bridge = np.stack([np.zeros(4), np.linspace(eye_y + 0.02, tip_y, 4)], -1)
  nx = np.array([-0.14, -0.07, 0.0, 0.07, 0.14])
  nostrils = np.stack([nx, tip_y + 0.06 - 0.03 * np.abs(nx) / 0.14], -1)
  g['bridge'] = bridge
  g['nostrils'] = nostrils

  # Mouth 48-67: corners lift with valence (smile) and drop when negative;
  # it widens with valence and opens with arousal.
  my = tip_y + 0.5 * (h - tip_y) - 0.02
  mw = subject.mouth_width * (1 + 0.15 * v)
  curve = 0.2 * v  # Corner lift relative to the middle.

  def mid(u):  # Centre line of the lips at u in [-1, 1].
    return my - curve * (u**2 - 0.3)

  gap = max(0.0, 0.02 + 0.07 * a + 0.04 * max(v, 0))  # Half opening.
  up_t, lo_t = 0.045, 0.06  # Lip thickness.
  uo = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1.0])  # 48..54.
  upper_outer = np.stack(
      [mw * uo, mid(uo) - (gap + up_t) * np.sqrt(1 - uo**2 * 0.9)
       + 0.02 * (uo == 0)], -1)  # A small cupid's bow dip in the middle.
  ul = np.array([0.6, 0.25, 0, -0.25, -0.6])  # 55..59, right to left.
  lower_outer = np.stack(
      [mw * ul, mid(ul) + (gap + lo_t) * np.sqrt(1 - ul**2 * 0.9)], -1)
  ui = np.array([-0.85, -0.35, 0, 0.35, 0.85])  # 60..64.

  def bulge(u):  # 0 at the inner corners (|u| = 0.85), 1 in the middle.
    return np.sqrt(np.clip(1 - (u / 0.85)**2, 0, 1))

  upper_inner = np.stack([mw * ui, mid(ui) - gap * bulge(ui)], -1)
  li = np.array([0.35, 0, -0.35])  # 65..67, right to left.
  lower_inner = np.stack([mw * li, mid(li) + gap * bulge(li)], -1)
  mouth = np.concatenate([upper_outer, lower_outer, upper_inner, lower_inner])
  g['mouth_outer'] = np.concatenate([upper_outer, lower_outer])
  uu = np.linspace(-0.85, 0.85, 15)
  g['mouth_inner'] = np.concatenate([
      np.stack([mw * uu, mid(uu) - gap * bulge(uu)], -1),
      np.stack([mw * uu[::-1], mid(uu[::-1]) + gap * bulge(uu)], -1)])
  g['mouth_gap'] = gap
  g['mouth_line'] = np.stack([mw * uu, mid(uu)], -1)

  g['landmarks'] = np.concatenate(
      [jaw, brows[0], brows[1], bridge, nostrils, eyes[0], eyes[1],
       mouth]).astype(np.float32)
  return g


# ---------------------------------------------------------------------------
# Drawing.


def _as_size(size) -> tuple[int, int]:
  if isinstance(size, (int, np.integer)):
    h = w = int(size)
  else:
    h, w = (int(s) for s in size)
  if h < 8 or w < 8:
    raise AffectJaxError(
        f'render_frame got size={size!r}; frames must be at least 8x8 pixels '
        '(pass an int or (height, width)).')
  return h, w


def render_frame(subject: Subject, video: Video, frame_index: int, size,
                 supersample: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders one frame of `video` showing `subject`.

  Args:
    subject: the person.
    video: the recording (labels and nuisance per frame).
    frame_index: 0-based frame in `video`.
    size: int (square) or (height, width) of the output in pixels.
    supersample: draw at this many times the size and downsample (anti-
      aliasing); default 4 up to 128 pixels, else 2.

  Returns:
    image: uint8 [H, W, 3].
    landmarks: float32 [68, 2] iBUG-68 (x, y), in [0, 1] of the frame.
    box: float32 [4] face box (ymin, xmin, ymax, xmax) in [0, 1].
  """
  if not 0 <= frame_index < video.num_frames:
    raise AffectJaxError(
        f'render_frame got frame_index={frame_index} for a video of '
        f'{video.num_frames} frames; use 0 <= frame_index < num_frames.')
  h, w = _as_size(size)
  ss = supersample or (4 if max(h, w) <= 128 else 2)
  big_h, big_w = h * ss, w * ss
  i = frame_index
  geo = _face_geometry(subject, float(video.valence[i]),
                       float(video.arousal[i]))

  # Face units -> supersampled pixels.
  unit = float(video.scale[i]) * min(big_h, big_w)
  cos, sin = np.cos(video.angle[i]), np.sin(video.angle[i])
  rot = np.array([[cos, -sin], [sin, cos]], np.float64) * unit
  origin = np.array([video.center[i, 0] * big_w, video.center[i, 1] * big_h])

  def px(pts):
    return np.asarray(pts, np.float64) @ rot.T + origin

  def poly(draw, pts, fill, outline=None, width=1):
    draw.polygon([tuple(p) for p in px(pts)], fill=_int_rgb(fill),
                 outline=None if outline is None else _int_rgb(outline),
                 width=width)

  def line(draw, pts, fill, width_units):
    draw.line([tuple(p) for p in px(pts)], fill=_int_rgb(fill),
              width=max(1, int(round(width_units * unit))), joint='curve')

  # The gradient is smooth: computing it at the output size and upsampling is
  # as good and many times cheaper than computing it supersampled.
  img = Image.fromarray(_background(video, i, h, w)).resize(
      (big_w, big_h), Image.Resampling.BILINEAR)
  d = ImageDraw.Draw(img)
  skin = np.array(subject.skin)
  shade = skin * 0.82
  hair = np.array(subject.hair)
  ha = subject.aspect

  # Behind the head: long hair, shoulders, neck, ears.
  if subject.hair_style == 1:
    back = np.concatenate([
        _outline(ha, np.linspace(np.pi * 0.98, np.pi * 2.02, 20)) * 1.12,
        [[1.2, 0.9 * ha], [-1.2, 0.9 * ha]]])
    poly(d, back, hair)
  poly(d, [[-0.4, 0.6 * ha], [0.4, 0.6 * ha], [0.45, 1.5 * ha],
           [-0.45, 1.5 * ha]], shade)
  poly(d, [[-2.2, 3.0 * ha], [-1.7, 1.25 * ha], [-0.4, 1.05 * ha],
           [0.4, 1.05 * ha], [1.7, 1.25 * ha], [2.2, 3.0 * ha]],
       video.shirt)
  for side in (-1, 1):
    poly(d, _ellipse(side * 0.97, -0.02 * ha, 0.14, 0.24, 12), shade)

  # Face and front hair.
  poly(d, geo['outline'], skin)
  front = _hair_front(ha, subject.hair_style)
  if front is not None:
    poly(d, front, hair)

  # Brows.
  for b in geo['brows']:
    poly(d, b, subject.brow_color)

  # Eyes: white opening, iris clipped between the lids, dark upper lid.
  for e in geo['eyes']:
    poly(d, e['shape'], (245, 245, 240))
    cx, cy = e['center']
    r = subject.eye_width * 0.55
    iris = _ellipse(cx, cy, r, r, 20)
    up = np.interp(iris[:, 0], e['upper'][:, 0], e['upper'][:, 1])
    lo_y = cy + 0.8 * e['open'] * np.sqrt(
        np.clip(1 - ((iris[:, 0] - cx) / subject.eye_width) ** 2, 0, 1))
    iris[:, 1] = np.clip(iris[:, 1], up, lo_y)
    poly(d, iris, subject.iris)
    pupil = _ellipse(cx, cy, r * 0.45, r * 0.45, 12)
    pupil[:, 1] = np.clip(pupil[:, 1], np.interp(pupil[:, 0], e['upper'][:, 0],
                                                 e['upper'][:, 1]), lo_y.max())
    poly(d, pupil, (15, 12, 10))
    line(d, e['upper'], (35, 25, 20), 0.045)

  # Nose: a shaded tip and nostrils.
  line(d, geo['bridge'][1:], shade * 0.95, 0.03)
  line(d, geo['nostrils'], shade * 0.75, 0.035)

  # Mouth: lips, and a dark opening with a row of teeth when it is wide.
  poly(d, geo['mouth_outer'], subject.lip)
  if geo['mouth_gap'] > 0.012:
    poly(d, geo['mouth_inner'], (70, 20, 25))
  # A dark line between the lips carries the curvature even at 32 pixels.
  line(d, geo['mouth_line'], (45, 12, 18), 0.05)

  small = img.resize((w, h), Image.Resampling.BOX)
  image = _photometric(np.asarray(small, np.float32), video, i)

  lm = px(geo['landmarks']) / [big_w, big_h]
  landmarks = np.clip(lm, 0, 1).astype(np.float32)
  # The face box spans the outline (forehead to chin), not only landmarks.
  ol = px(geo['outline']) / [big_w, big_h]
  box = np.clip([ol[:, 1].min(), ol[:, 0].min(), ol[:, 1].max(),
                 ol[:, 0].max()], 0, 1).astype(np.float32)
  return image, landmarks, box


def _int_rgb(c) -> tuple[int, int, int]:
  return tuple(int(round(v)) for v in np.clip(c, 0, 255))


def _hair_front(ha: float, style: int) -> np.ndarray | None:
  """Hair over the top of the face, down to a hairline. [N, 2] or None."""
  top = _outline(ha, np.linspace(np.pi * 1.0, np.pi * 2.0, 21)) * [1.07, 1.06]
  x = np.linspace(1.0, -1.0, 21)
  if style == 2:  # Receding: hair only on the sides and a thin top.
    hairline = -0.78 * ha + 0.55 * ha * x**4
  else:
    hairline = -0.6 * ha + 0.42 * ha * x**6 + 0.05 * ha * np.cos(9 * x)
  return np.concatenate([top, np.stack([x * 1.02, hairline], -1)])


def _background(video: Video, i: int, h: int, w: int) -> np.ndarray:
  """Linear gradient between two drifting colours. uint8 [h, w, 3]."""
  d = np.array([np.cos(video.bg_direction), np.sin(video.bg_direction)])
  yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
  xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
  proj = np.clip((xx * d[0] + yy * d[1]) * 0.7 + 0.5, 0, 1)[..., None]
  bg = video.bg_a[i] * (1 - proj) + video.bg_b[i] * proj
  return bg.astype(np.uint8)


def _photometric(img: np.ndarray, video: Video, i: int) -> np.ndarray:
  """Directional light, brightness/contrast and sensor noise. -> uint8."""
  h, w = img.shape[:2]
  yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
  xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
  d = (np.cos(video.light_direction), np.sin(video.light_direction))
  ramp = xx * d[0] + yy * d[1]
  img = img * (1 + 2 * video.light_strength[i] * ramp)[..., None]
  img = (img - 128) * video.contrast[i] + 128
  img = img * video.brightness[i]
  noise = np.random.default_rng([video.noise_seed, i]).normal(
      0, video.noise_std, img.shape)
  return np.clip(np.round(img + noise), 0, 255).astype(np.uint8)
