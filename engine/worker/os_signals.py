"""Whether a worker should take SIGTERM/SIGINT itself: only when nothing else in the process
(a web server embedding it) handles them (``Worker(handle_signals=None)``)."""

from __future__ import annotations

import signal


def unclaimed_signals() -> tuple[signal.Signals, ...]:
    """SIGTERM and SIGINT if this process leaves them to Python's defaults, else ().

    Python's own handling is SIG_DFL for SIGTERM and ``signal.default_int_handler`` for
    SIGINT (KeyboardInterrupt), or the handler ``asyncio.run``/``anyio.run`` put in its place
    (it cancels the main task), or SIG_DFL. Any other handler is the host program's (uvicorn,
    gunicorn, a framework), and then both are left to it. A SIGINT ignored by the parent (a
    job started with ``&`` by a script) stays ignored: only SIGTERM is taken then."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return ()
    sigint = signal.getsignal(signal.SIGINT)
    if sigint is signal.SIG_IGN:
        return (signal.SIGTERM,)
    if sigint is signal.default_int_handler or sigint is signal.SIG_DFL or _is_runner_sigint(sigint):
        return (signal.SIGTERM, signal.SIGINT)
    return ()


def _is_runner_sigint(handler: object) -> bool:
    """The SIGINT handler an event loop runner installs in place of Python's default:
    ``functools.partial(runner._on_sigint, main_task=...)`` (asyncio.Runner, anyio's)."""
    func = getattr(handler, "func", None)
    owner = getattr(func, "__self__", None)
    return (
        getattr(func, "__name__", None) == "_on_sigint"
        and type(owner).__name__ == "Runner"
        and type(owner).__module__ in ("asyncio.runners", "anyio._backends._asyncio")
    )
