"""The ``bastion`` command line. Only this package writes to the terminal or exits."""

from bastion.cli.app import main

__all__ = ["main"]
