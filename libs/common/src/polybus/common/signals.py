"""SIGTERM and SIGINT stop a polybus process at any moment, with exit code 0 (DESIGN §10).

While a service runs, its runtime routes both signals to its stop event, so it stops in order
(:func:`route_stop_signals`). Outside that window - while Python still loads the CLI's
modules, while a command reads its config, after a runtime has handed its handlers back -
there is nothing to clean up, and :func:`exit_on_stop_signals` makes a stop signal simply end
the process with exit 0, instead of Python's defaults (killed by SIGTERM; a KeyboardInterrupt
traceback on Ctrl-C). The ``polybus`` command installs it before anything else.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_on_stop_signals() -> None:
    """From now on, a stop signal ends the process with exit 0 (SystemExit unwinds cleanly)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _exit_cleanly)


def route_stop_signals(
    loop: asyncio.AbstractEventLoop, on_stop: Callable[[str], None]
) -> Callable[[], None]:
    """Call ``on_stop(signal name)`` on a stop signal; return the function that undoes it.

    Undoing restores the handlers that were there before (asyncio alone would reset them to
    Python's defaults), so a signal after the runtime is done still exits cleanly.
    """
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_stop, signal.Signals(signum).name)

    def restore() -> None:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)

    return restore


def main() -> None:
    """The ``polybus`` console script: stop signals first, then the CLI (its imports take a
    noticeable fraction of a second)."""
    exit_on_stop_signals()
    from polybus.common.cli import main as cli_main

    cli_main()
