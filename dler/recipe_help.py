"""A recipe's short `--help` in about a second: the same parser and text, without importing torch, transformers'
`TrainingArguments` or TRL's `GRPOConfig` (importing them takes 10-20 s on a laptop CPU).

The short help shows dler's settings and a dozen of TRL's. Their dataclass fields (name, type, default, help) are
read from the source of the classes `DLERConfig` is built from, base first (transformers' `TrainingArguments`, TRL's
`_BaseConfig` and `GRPOConfig`, `dler.config.DLERConfig`), and rebuilt as one small dataclass in the same field
order, so `RecipeParser` formats it exactly as it formats the real classes (tests/test_first_hour_help.py compares
the two texts). A field that is not plain literals (a computed default, a type name the source imports) makes
`static_help_parser` return None, and the recipe then builds its help from the real classes. `--help-all`, which
lists every field of `TrainingArguments` (enum types and all), always does.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import typing
from pathlib import Path

# The classes DLERConfig is built from, base first: (package, file in it, class, its base class as written).
CHAIN = (
    ("transformers", "training_args.py", "TrainingArguments", None),
    ("trl", "trainer/base_config.py", "_BaseConfig", "TrainingArguments"),
    ("trl", "trainer/grpo_config.py", "GRPOConfig", "_BaseConfig"),
    ("dler", "config.py", "DLERConfig", "GRPOConfig"),
)
TYPE_NAMES = {name: getattr(typing, name) for name in ("Any", "Literal", "Optional", "Union")}


class NotStatic(Exception):
    """A field whose type, default or help cannot be read from the source without running it."""


def package_file(package: str, relative: str) -> Path:
    """A file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotStatic(f"package {package} not found")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def class_body(path: Path, name: str, base: str | None) -> list[ast.AnnAssign]:
    """The annotated assignments (dataclass fields) of class `name` in `path`, checked to derive from `base`."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            bases = [ast.unparse(b) for b in node.bases]
            if base is not None and bases != [base]:
                raise NotStatic(f"{name} derives from {bases}, not {base}")
            return [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    raise NotStatic(f"class {name} not in {path}")


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as error:
        raise NotStatic(ast.unparse(node)) from error


def names_of(module: str, name: str, depth: int = 0) -> list:
    """The elements (or a dict's keys) of the tuple, list or dict literal bound to `name` in the dler module
    `module`, following `from dler.x import y as name`: what `list(name)` gives, read from the source."""
    relative = Path(*module.split(".")[1:])
    path = Path(__file__).parent / relative.with_suffix(".py")
    path = path if path.is_file() else Path(__file__).parent / relative / "__init__.py"
    if not module.startswith("dler.") or depth > 4 or not path.is_file():
        raise NotStatic(f"{name} from {module}")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]:
            if isinstance(node.value, ast.Dict) and None not in node.value.keys:
                return [_literal(k) for k in node.value.keys]
            if isinstance(node.value, (ast.Tuple, ast.List)):
                return list(_literal(node.value))
            raise NotStatic(f"{name} in {module}")
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return names_of(node.module, alias.name, depth + 1)
    raise NotStatic(f"{name} not in {module}")


class _ListOfConstant(ast.NodeTransformer):
    """`list(NAME)` -> the literal list it gives, NAME a constant of a dler module (`choices` in a field's help)."""

    def __init__(self, module: str):
        self.module = module

    def visit_Call(self, node):
        if ast.unparse(node.func) == "list" and len(node.args) == 1 and isinstance(node.args[0], ast.Name):
            values = names_of(self.module, node.args[0].id)
            return ast.List(elts=[ast.Constant(v) for v in values], ctx=ast.Load())
        return self.generic_visit(node)


def static_field(statement: ast.AnnAssign, module: str) -> tuple[str, object, dataclasses.Field] | None:
    """`(name, type, field)` of one dataclass field from the source of `module`; None for `init=False` fields,
    which the argument parser skips."""
    name = statement.target.id
    try:
        kind = eval(ast.unparse(statement.annotation), {"__builtins__": __builtins__, **TYPE_NAMES})  # noqa: S307
    except Exception as error:  # a name the source imports, or anything else eval cannot read on its own
        raise NotStatic(f"{name}: {error}") from error
    value = statement.value
    if value is None:
        return name, kind, dataclasses.field()
    if not (isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field")):
        return name, kind, dataclasses.field(default=_literal(value))
    keywords = {k.arg: k.value for k in value.keywords}
    if "init" in keywords and not _literal(keywords["init"]):
        return None
    metadata = _literal(_ListOfConstant(module).visit(keywords["metadata"])) if "metadata" in keywords else {}
    if "default" in keywords:
        return name, kind, dataclasses.field(default=_literal(keywords["default"]), metadata=metadata)
    factory = keywords.get("default_factory")
    if isinstance(factory, ast.Lambda):
        made = _literal(factory.body)
        return name, kind, dataclasses.field(default_factory=lambda: made, metadata=metadata)
    if isinstance(factory, ast.Name) and factory.id in ("list", "dict"):
        return (
            name,
            kind,
            dataclasses.field(default_factory={"list": list, "dict": dict}[factory.id], metadata=metadata),
        )
    if factory is None:
        return name, kind, dataclasses.field(metadata=metadata)
    raise NotStatic(f"{name}: default_factory {ast.unparse(factory)}")


def config_fields(wanted: set[str]) -> tuple[type, set[str]]:
    """A dataclass with the `wanted` fields of `DLERConfig` (each as its most derived class declares it, in the
    dataclass order), and the names `DLERConfig` itself declares (dler's own settings)."""
    order: dict[str, tuple[ast.AnnAssign, str]] = {}  # the first declaration fixes the position, the last the field
    for package, relative, name, base in CHAIN:
        path = Path(__file__).parent / relative if package == "dler" else package_file(package, relative)
        body = class_body(path, name, base)
        module = f"{package}.{relative.removesuffix('.py').replace('/', '.')}"
        for statement in body:
            order[statement.target.id] = statement, module
    own = {s.target.id for s in body}  # the last class of the chain: DLERConfig
    missing = (wanted | own) - set(order)
    if missing:
        raise NotStatic(f"fields not found: {sorted(missing)}")
    fields = [f for name, (s, m) in order.items() if name in wanted | own and (f := static_field(s, m)) is not None]
    return dataclasses.make_dataclass("DLERConfig", fields), own


def static_help_parser(defaults: dict, essential: tuple[str, ...], script_arguments: type):
    """The recipe's parser for `--help`, built from the sources (see the module docstring), with the recipe's
    `script_arguments` dataclass and `defaults`; None when a field cannot be read statically."""
    from trl.trainer.model_config import ModelConfig

    from dler.recipe_cli import RecipeParser

    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        config, own = config_fields(set(essential) - model_fields)
    except (NotStatic, OSError, SyntaxError, ValueError, TypeError):  # ValueError: e.g. a mutable default
        return None
    parser = RecipeParser(
        (script_arguments, config, ModelConfig), own=set(script_arguments.__dataclass_fields__) | own
    )
    parser.set_defaults(**defaults)
    return parser


def wants_short_help(argv: list[str]) -> bool:
    """`-h` / `--help` without `--help-all` (which lists every TRL and transformers field: the real classes)."""
    return any(a in ("-h", "--help") for a in argv) and "--help-all" not in argv


def short_help(defaults: dict, argv: list[str], script_arguments: type) -> None:
    """A recipe's short `--help`, read from the sources before any heavy import: argparse prints it and exits. Nothing
    happens for other command lines, or when the full path is needed (a YAML `--config`, whose keys it checks; a
    field that cannot be read statically)."""
    from dler.recipe_cli import ESSENTIAL

    if wants_short_help(argv) and "--config" not in argv:
        parser = static_help_parser(defaults, ESSENTIAL, script_arguments)
        if parser is not None:
            parser.parse_known_args(argv)
