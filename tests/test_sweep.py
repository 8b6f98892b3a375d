"""darnn sweep: search spaces, bad input, workers on SQLite and PostgreSQL, pruning, lost trials.

Every sweep here trains tiny networks on the digits data for a few epochs. The PostgreSQL
tests start a throw-away server (initdb + pg_ctl) on a Unix socket in a temporary folder.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

optuna = pytest.importorskip(
    "optuna", reason="the sweep extra is not installed: pip install -e '.[sweep]'"
)

from optuna.trial import TrialState  # noqa: E402

from darnn.cli import main  # noqa: E402
from darnn.runconfig import RunConfig, load_run_config  # noqa: E402
from darnn.sweep.space import SpaceError, load_space, parse_space  # noqa: E402
from darnn.sweep.study import (  # noqa: E402
    ERROR,
    OUTCOME,
    RETRY_OF,
    RUN_DIR,
    create_study,
    prepare_sweep,
    tally,
)

BASE = {"data": {"name": "digits"}, "network": {"hidden": [32]}, "train": {"epochs": 2}}
SPACE = {
    "learning.lr_j": {"low": 0.005, "high": 0.2, "log": True},
    "learning.kappa_j": {"low": 0.5, "high": 3.0},
    "network.hidden": {"choices": [[16], [32]]},
}


def write_yaml(path: Path, data: Any) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    return {
        "config": write_yaml(tmp_path / "base.yaml", BASE),
        "space": write_yaml(tmp_path / "space.yaml", SPACE),
    }


def sweep_args(files: dict[str, str], out: Path, trials: int, *extra: str) -> list[str]:
    return [
        "sweep",
        "--config",
        files["config"],
        "--space",
        files["space"],
        "--trials",
        str(trials),
        "--out",
        str(out),
        *extra,
    ]


def load(storage: str, name: str) -> Any:
    return optuna.load_study(study_name=name, storage=storage)


def check_exactly(study: Any, n: int) -> None:
    """Check n finished trials, each with its own run directory holding the sampled config."""
    trials = study.get_trials()
    assert len(trials) == n
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    run_dirs = [Path(t.user_attrs[RUN_DIR]) for t in trials]
    assert len(set(run_dirs)) == n
    for trial, run_dir in zip(trials, run_dirs):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["learning"]["lr_j"] == trial.params["learning.lr_j"]
        assert config["network"]["hidden"] == json.loads(trial.params["network.hidden"])
        assert config["train"]["threads"] == 1  # one thread per worker by default


# ---------------------------------------------------------------- the search space


def test_space_types_follow_the_config_keys() -> None:
    params = {
        p.key: p
        for p in parse_space(
            {
                "learning.free_sweeps": {"low": 2, "high": 8},
                "learning.kappa_j": {"low": 1, "high": 3},
                "learning.lr_j": {"low": 0.01, "high": 0.1, "log": True},
                "network.hidden": {"choices": [[16], [8, 8]]},
                "network.input_to_all": {"choices": [True, False]},
            },
            "test",
        )
    }
    assert params["learning.free_sweeps"].kind == "int"
    assert params["learning.kappa_j"].kind == "float"  # a float key, even with int bounds
    assert params["learning.lr_j"].log
    assert params["network.hidden"].encoded  # lists travel as JSON strings through Optuna
    assert params["network.hidden"].distribution().choices == ("[16]", "[8, 8]")
    assert not params["network.input_to_all"].encoded


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"learning.lr_x": {"low": 0.1, "high": 0.2}}, ["unknown config key", "learning.lr_x"]),
        ({"training.lr_j": {"low": 0.1, "high": 0.2}}, ["unknown config section", "training"]),
        ({"learning.lr_j": {"low": 0.3, "high": 0.2}}, ["learning.lr_j", "greater than"]),
        ({"learning.lr_j": {"low": 0, "high": 0.2, "log": True}}, ["learning.lr_j", "low > 0"]),
        ({"learning.free_sweeps": {"low": 1.5, "high": 4}}, ["free_sweeps", "integer"]),
        ({"network.input_to_all": {"low": 0, "high": 1}}, ["input_to_all", "choices"]),
        ({"network.j_density": {"low": 0.1, "high": 2.0}}, ["j_density", "high=2.0"]),
        ({"learning.lr_j": {"low": 0.1, "hi": 0.2}}, ["learning.lr_j", "hi"]),
        ({"learning.lr_j": {"choices": []}}, ["learning.lr_j", "non-empty"]),
        ({"learning.lr_j": [0.1, 0.2]}, ["learning.lr_j", "choices"]),
    ],
)
def test_bad_spaces_name_the_key(tmp_path: Path, space: dict, words: list[str]) -> None:
    path = write_yaml(tmp_path / "space.yaml", space)
    with pytest.raises(SpaceError) as info:
        load_space(path, RunConfig.from_dict(BASE))
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("name", ["fashion_default", "deep_chain", "digits_quick"])
def test_shipped_spaces_are_valid(name: str) -> None:
    path = Path(__file__).parents[1] / "configs" / "spaces" / f"{name}.yaml"
    assert len(load_space(path, RunConfig())) >= 5


# ---------------------------------------------------------------- bad input: exit 2, no files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "case",
    ["unknown key", "bad range", "log range", "unreachable storage", "bad base", "other space"],
)
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    out = tmp_path / "sweep"
    extra: list[str] = []
    existing = tmp_path / "existing.db"
    if case == "unknown key":
        write_yaml(Path(files["space"]), {"learning.no_such_key": {"low": 0, "high": 1}})
    elif case == "bad range":
        write_yaml(Path(files["space"]), {"learning.lr_j": {"low": 0.5, "high": 0.1}})
    elif case == "log range":
        write_yaml(Path(files["space"]), {"learning.lr_j": {"low": -1, "high": 1, "log": True}})
    elif case == "unreachable storage":
        extra = ["--storage", f"postgresql+psycopg://darnn@127.0.0.1:{free_port()}/none"]
    elif case == "bad base":
        write_yaml(Path(files["config"]), {**BASE, "network": {"hidden": [32], "j_dd": 1}})
    elif case == "other space":  # a study of that name exists, created with another space
        spec = prepare_sweep(
            space_path=files["space"],
            trials=1,
            config_path=files["config"],
            storage=str(existing),
            study="mine",
            out=str(tmp_path / "first"),
        )
        create_study(spec)
        before = digest(existing)
        write_yaml(Path(files["space"]), {"learning.lr_j": {"low": 0.01, "high": 0.1}})
        extra = ["--storage", str(existing), "--study", "mine"]
    capsys.readouterr()
    assert main(sweep_args(files, out, 2, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("darnn: error: ") and "\n" not in err
    assert not out.exists()
    if case == "other space":
        assert "different search space" in err and "learning.lr_j" in err
        assert digest(existing) == before


def test_without_optuna_the_error_says_how_to_install_it(
    tmp_path: Path,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    assert main(sweep_args(files, tmp_path / "sweep", 2)) == 2
    assert "pip install -e '.[sweep]'" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


# ---------------------------------------------------------------- workers


def test_two_workers_on_sqlite_finish_exactly_n(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert main(sweep_args(files, out, 4, "--workers", "2", "--pruner", "none")) == 0
    db = out / "study.db"
    check_exactly(load(f"sqlite:///{db}", "space"), 4)

    # Re-running with a larger N resumes the same study.
    assert main(sweep_args(files, out, 5, "--pruner", "none")) == 0
    study = load(f"sqlite:///{db}", "space")
    check_exactly(study, 5)

    capsys.readouterr()
    assert main(["sweep", "summary", "--storage", str(db)]) == 0
    text = capsys.readouterr().out
    best = max(study.trials, key=lambda t: t.value)
    assert f"{best.value:.4f}" in text and best.user_attrs[RUN_DIR] in text
    # The best trial's values as overrides that rebuild its config exactly.
    line = next(x for x in text.splitlines() if x.startswith("best trial as overrides: "))
    items = line.removeprefix("best trial as overrides: ").split(" ")
    rebuilt = load_run_config(files["config"], items).to_dict()
    ran = load_run_config(Path(best.user_attrs[RUN_DIR]) / "config.yaml").to_dict()
    for key in best.params:
        section, name = key.split(".")
        assert rebuilt[section][name] == ran[section][name]
    for name in ("optimization_history", "slice"):
        assert (out / f"{name}.png").stat().st_size > 1000
    # Importances need trials that differ enough; otherwise the summary says why not.
    drawn = (out / "param_importances.png").exists()
    assert drawn or "param_importances: not drawn (" in text


def test_failed_trial_is_recorded_with_its_error(
    tmp_path: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two keys valid one by one but not together: the trial fails, the sweep goes on."""
    write_yaml(Path(files["config"]), {**BASE, "network": {"hidden": [32, 32], "inter": "sparse"}})
    write_yaml(
        Path(files["space"]),
        {
            "network.hidden": {"choices": [[8, 8], [32, 32]]},
            "network.inter_fan_in": {"low": 16, "high": 20},
        },
    )
    spec = prepare_sweep(
        space_path=files["space"],
        trials=1,
        config_path=files["config"],
        out=str(tmp_path / "sweep"),
    )
    create_study(spec).enqueue_trial({"network.hidden": "[8, 8]", "network.inter_fan_in": 16})
    assert main(sweep_args(files, tmp_path / "sweep", 1)) == 0
    (trial,) = load(spec.storage, spec.study).trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[OUTCOME] == "failed" and "inter_fan_in" in trial.user_attrs[ERROR]
    assert "inter_fan_in" in capsys.readouterr().out


