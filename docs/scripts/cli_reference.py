"""Write docs/cli.md from the argparse parsers of ``ropekit``.

Run it after adding or changing a subcommand or an option::

    python docs/scripts/cli_reference.py > docs/cli.md

tests/test_docs.py checks that docs/cli.md documents every option of every subcommand
and no option that does not exist.
"""

from __future__ import annotations

import argparse
import sys

from ropekit.cli import COMMANDS, build_parser

INTRO = """\
# Command-line reference

`ropekit` is installed with the package; `python -m ropekit` runs the same program.
Results go to stdout, and progress and log records go to stderr, so the output of a
command can be piped or redirected. `-v` logs progress, `-vv` logs debug records.

```text
ropekit [--version] [-v] COMMAND ...
```

| option | meaning |
| --- | --- |
| `--version` | print the version and exit |
| `-v`, `--verbose` | log more detail to stderr (repeat for debug records) |

Each section below lists one command with its purpose and every argument and option. `ropekit COMMAND --help` prints the same from the installed version.
"""


def subparsers_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Return the subcommand parsers of ``parser`` by name (empty when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def usage_of(parser: argparse.ArgumentParser) -> str:
    """Return the one-line usage of ``parser`` without the "usage: " prefix."""
    usage = parser.format_usage().removeprefix("usage: ")
    return " ".join(usage.split()).replace(" [-h]", "")


def argument_rows(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """Return (argument, meaning) for each positional argument and option of ``parser``."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            value = f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else ""
            names = ", ".join(f"`{option}{value}`" for option in action.option_strings)
        else:
            names = f"`{action.metavar or action.dest}`"
        # argparse's own expansion of %(default)s and similar placeholders.
        meaning = formatter._expand_help(action) if action.help else ""
        meaning = meaning.replace("|", "\\|")
        if action.choices and action.option_strings:
            meaning += f" (one of: {', '.join(str(choice) for choice in action.choices)})"
        rows.append((names, meaning))
    return rows


def section(title_level: str, name: str, parser: argparse.ArgumentParser) -> list[str]:
    lines = [f"{title_level} `{usage_of(parser)}`", ""]
    if parser.description:
        description = parser.description[0].upper() + parser.description[1:]
        lines += [description if description.endswith((".", "...")) else description + ".", ""]
    rows = argument_rows(parser)
    if rows:
        lines += ["| argument | meaning |", "| --- | --- |"]
        lines += [f"| {names} | {meaning} |" for names, meaning in rows]
        lines.append("")
    for child_name, child in subparsers_of(parser).items():
        lines += section(title_level + "#", f"{name} {child_name}", child)
    return lines


def render() -> str:
    """Return the whole docs/cli.md text."""
    commands = subparsers_of(build_parser())
    lines = [INTRO]
    for name, _module, _help in COMMANDS:
        lines += section("##", name, commands[name])
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
