"""The documentation: every ```python block runs, the CLI reference matches the parser, the site builds.

Blocks of one page run in order in one namespace, so a page can build an example up
step by step. A block fenced as ```python runs; use ```text or ```console for output
and shell sessions.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ropekit.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# How to bring docs/cli.md up to date after a change to the command line.
REGENERATE = "regenerate it with: python docs/scripts/cli_reference.py > docs/cli.md"

SECTION = re.compile(r"^## `ropekit (?P<name>[a-z-]+)", re.MULTILINE)
OPTION = re.compile(r"`(--[a-z][a-z0-9-]*)")


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """Return (first line number, source) of each ```python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in FENCE.finditer(text)]


@pytest.mark.parametrize(
    "page", [page for page in PAGES if page.is_file() and python_blocks(page)], ids=lambda page: page.name
)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    monkeypatch.chdir(tmp_path)  # files a snippet writes land in a temporary folder
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, source in blocks:
        code = compile(source, f"{page.name}:{line}", "exec")
        try:
            exec(code, namespace)
        except Exception as error:  # report which block failed, with its traceback chained
            raise AssertionError(f"the python block at {page.name} line {line} raised {error!r}") from error


def subcommand_parsers(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Return the subcommand parsers of ``parser`` (default: ``ropekit``'s) by name."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    """Return the --options of ``parser`` and of its nested subcommands, without --help."""
    options = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    for child in subcommand_parsers(parser).values():
        options |= long_options(child)
    return options


def cli_sections() -> dict[str, str]:
    """Return the text of each "## `ropekit NAME ...`" section of docs/cli.md, keyed by NAME."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    matches = list(SECTION.finditer(text))
    sections = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        sections[match["name"]] = text[match.start() : end]
    return sections


def test_cli_reference_has_every_command():
    sections = cli_sections()
    for name, _module, _help in COMMANDS:
        assert name in sections, f"docs/cli.md has no section for ropekit {name}; {REGENERATE}"


@pytest.mark.parametrize("name", [name for name, _module, _help in COMMANDS])
def test_cli_reference_options_match_parser(name):
    section = cli_sections().get(name)
    if section is None:
        pytest.fail(f"docs/cli.md has no section for ropekit {name}; {REGENERATE}")
    parser_options = long_options(subcommand_parsers()[name])
    documented = set(OPTION.findall(section))
    assert documented - parser_options == set(), f"documented but not accepted by ropekit {name}; {REGENERATE}"
    assert parser_options - documented == set(), f"accepted by ropekit {name} but not documented; {REGENERATE}"


def test_cli_reference_lists_no_unknown_command():
    known = {name for name, _module, _help in COMMANDS}
    assert set(cli_sections()) - known == set(), REGENERATE


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (extra 'docs')")
def test_site_builds_offline(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_api_reference_covers_public_names():
    import ropekit

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    for name, module in ropekit._EXPORTS.items():
        assert f"::: {module}.{name}" in text, f"docs/api.md has no entry for ropekit.{name}"
