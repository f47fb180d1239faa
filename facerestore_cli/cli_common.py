"""What the ``facerestore`` commands share: the two consoles, set-up failures, the engine, option help.

Data goes to ``out`` (stdout), messages and progress to ``err`` (stderr); a set-up problem is one line
and exit 2, never a traceback.
"""

from __future__ import annotations

import signal
import sys

import typer
from rich.console import Console
from rich.markup import escape

from facerestore_cli.models import methods as registered_methods

# soft_wrap: messages carry file paths; in a log or a pipe (80 columns) they must stay on one line
err = Console(stderr=True, highlight=False, soft_wrap=True)
#: Data (tables of people, weights, caches, doctor) goes to stdout, so ``> file`` and ``| grep`` see it;
#: a pipe gets wide tables, never cut at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1000)

#: The methods that read references (build-dict, people): the first is the default.
REFERENCE_METHODS = tuple(name for name, spec in registered_methods().items() if spec.uses_references)

EMBEDDER_HELP = (
    "Face embeddings that match faces to --refs/--people: auto (insightface when its model pack is on disk, "
    "else dlib), dlib, or insightface[:pack]."
)

ALLOW_GROUPS_HELP = (
    "Accept group photos as references: their largest face, when it is clearly the largest "
    "(default: a reference photo must show only the person)."
)


def fail_setup(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def engine_for(options, quiet: bool = False):
    """The :class:`FaceRestorer` for ``options``; any set-up problem is a message and exit 2."""
    from facerestore_cli import FaceRestorer
    from facerestore_cli.device import DeviceError
    from facerestore_cli.face import DetectorUnavailable, EmbedderUnavailable
    from facerestore_cli.references import DictionaryError
    from facerestore_cli.weights import WeightsError

    try:
        return FaceRestorer(options, on_message=(lambda m: None) if quiet else err.print)
    except (ValueError, DeviceError, WeightsError, DictionaryError, DetectorUnavailable, EmbedderUnavailable) as exc:
        fail_setup(str(exc))
    except KeyboardInterrupt as exc:
        raise typer.Exit(128 + getattr(exc, "signum", signal.SIGINT)) from None