def test_pruner_stops_a_trial_that_cannot_learn(tmp_path: Path, files: dict[str, str]) -> None:
    write_yaml(Path(files["config"]), {**BASE, "train": {"epochs": 4}})
    rates = {"learning.lr_in": 0.159, "learning.lr_j": 0.058, "learning.lr_out": 0.17}
    write_yaml(Path(files["space"]), {k: {"choices": [v, 0.0]} for k, v in rates.items()})
    args = sweep_args(files, tmp_path / "sweep", 2, "--pruner", "median", "--startup-trials", "1")
    spec = prepare_sweep(
        space_path=files["space"],
        trials=2,
        config_path=files["config"],
        out=str(tmp_path / "sweep"),
    )
    study = create_study(spec)
    study.enqueue_trial(rates)  # learns: completes, and sets the median
    study.enqueue_trial(dict.fromkeys(rates, 0.0))  # all rates 0: chance accuracy
    assert main(args) == 0
    good, bad = load(spec.storage, spec.study).trials
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 4
    assert bad.state == TrialState.PRUNED
    assert list(bad.intermediate_values) == [1]  # stopped after its first epoch
    metrics = (Path(bad.user_attrs[RUN_DIR]) / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 1


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_leaves_a_consistent_study_and_a_rerun_completes_it(
    tmp_path: Path, files: dict[str, str]
) -> None:
    write_yaml(Path(files["config"]), {**BASE, "train": {"epochs": 12}})
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "darnn", *sweep_args(files, out, 2, "--heartbeat", "1")]
    command += ["--pruner", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = f"sqlite:///{out / 'study.db'}"

    def running_with_an_epoch() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended early: {proc.stderr.read().decode()}")
        with contextlib.suppress(Exception):
            for t in load(storage, "space").get_trials(states=(TrialState.RUNNING,)):
                if (Path(t.user_attrs.get(RUN_DIR, "/nonexistent")) / "metrics.jsonl").exists():
                    return t
        return None

    try:
        killed = wait_for(running_with_an_epoch, 240, "a trial past its first epoch")
    finally:
        proc.kill()  # SIGKILL: no chance to record anything
        proc.wait()
    (left,) = load(storage, "space").get_trials(states=(TrialState.RUNNING,))
    assert left.number == killed.number  # consistent: the trial is still RUNNING, nothing lost

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    trials = load(storage, "space").trials
    counts = tally(trials)
    assert (counts.complete, counts.running, counts.waiting, counts.retried) == (2, 0, 0, 1)
    lost = trials[killed.number]
    assert lost.state == TrialState.FAIL and OUTCOME not in lost.user_attrs
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF) == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert "stopped sending heartbeats" in rerun.stdout


