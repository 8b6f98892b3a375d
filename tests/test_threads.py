"""The thread policy: explicit setting > OMP_NUM_THREADS > work size."""

from __future__ import annotations

import pytest
import torch

from darnn import threads


def test_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(1e12, requested=1) == 1
    assert threads.choose_threads(0, requested=3) == 3


def test_environment_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.choose_threads(0) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    assert threads.choose_threads(0) == 1


def test_work_size_decides_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.choose_threads(threads.PARALLEL_WORK / 2) == 1
    assert threads.choose_threads(threads.PARALLEL_WORK * 2) == threads.available_cores()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_invalid_requests_name_the_argument(bad: object) -> None:
    with pytest.raises(ValueError, match="threads="):
        threads.choose_threads(0, requested=bad)  # type: ignore[arg-type]


def test_using_threads_restores() -> None:
    before = torch.get_num_threads()
    with threads.using_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
