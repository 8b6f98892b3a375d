"""Helpers shared by the CLI tests: run ``darnn`` in-process and check a user error."""

from __future__ import annotations

import pytest

from darnn import cli


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``darnn ARGS`` in this process: exit code, stdout, stderr."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 with a one-paragraph ``darnn: error:`` message naming every fragment."""
    assert code == 2
    assert err.startswith("darnn: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
