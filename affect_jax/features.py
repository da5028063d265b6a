"""Names of record fields and batch keys, defined once for the whole project.

Data flows one way: TFDS builder (per-frame records with the ``RECORD_*``
fields) -> grain pipeline (windows of T frames, the ``BATCH_*`` keys) -> model
-> losses/metrics.
"""

# Per-frame record fields written by every TFDS builder.
RECORD_IMAGE = 'image'  # JPEG bytes of the (face) frame, scalar np.object_.
RECORD_VALENCE = 'valence'  # float32 in [-1, 1]; NaN where unlabelled.
RECORD_AROUSAL = 'arousal'  # float32 in [-1, 1]; NaN where unlabelled.
RECORD_EMOTIONS = 'emotions'  # float32 [C] multi-hot.
# Geometry is in coordinates of the stored image (RECORD_IMAGE: the face crop,
# or the whole frame letterboxed to a square), 0..1 across its side, not of
# the source frame: (0, 0) is the crop's top-left corner. Zeros where
# unknown (no face found, none shipped). The crop's place in the source frame
# is not stored; the core's `face.Crop.to_frame` / `box_to_frame` map crop
# coordinates back to source pixels where the crop is at hand (prediction).
RECORD_LANDMARKS = 'landmarks'  # float32 [68, 2] (x, y) in the crop; points
#   of a face near the crop's edge may lie slightly outside [0, 1].
RECORD_BOX = 'box'  # float32 [4] face box (ymin, xmin, ymax, xmax) in the
#   crop, clipped to [0, 1]; with the default margin 0.2 about 1/7..6/7.
RECORD_HAS_FACE = 'has_face'  # bool.
RECORD_TIME = 'time'  # float32 seconds from the start of the video.
RECORD_FRAME_INDEX = 'frame_index'  # int32, 0-based within the video.
RECORD_VIDEO_ID = 'video_id'  # str.
RECORD_SUBJECT_ID = 'subject_id'  # str.

# Batch keys produced by the input pipeline.
FRAMES = 'frames'  # uint8 [B, T, H, W, 3]
VALENCE = 'valence'  # float32 [B, T]
AROUSAL = 'arousal'  # float32 [B, T]
EMOTIONS = 'emotions'  # float32 [B, T, C]
LANDMARKS = 'landmarks'  # float32 [B, T, 68, 2]
MASK = 'mask'  # float32 [B, T]; 1 for real frames, 0 for padding.
VIDEO_INDEX = 'video_index'  # int32 [B]; index into the split's video list.
T0 = 't0'  # int32 [B]; index of the window's first frame in its video.
TIME = 'time'  # float32 [B, T] seconds from the start of the video.
HAS_FACE = 'has_face'  # float32 [B, T]; 1 where the builder found a face.

# The eight RealEyes emotion classes (tzirakis2019, Table 3), in label order.
REALEYES_EMOTIONS = ('neutral', 'happy', 'surprise', 'disgust', 'contempt',
                     'confusion', 'empathy', 'other')
NUM_LANDMARKS = 68
# Aff-Wild2's EXPR classes in label order (the 8-class annotation header; the
# first 7 are the older 7-class sets'); ABAW scores macro F1 over all 8.
ABAW_EXPR_CLASSES = ('Neutral', 'Anger', 'Disgust', 'Fear', 'Happiness',
                     'Sadness', 'Surprise', 'Other')
