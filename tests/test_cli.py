"""The command-line entry points."""

from __future__ import annotations

import subprocess
import sys

import ropekit
from ropekit.cli import COMMANDS, main


def test_version_flag_prints_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"ropekit {ropekit.__version__}"


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    output = capsys.readouterr().out
    for name, _module, help_text in COMMANDS:
        assert name in output
        assert help_text.split()[0] in output


def test_python_dash_m_runs():
    completed = subprocess.run(
        [sys.executable, "-m", "ropekit", "--version"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"ropekit {ropekit.__version__}"


def test_user_error_prints_message_not_traceback(tmp_path, capsys):
    existing_file = tmp_path / "a-file"
    existing_file.write_text("not a folder")
    code = main(["demo", "--out", str(existing_file)])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err
    assert "error" in captured.err


def test_invalid_environment_fails_before_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROPEKIT_HUGE_PAGES", "2")
    out = tmp_path / "demo"

    code = main(["demo", "--out", str(out)])

    assert code == 2
    assert "ROPEKIT_HUGE_PAGES must be 0 or 1, got '2'" in capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_in_study_prints_resume_hint(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("ropekit.commands.study.run", interrupted)

    code = main(["study", "--quick"])

    assert code == 130
    assert capsys.readouterr().err.strip() == (
        "ropekit study: interrupted; run the same command with --resume to continue from the last checkpoints"
    )
