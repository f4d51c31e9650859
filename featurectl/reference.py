"""The reference pages generated from the code: docs/cli.md (every command and option) and
docs/settings.md (every setting). ``python -m featurectl.reference`` rewrites both; a test fails
when they differ from what this prints."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr

from core.settings import ENV_PREFIX, PROJECT_ROOT, STORE_MODELS, Settings

DOCS = PROJECT_ROOT / "docs"
SETTINGS_PROSE = DOCS / "settings.intro.md"


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name in sorted(group.commands):
        command = group.commands[name]
        path = f"{prefix} {name}"
        out.append((path, command))
        if isinstance(command, click.Group):
            out += _commands(command, path)
    return out


def cli_reference() -> str:
    """Markdown: each command's usage, help and options, as ``featurectl ... --help`` shows them."""
    from featurectl.cli import cli

    lines = [
        "# Command reference",
        "",
        "Generated from the code by `python -m featurectl.reference`; `featurectl COMMAND --help` says the same.",
        "",
    ]
    for path, command in _commands(cli, "featurectl"):
        with click.Context(command, info_name=path) as ctx:
            usage = command.get_usage(ctx).removeprefix("Usage: ")
            lines += [f"## `{path}`", "", "```", usage, "```", "", inspect.cleandoc(command.help or ""), ""]
            options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
            for option in options:
                record = option.get_help_record(ctx)
                if record is not None:
                    lines.append(f"- `{record[0]}`: {record[1]}")
            if options:
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _default(value: Any) -> str:
    if isinstance(value, SecretStr) or value is None:
        return "(none)" if value is None else "(set)"
    if isinstance(value, Path):
        for base, name in ((PROJECT_ROOT, "<checkout>"), (Path.home(), "~")):
            if value == base or base in value.parents:
                return f"`{name}/{value.relative_to(base)}`"
    if isinstance(value, list | tuple | set | frozenset):
        return "`" + ",".join(str(v) for v in value) + "`" if value else "(empty)"
    return f"`{value}`" if str(value) != "" else "(empty)"


def _rows(fields: dict[str, Any]) -> list[str]:
    lines = ["| variable | default | what it is |", "|---|---|---|"]
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        text = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | {_default(default)} | {text} |")
    return lines


def settings_reference() -> str:
    """Markdown: the prose of docs/settings.intro.md, then a row per setting: variable, default, meaning; the
    platform's first, then each store's (stores/<name>/settings.py) under its folder's name."""
    stores = {name for model in STORE_MODELS for name in model.model_fields}
    lines = [SETTINGS_PROSE.read_text().rstrip(), ""]
    lines += _rows({n: f for n, f in Settings.model_fields.items() if n not in stores})
    for model in STORE_MODELS:
        folder = model.__module__.split(".")[1]
        lines += ["", f"### The {folder} store (`stores/{folder}/settings.py`)", ""]
        lines += _rows(dict(model.model_fields))
    return "\n".join(lines) + "\n"


PAGES = {"cli.md": cli_reference, "settings.md": settings_reference}


def main() -> None:
    for name, render in PAGES.items():
        (DOCS / name).write_text(render())
        print(f"wrote {DOCS / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
