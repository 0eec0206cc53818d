"""What every `dler` subcommand shares: one-line errors with exit 2, and comma-separated number lists."""

from __future__ import annotations

import argparse

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`dler eval: error: ...`, and where `--help` lists the settings) and exit
    2, without the usage block in front of the one useful line."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` lists the settings)\n")

    def fail(self, message) -> None:
        """A setting that cannot work, named with its fix by `message`: one line, exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def unknown_flags(self, unknown: list[str]) -> None:
        """Refuse flags this parser does not know, with the closest known flag for each misspelled one."""
        import difflib

        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        close = {u: difflib.get_close_matches(u.split("=", 1)[0], known, n=1) for u in unknown if u.startswith("-")}
        hints = [f"{u.split('=', 1)[0]} -> {c[0]}" for u, c in close.items() if c]
        self.error(
            f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
        )


def number_list(cast, what: str, example: str, minimum: float | None = None):
    """An argparse type: comma-separated numbers, each read by `cast`, at least one, each >= `minimum` if given."""

    def parse(text: str) -> list:
        kind = "integers" if cast is int else "numbers"
        try:
            values = [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} are {kind} separated by commas, e.g. {example}; got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"give at least one of the {what}, e.g. {example}")
        if minimum is not None and any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum:g}, e.g. {example}; got {text!r}")
        return values

    return parse


temperatures = number_list(float, "temperatures", "0,0.6")
ks = number_list(int, "K values", "1,2,4,8", minimum=1)
floats = number_list(float, "values", "0.25,0.5")
