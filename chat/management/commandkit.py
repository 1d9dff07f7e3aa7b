"""What the chat's management commands share: argument types that refuse a bad value with a clear
message, and the one way an error of the app ends a command (CommandError: Django prints it on
stderr and exits with its status)."""

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError


def at_least(least: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse type: `kind` of the argument, refused below `least`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least:g}, not {value:g}")
        return value

    return parse


@contextmanager
def exits_on(*errors: type[Exception], returncode: int = 1) -> Iterator[None]:
    """One of `errors` raised inside ends the command: its message on stderr, exit status `returncode`."""
    try:
        yield
    except errors as exc:
        raise CommandError(str(exc), returncode=returncode) from exc
