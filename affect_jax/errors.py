"""The one exception type for errors a user can cause (bad data, bad config),
and the stop on a signal that `affect_jax.main` turns into an exit status."""


class AffectJaxError(Exception):
  """A user-fixable problem.

  The message names the file (or config key), says what was wrong and what to
  do about it. `affect_jax.main` prints it as one line instead of a traceback.
  """


class Interrupted(Exception):
  """Training stopped on SIGTERM / SIGINT after saving its `latest` checkpoint.

  Not an error: rerunning the same command resumes from that step.
  `exit_code` is 128 + the signal number (143 for SIGTERM, 130 for SIGINT),
  the status schedulers (SLURM, Kubernetes) expect of a process they stopped.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + int(signum)
