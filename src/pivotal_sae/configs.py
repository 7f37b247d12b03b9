"""Configuration dataclasses as the single source of truth for defaults, CLI options and docs.

Each job has one dataclass. A field's type and default define the option; the string literal
written on the line below the field is its help text (as in EleutherAI's sparsify); the field's
`metadata` may add extra spellings (`aliases`), a `flag` name for booleans, or `hidden`.
`typer_command` turns such a dataclass into a Typer command that builds the config (running its
`__post_init__` validation) and hands it to the job.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import textwrap
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

import typer

from pivotal_sae.errors import UserError
from pivotal_sae.hub import check_hub_sources

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: Option names that take several values; `expand_multi_value_options` lets users write them
#: the argparse way (`--selected-features 3000 9000`) as the original scripts accepted.
MULTI_VALUE_OPTIONS: set[str] = set()
#: Option names that take a path; an empty one would silently mean the current folder.
PATH_OPTIONS: set[str] = set()


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each field of a dataclass (and its bases) to the docstring written beneath it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        for stmt, following in zip(body.body, [*body.body[1:], None], strict=True):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def _option_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """The type Typer should parse, plus extra Option arguments (choices for Literals)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _option_type(non_none[0])
    if origin is Literal:
        # Typer needs a runtime Enum for choices; its members are only known at run time.
        choices = enum.Enum("Choice", {str(a): str(a) for a in args}, type=str)  # type: ignore[misc]
        return choices, {"case_sensitive": False}
    return annotation, {}


def typer_command(config_cls: type[T], job: Callable[[T], Any]) -> Callable[..., Any]:
    """A function whose signature Typer reads as one option per field of `config_cls`."""
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    parameters = []
    annotations: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if not f.init:
            continue
        kind, extra = _option_type(hints[f.name])
        names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-")]
        names += list(f.metadata.get("aliases", ()))
        if kind is bool and "flag" not in f.metadata:
            names = [f"{names[0]}/--no-{f.name.replace('_', '-')}", *names[1:]]
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = ...
        if isinstance(default, enum.Enum):
            default = default.value
        is_list = get_origin(kind) in (list, tuple)
        option = typer.Option(
            *names,
            help=docs.get(f.name, ""),
            hidden=f.metadata.get("hidden", False),
            show_default=not is_list or bool(default),
            **extra,
        )
        if kind is Path:
            PATH_OPTIONS.update(names)
        if is_list:
            MULTI_VALUE_OPTIONS.update(names)
            kind = list[get_args(kind)[0]]  # type: ignore[misc]
            default = list(default) if default else None
        annotation = typing.Annotated[kind, option]  # type: ignore[valid-type]
        annotations[f.name] = annotation
        parameters.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )

    def command(**kwargs: Any) -> Any:
        values = {}
        for name, value in kwargs.items():
            if isinstance(value, enum.Enum):
                value = value.value
            if isinstance(value, list) and not value:
                value = None
            values[name] = value
        try:
            config = config_cls(
                **{k: v for k, v in values.items() if v is not None or _nullable(hints[k])}
            )
        except TypeError as exc:  # a missing required option
            raise UserError(str(exc)) from None
        # After the config's own checks of arguments and local files, before any download.
        check_hub_sources(config)
        return job(config)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = annotations
    # One line per paragraph: command lists show the first paragraph as written.
    paragraphs = (config_cls.__doc__ or "").strip().split("\n\n")
    command.__doc__ = "\n\n".join(" ".join(p.split()) for p in paragraphs)
    return command


def _nullable(annotation: Any) -> bool:
    return type(None) in get_args(annotation)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (paths become strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """Rewrite `--opt a b c` as `--opt a --opt b --opt c` for options that take several values."""
    out: list[str] = []
    current: str | None = None
    for token in argv:
        if token.startswith("-") and not _is_number(token):
            current = token if token in MULTI_VALUE_OPTIONS else None
            out.append(token)
            continue
        if current is not None and out and out[-1] != current and not out[-1].startswith("-"):
            out.append(current)
        out.append(token)
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def refuse_empty_paths(argv: list[str]) -> None:
    """`--out ''` (an unset shell variable, say) is a mistake, not the current folder."""
    for option, value in zip(argv, [*argv[1:], None], strict=True):
        name, eq, inline = option.partition("=")
        given = inline if eq else value
        if name in PATH_OPTIONS and given is not None and not given.strip():
            raise UserError(f"{name} is empty; give a path")
