"""Every setting a Lightning command names is looked up before it is parsed: one at an old or a wrong path gets one
clear line naming it and where it is (``ConfigError``, exit 2), e.g.

    gvt fit: error: --model.init_args.pretrain_epochs: TextGAN has no such setting; it moved to
    --model.init_args.game.pretrain_epochs

Why not leave it to jsonargparse: for a model or data setting its message is about its own internals (``Given value
type: <class 'jsonargparse._util.NestedArg'>``), and argparse takes any unambiguous prefix of a flag, so
``--model.init_args.game.lr 0.1`` silently set ``game.lr_schedule``. Here a setting is known when its full path is
one: the command's own flags (``--trainer.*``, ``--tracking.*``, ``--prediction.*``, ``--seed_everything``, ...,
read from the parser), and for ``model`` and ``data`` the parameters of the class in effect (its ``class_path``
from the config files and flags, in order) and the fields of its typed sections (``game.pretrain_epochs``).
Below a setting that takes a class (``trainer.callbacks``, ``trainer.logger``, ...) anything goes: jsonargparse
checks those. The settings named are the command line's flags and every key of the YAML files given with
``--config``, ``--model``, ``--data``, ``--trainer``, ``--tracking`` and ``--prediction``.

An unknown setting is explained, in this order: a former flat TextGAN argument (``modules.models.configs.
FLAT_TO_NESTED``: ``g_lr`` -> ``generator.lr``) or the same name in another section of the class ("moved to");
the same name in another part of the command (``--model.init_args.batch_size`` -> ``--data.init_args.batch_size``);
the closest known spellings ("did you mean"); else the list of what the section holds.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import typing
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from modules.errors import ConfigError

CLASS_SECTIONS = ("model", "data")  # subclass mode: {class_path, init_args}; `--model.lr` means init_args.lr
SPEC_KEYS = ("class_path", "init_args", "dict_kwargs")
CONFIG_FLAGS = ("--config", "-c")
HELP_FLAGS = ("-h", "--help")


@dataclasses.dataclass
class ClassSettings:
    """The settings of one model or data class, relative to ``init_args``: leaves and typed sections."""

    cls: type
    leaves: set[str]
    sections: set[str]  # dataclass-typed parameters: `game`, `evaluation`, ... (settings below them)

    @property
    def name(self) -> str:
        return self.cls.__name__


def _dataclass_in(hint: Any) -> Optional[type]:
    """The dataclass a parameter is typed as (also inside ``Optional[...]``), or None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def class_settings(cls: type) -> Optional[ClassSettings]:
    """``cls``'s constructor parameters and the fields of its dataclass sections; None where the signature cannot
    be read exactly (``**kwargs``, unresolvable hints): then nothing under it is refused here."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        hints = typing.get_type_hints(cls.__init__)
    except (TypeError, ValueError, NameError):
        return None
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
        return None
    leaves, sections = set(), set()
    for p in params:
        section = _dataclass_in(hints.get(p.name))
        if section is None:
            leaves.add(p.name)
            continue
        sections.add(p.name)
        leaves.update(f"{p.name}.{f.name}" for f in dataclasses.fields(section))
    return ClassSettings(cls, leaves, sections)


def renamed_settings(cls: type) -> dict[str, str]:
    """Former names of a class's settings -> their path now (TextGAN's flat arguments)."""
    from modules.models.text_gan import TextGAN

    if isinstance(cls, type) and issubclass(cls, TextGAN):
        from modules.models.configs import FLAT_TO_NESTED

        return {old: f"{section}.{name}" for old, (section, name) in FLAT_TO_NESTED.items()}
    return {}


def resolve_class(name: str, section: str) -> Optional[type]:
    """A ``class_path`` as jsonargparse takes it: a dotted import path, or the bare name of a known subclass."""
    from modules.data.base import SequenceDataModule
    from modules.models.base import GeneratorModule

    base = GeneratorModule if section == "model" else SequenceDataModule
    if "." in name:
        module, _, attr = name.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            return None
        return found if isinstance(found, type) else None
    todo, seen = [base], []
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += cls.__subclasses__()
    return next((c for c in seen if c.__name__ == name), None)


class CommandSettings:
    """The settings of one Lightning subcommand (``fit``, ``validate``, ...), from its jsonargparse parser."""

    def __init__(self, subparser):
        dests = [a.dest for a in subparser._actions if a.dest not in ("help", "config", "print_config")]
        helped = {d[: -len(".help")] for d in dests if d.endswith(".help")}  # settings that take a class
        dests = [d for d in dests if not d.endswith(".help")]
        self.groups = {d for d in dests if any(o.startswith(d + ".") for o in dests)}  # trainer, tracking, ...
        self.leaves = set(dests) - self.groups - set(CLASS_SECTIONS)
        self.open = helped - set(CLASS_SECTIONS)  # below these, jsonargparse checks the class's own arguments
        self.classes: dict[str, Optional[ClassSettings]] = {s: None for s in CLASS_SECTIONS}
        self.class_given = {s: False for s in CLASS_SECTIONS}

    def set_class(self, section: str, class_path: Any) -> None:
        self.class_given[section] = True
        cls = resolve_class(str(class_path), section)
        self.classes[section] = class_settings(cls) if cls is not None else None

    # ---- lookup -------------------------------------------------------------------------------------------
    def is_known(self, path: str) -> bool:
        section, _, rest = path.partition(".")
        if section in CLASS_SECTIONS:
            return self._class_path_known(section, rest)
        if path in self.leaves or path in self.groups:
            return True
        return any(path.startswith(o + ".") for o in self.open)

    def _class_path_known(self, section: str, rest: str) -> bool:
        if not rest:
            return True
        head, _, below = rest.partition(".")
        if head in ("class_path", "dict_kwargs") or (head == "init_args" and not below):
            return True
        relative = below if head == "init_args" else rest
        found = self.classes[section]
        if found is None:  # no class given (jsonargparse says so) or one whose signature cannot be read
            return True
        return relative in found.leaves or relative in found.sections

    def all_leaves(self) -> Iterator[str]:
        """Every known full path, as written in a config: ``trainer.max_steps``, ``model.init_args.game.lr``."""
        yield from self.leaves
        for section in CLASS_SECTIONS:
            found = self.classes[section]
            if found is not None:
                yield from (f"{section}.init_args.{leaf}" for leaf in found.leaves)

    # ---- explanation ---------------------------------------------------------------------------------------
    def explain(self, path: str, show=str) -> str:
        """Why ``path`` is not a setting and where the setting meant is; ``show`` writes a path as the user would
        (``--trainer.max_steps`` on a command line, ``trainer.max_steps`` in a YAML file)."""
        section, _, rest = path.partition(".")
        leaf = path.rpartition(".")[2]
        owner = self.classes.get(section)
        what = "no such setting"
        if section in CLASS_SECTIONS and owner is not None:
            head, _, below = rest.partition(".")
            relative = below if head == "init_args" else rest
            prefix = f"{section}.init_args."
            what = f"{owner.name} has no such setting"
            renamed = renamed_settings(owner.cls).get(relative)
            same_name = sorted(p for p in owner.leaves if p.rpartition(".")[2] == leaf and p != relative)
            if renamed or (same_name and "." not in relative):  # a former flat name: the setting is nested now
                return f"{what}; it moved to " + _either(show(prefix + p) for p in ([renamed] if renamed else same_name))
            if same_name:
                return f"{what}; did you mean {_either(show(prefix + p) for p in same_name)}?"
            spelled = difflib.get_close_matches(relative, sorted(owner.leaves), n=1, cutoff=0.75)
            if spelled:
                return f"{what}; did you mean {show(prefix + spelled[0])}?"
        known = sorted(set(self.all_leaves()))
        elsewhere = [p for p in known if p.rpartition(".")[2] == leaf and p != path]
        close = elsewhere or _closest_by_name(leaf, [p for p in known if p.startswith(section + ".")], 0.75) \
            or _closest_by_name(leaf, known, 0.8)
        if close:
            return f"{what}; did you mean {_either(show(p) for p in close)}?"
        if owner is not None:
            tops = sorted({p.partition(".")[0] for p in owner.leaves})
            return (f"{what}; its settings: {', '.join(tops)} (`gvt fit --{section}.help {owner.name}` "
                    "describes them)")
        if section in self.groups:
            return f"{what}; `gvt fit --help` lists the settings of {section}"
        return f"{what}; the sections are {', '.join(sorted(self.groups | set(CLASS_SECTIONS)))} (`gvt fit --help`)"


def _closest_by_name(name: str, paths: list[str], cutoff: float) -> list[str]:
    """The path whose last name is spelled closest to ``name`` (the shared prefix of full paths would make every
    path look close)."""
    by_name = {p.rpartition(".")[2]: p for p in paths}
    return [by_name[n] for n in difflib.get_close_matches(name, sorted(by_name), n=1, cutoff=cutoff)]


def _either(paths) -> str:
    paths = list(paths)
    return " or ".join(paths) if len(paths) <= 3 else ", ".join(paths[:3]) + ", ..."


# ---- what a command line names --------------------------------------------------------------------------------
def _flag(path: str) -> str:
    return f"--{path}"


def _flag_name(token: str) -> str:
    return token[2:].partition("=")[0].rstrip("+")


def _yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None  # missing or broken: jsonargparse, or modules.cli.check_config_files, says so


def _value_of(args: list[str], i: int) -> Optional[str]:
    token = args[i]
    if "=" in token:
        return token.partition("=")[2]
    return args[i + 1] if i + 1 < len(args) else None


def check_settings(subparser, args: list[str]) -> None:
    """Refuse (``ConfigError``) the first setting in ``args`` (a subcommand's arguments, without its name) that is
    not one, with where the setting meant is. Settings are looked up in the order jsonargparse applies them."""
    if any(a in HELP_FLAGS or _flag_name(a).endswith(".help") for a in args if a.startswith("-")):
        return  # help asked for: nothing runs
    command = CommandSettings(subparser)
    for i, token in enumerate(args):
        if not token.startswith("-") or token == "-" or _is_number(token):
            continue
        name = "config" if token in CONFIG_FLAGS else _flag_name(token)
        if name in ("config", "print_config"):
            if name == "config" and (value := _value_of(args, i)) and value.endswith((".yaml", ".yml")):
                _check_mapping(command, _yaml(value), "", origin=value)
            continue
        value = _value_of(args, i)
        if name in CLASS_SECTIONS or name in command.groups:  # a whole section: a file, a mapping or a class name
            content = _section_value(value)
            if isinstance(content, dict):
                _check_mapping(command, content, name, origin=value if _is_file(value) else None)
            elif name in CLASS_SECTIONS and content is not None:
                command.set_class(name, content)
            continue
        if name.endswith(".class_path") and name.partition(".")[0] in CLASS_SECTIONS and value:
            command.set_class(name.partition(".")[0], value)
            continue
        if not command.is_known(name):
            raise ConfigError(f"--{name}: {command.explain(name, show=_flag)}")


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _is_file(value: Optional[str]) -> bool:
    return bool(value) and value.endswith((".yaml", ".yml")) and Path(value).is_file()


def _section_value(value: Optional[str]) -> Any:
    if value is None:
        return None
    if _is_file(value):
        return _yaml(value)
    if value.lstrip().startswith("{"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return None
    return value


def _check_mapping(command: CommandSettings, mapping: Any, prefix: str, origin: Optional[str]) -> None:
    """Every key of a YAML mapping given for ``prefix`` ("" for a whole config), in file order."""
    if not isinstance(mapping, dict):
        return
    if prefix in CLASS_SECTIONS and "class_path" in mapping:
        command.set_class(prefix, mapping["class_path"])
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not prefix and key in ("config", "print_config"):
            continue
        if not command.is_known(path):
            if origin:  # a YAML file: its keys
                raise ConfigError(f"{origin}: {path}: {command.explain(path)}")
            raise ConfigError(f"--{path}: {command.explain(path, show=_flag)}")  # a mapping on the command line
        if isinstance(value, dict) and _holds_settings(command, path):
            _check_mapping(command, value, path, origin)


def _holds_settings(command: CommandSettings, path: str) -> bool:
    """Whether the keys of a mapping at ``path`` are settings looked up here (not a class's own arguments)."""
    section, _, rest = path.partition(".")
    if section in CLASS_SECTIONS:
        if not rest or rest == "init_args":
            return True
        relative = rest.partition(".")[2] if rest.startswith("init_args.") else rest
        owner = command.classes[section]
        return owner is not None and relative in owner.sections
    return path in command.groups


def check_command_settings(parser, args: list[str]) -> None:
    """``check_settings`` for a LightningCLI parser with subcommands and its argv (``["fit", ...]``)."""
    subcommands = getattr(parser, "_subcommands_action", None)  # jsonargparse's; absent: nothing is checked here
    subparsers = getattr(subcommands, "_name_parser_map", {}) if subcommands is not None else {}
    if args and args[0] in subparsers:
        check_settings(subparsers[args[0]], list(args[1:]))


__all__ = ["CommandSettings", "check_command_settings", "check_settings", "class_settings"]