# ---------------------------------------------------------------- PostgreSQL


def postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found is None:
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        found = versions[-1] if versions else None
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL server on a Unix socket in a temporary folder."""
    bindir = postgres_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb); .ci/run installs postgresql")
    # A short folder name: Unix socket paths are limited to about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="darnn-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as its own user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data = root / "data"

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=120, check=False
        )

    init = pg(
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
    )
    options = f"-k {root} -c listen_addresses='' -F"
    start = None
    if init.returncode == 0:
        start = pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(root / "server.log"),
            "start",
        )
    if start is None or start.returncode != 0:
        why = (init.stderr if start is None else start.stderr + start.stdout).strip()[-400:]
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not be started: {why}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_on_postgresql_finish_exactly_n(
    tmp_path: Path, files: dict[str, str], postgres_url: str
) -> None:
    args = sweep_args(files, tmp_path / "sweep", 4, "--workers", "2", "--pruner", "none")
    assert main([*args, "--storage", postgres_url, "--study", "pg-two-workers"]) == 0
    check_exactly(load(postgres_url, "pg-two-workers"), 4)
    assert not (tmp_path / "sweep" / "study.db").exists()  # the study lives in PostgreSQL


def test_new_storage_opened_by_two_processes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that loses the race to create Optuna's tables retries and opens them."""
    import sqlalchemy.exc

    from darnn.sweep import storage as storage_module

    real = optuna.storages.RDBStorage
    calls = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:  # what the loser sees when the winner inserted first
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception())
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opened = storage_module.make_storage(url)
    assert len(calls) == 2 and opened.get_all_studies() == []

    def always(*args: Any, **kwargs: Any) -> Any:
        raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception())

    monkeypatch.setattr(optuna.storages, "RDBStorage", always)
    with pytest.raises(sqlalchemy.exc.OperationalError):  # a database that never opens
        storage_module.make_storage(url)


def test_interrupted_trial_is_queued_again(tmp_path: Path, files: dict[str, str]) -> None:
    """Ctrl-C: the trial is recorded as interrupted, queued again, and the rerun runs it."""
    write_yaml(Path(files["config"]), {**BASE, "train": {"epochs": 12}})
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "darnn", *sweep_args(files, out, 1, "--pruner", "none")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    storage = f"sqlite:///{out / 'study.db'}"

    def started() -> bool:
        with contextlib.suppress(Exception):
            for t in load(storage, "space").get_trials(states=(TrialState.RUNNING,)):
                if (Path(t.user_attrs.get(RUN_DIR, "/nonexistent")) / "metrics.jsonl").exists():
                    return True
        return proc.poll() is not None

    try:
        wait_for(started, 240, "a trial past its first epoch")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        assert code == 130, proc.stderr.read().decode() if proc.stderr else code
    finally:
        proc.kill()
        proc.wait()
    (first,) = load(storage, "space").trials[:1]
    assert first.state == TrialState.FAIL and first.user_attrs[OUTCOME] == "interrupted"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    first, retry = load(storage, "space").trials
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
