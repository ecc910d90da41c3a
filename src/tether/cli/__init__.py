"""The ``tether`` command line (see ``tether --help``)."""

from tether.cli.main import main

__all__ = ["main"]
