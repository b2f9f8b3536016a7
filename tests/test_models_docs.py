"""Each ```python block of docs/models.md runs on its own, so a reader can copy any one of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[int, str]]:
    """Return (first line number, source) of each ```python block of the page."""
    text = PAGE.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in FENCE.finditer(text)]


@pytest.mark.parametrize(
    ("line", "source"), [pytest.param(line, source, id=f"line{line}") for line, source in blocks()]
)
def test_block_runs_alone(line: int, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "transformers" in source:
        pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)  # files a block writes land in a temporary folder
    exec(compile(source, f"{PAGE.name}:{line}", "exec"), {"__name__": "docs_models_block"})
