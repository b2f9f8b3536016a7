"""Write the guide's figures into docs/figures as PNG files.

Run it from the repository root after a change to ``ropekit.viz``::

    python docs/scripts/figures.py

The figures are the tutorial set of ``ropekit.viz.write_tutorial_figures``, the same ones
``ropekit demo --out DIR`` writes.
"""

from __future__ import annotations

from pathlib import Path

from ropekit.viz import write_tutorial_figures

FIGURES = Path(__file__).resolve().parents[1] / "figures"

if __name__ == "__main__":
    for path in write_tutorial_figures(FIGURES, formats=("png",)):
        print(path)
