"""The one exception type for errors a user can cause (bad data, bad config)."""


class AffectJaxError(Exception):
  """A user-fixable problem.

  The message names the file (or config key), says what was wrong and what to
  do about it. `affect_jax.main` prints it as one line instead of a traceback.
  """
