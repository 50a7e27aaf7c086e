"""The two ways a training run ends badly, each with its exit code (utils/errors.py)."""

from pieanet.utils.errors import EXIT_FAILED, EXIT_USAGE, PieaError


class SetupError(PieaError):
    """A run that cannot start (data, checkpoint, experiment folder): one sentence, exit code 2."""

    exit_code = EXIT_USAGE


class TrainingError(PieaError):
    """A run that had to stop (bad data met during an epoch, a non-finite loss): one sentence, exit code 1."""

    exit_code = EXIT_FAILED
