"""Errors the command line turns into a one-line message and an exit code."""


class AcmInputError(Exception):
    """Bad input from the user (a file, an option, a model we cannot handle): exit code 2."""

    exit_code = 2


class AcmCheckFailed(Exception):
    """A check ran and failed (verify beyond tolerance): exit code 1."""

    exit_code = 1


class StopRequested(Exception):
    """The user stopped a long run (Ctrl-C); its state on disk is consistent and resumable."""

    exit_code = 130
