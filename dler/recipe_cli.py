"""How a recipe's command line reads to a user: a short `--help` (dler's settings; `--help-all` adds TRL's and
transformers'), errors as one line, and a "did you mean" for a misspelled flag or YAML key.

`dler.recipe.parse` builds a `RecipeParser`, then calls `check_unknown` on the command line and the YAML `--config`
before anything is derived or loaded.
"""

from __future__ import annotations

import argparse
import copy
import difflib

from trl import TrlParser

# TRL's / transformers' settings a recipe user sets most, listed by the short `--help` after dler's own
ESSENTIAL = (
    "model_name_or_path",
    "output_dir",
    "max_steps",
    "per_device_train_batch_size",
    "use_vllm",
    "bf16",
    "use_cpu",
    "logging_steps",
    "save_steps",
    "report_to",
    "seed",
)


class UsageError(ValueError):
    """A command line the parser cannot read: printed as one line, without argparse's whole usage text."""


def command_line_keys(argv: list[str]) -> set[str]:
    """The settings named on the command line (`--a-b=1` -> `a_b`)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def yaml_config(argv: list[str]) -> dict:
    """The settings of the YAML `--config` file, if any (its `env` block aside, which TRL's parser applies)."""
    if "--config" not in argv:
        return {}
    import yaml

    path = argv[argv.index("--config") + 1] if argv.index("--config") + 1 < len(argv) else None
    if path is None:
        raise UsageError("--config: give a YAML file after it")
    with open(path) as f:
        settings = yaml.safe_load(f) or {}
    if not isinstance(settings, dict):
        raise UsageError(f"--config {path}: expected a mapping of setting: value, got {type(settings).__name__}")
    return {k: v for k, v in settings.items() if k != "env"}


def did_you_mean(name: str, known) -> str:
    """' (did you mean --x?)' for the closest known setting, or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean --{close[0]}?)" if close else ""


class _HelpAll(argparse.Action):
    """`--help-all`: every setting, TRL's and transformers' too. Sets nothing, so the dataclasses never see it."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.show_all = True
        parser.print_help()
        parser.exit()


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """One spelling per flag in the help (`--dataset_name`; `--dataset-name` still works)."""

    def _format_action_invocation(self, action):
        names = [s for s in action.option_strings if not (s.startswith("--") and "-" in s[2:])]
        if names and len(names) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = names
        return super()._format_action_invocation(action)


class RecipeParser(TrlParser):
    """TRL's parser with one-line errors and a short `--help`: dler's own settings (`own`) only, TRL's and
    transformers' (over a thousand lines) behind `--help-all`."""

    def __init__(self, dataclass_types, own=(), **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(dataclass_types, **kwargs)
        self.own, self.show_all = set(own), False
        self.add_argument("--help-all", action=_HelpAll, help="list every setting, TRL's and transformers' too")

    def error(self, message):
        raise UsageError(f"{message} (`--help` lists the settings)")

    def known_keys(self) -> set[str]:
        """Every setting name the parser reads (`--no_x` included), underscores for hyphens."""
        return {s[2:].replace("-", "_") for s in self._option_string_actions if s.startswith("--")}

    def check_unknown(self, remaining: list[str], yaml: dict, yaml_file: str | None) -> None:
        """Refuse, in one line with the closest known name, a flag argparse left over or a YAML key no setting has."""
        dests = {a.dest for a in self._actions}
        unknown_yaml = [k for k in yaml if k not in dests]
        if unknown_yaml:
            key = unknown_yaml[0]
            raise UsageError(
                f"{yaml_file}: unknown setting {key!r}{did_you_mean(key, dests).replace('--', '')}; "
                "fix or remove the key (`--help` lists the settings)"
            )
        flags = [a for a in remaining if a.startswith("-")]
        if flags:
            name = flags[0].split("=", 1)[0]
            raise UsageError(
                f"unknown setting {name}{did_you_mean(name.lstrip('-').replace('-', '_'), self.known_keys())} "
                "(`--help` lists dler's settings, `--help-all` every one)"
            )
        if remaining:
            raise UsageError(f"unexpected argument {remaining[0]!r}: settings are given as --name value")

    def format_help(self):
        ours = [a for a in self._actions if a.dest in self.own]
        if not self.show_all:  # dler's settings only: the rest are TRL's and transformers' documented options
            helps = [a for a in self._actions if a.dest in ("help",) or isinstance(a, _HelpAll)]
            formatter = self._get_formatter()
            formatter.add_usage(f"{self.prog} [--config FILE.yaml] [--dry-run] [--SETTING VALUE ...]", None, [])
            formatter.start_section("dler: the recipe's data and batch, and DLER's settings")
            formatter.add_arguments(ours)
            formatter.end_section()
            essential = sorted(
                (a for a in self._actions if a.dest in ESSENTIAL), key=lambda a: ESSENTIAL.index(a.dest)
            )
            formatter.start_section("the model and the training loop (TRL's and transformers' settings)")
            formatter.add_arguments(essential)
            formatter.end_section()
            formatter.start_section("help")
            formatter.add_arguments(helps)
            formatter.end_section()
            formatter.add_text(  # no count: the short help is built without loading every field (recipe_help)
                "Several hundred more settings of TRL's GRPOConfig, transformers' TrainingArguments and TRL's ModelConfig "
                "(learning rate, logging, saving, the model, ...) are accepted too: `--help-all` lists them. "
                "`--dry-run` prints the resolved settings and where each came from."
            )
            return formatter.format_help()
        group = self.add_argument_group("dler: the recipe's data and batch, and DLER's settings (TRL's follow)")
        for other in self._action_groups:
            if other is not group:
                moved = [a for a in other._group_actions if a.dest in self.own]
                other._group_actions[:] = [a for a in other._group_actions if a.dest not in self.own]
                group._group_actions.extend(moved)
        self._action_groups.remove(group)
        self._action_groups.insert(1, group)  # after the positionals, before every other option
        return super().format_help()
