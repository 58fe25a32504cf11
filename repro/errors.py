"""One error root for what a user can get wrong, and one way every command line reports it.

Every error the project raises for a bad input (a config key, a folder, a weights file, a run folder, a
device) derives from `DeepsimError`, and keeps its older base (ValueError, RuntimeError, …) beside it, so
that code catching those still catches it. A command line wraps its `main` in `cli`: such an error becomes
one line `error: <message>` on stderr and exit status 2; anything else is a bug and keeps its traceback.

    @cli
    def main(argv: list[str] | None = None) -> int:
        with user_input():                  # ValueError/OSError here are the user's input at fault
            net = build_net(args.net, weights=args.weights)
        ...

`converters` sits below `repro` and has its own root (`converters.errors.ConversionError`); `cli` catches
it too, by name. This module imports nothing heavy (torch-free).
"""
from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from converters.errors import ConversionError


class DeepsimError(Exception):
    """Root of the project's user-facing errors: the message is one sentence saying what was wrong (which
    file, key, layer or shape) and what to do."""


class ConfigError(DeepsimError, ValueError):
    """A preset or override that does not exist or does not parse (raised by `repro.config`, the λ rule and
    `repro.needs`; here, below them all, so that none imports another for it)."""


class UsageError(DeepsimError, ValueError):
    """An argument or input a command cannot use (the generic case; modules raise their own subclasses)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions `cli` reports in one line: DeepsimError and the converters' own root."""
    return (DeepsimError, ConversionError)


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (a multi-line message's lines joined), never empty."""
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text or type(err).__name__


def report(err: BaseException) -> int:
    """Print `error: <message>` on stderr; the exit status of a refused input (2)."""
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    return 2


@contextmanager
def user_input(*kinds: type[BaseException]) -> Iterator[None]:
    """Inside this block, `kinds` (default ValueError, OSError) mean the user's input is at fault — a file
    that is not there, a layer that does not exist — and are re-raised as `UsageError` with their message.
    Wrap only the lines that read what the user gave, so that a bug elsewhere keeps its traceback."""
    try:
        yield
    except DeepsimError:
        raise
    except (kinds or (ValueError, OSError)) as err:
        raise UsageError(one_line(err)) from err


Main = TypeVar("Main", bound=Callable[..., int])


def cli(main: Main) -> Main:
    """Wrap a command's `main(argv) -> int`: a user error (see `user_errors`) prints one line and returns 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except user_errors() as err:
            return report(err)

    return wrapped  # type: ignore[return-value]
