"""What every command shares: the one-line error of a user mistake."""

from __future__ import annotations

import sys


def error(command: str, message: str) -> int:
    """Print ``neurovar COMMAND: error: MESSAGE`` to stderr; the exit status of a usage error."""
    print(f"neurovar {command}: error: {message}", file=sys.stderr)
    return 2
