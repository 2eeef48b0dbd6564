"""fastbp.sweep: search spaces, reproducible trials, worker pools (processes, Dask), the command."""
import csv
import math
import multiprocessing

import numpy as np
import pytest

from fastbp import sweep as sw
from fastbp.cli import main

SMALL = dict(hidden_size_list=[12], epochs=2, batch_size=50)   # trials of a fraction of a second


@pytest.fixture(scope="module")
def data(digits):
    (x, t), _ = digits
    return x[:300], t[:300]


def test_parse_space_kinds():
    space = sw.parse_space(["lr=log:1e-6:1e-2", "weight_decay=0,1e-4", "batch_size=50,100"])
    assert space == {"lr": sw.LogUniform(1e-6, 1e-2), "weight_decay": sw.Choice((0.0, 1e-4)),
                     "batch_size": sw.Choice((50, 100))}
    assert sw.parse_space({"lr": "lin:0.1:0.5:3"})["lr"].grid() == pytest.approx([0.1, 0.3, 0.5])
    assert sw.parse_space({"lr": sw.LogUniform(1e-4, 1e-2, 3)})["lr"].grid() == pytest.approx([1e-4, 1e-3, 1e-2])
    assert sw.parse_space({"lr": [0.1, 0.2]})["lr"] == sw.Choice((0.1, 0.2))


@pytest.mark.parametrize("spec, message", [
    (["momentum=0.9"], "unknown parameter 'momentum'"),
    (["lr"], "expected NAME=SPEC"),
    (["lr=exp:1:2"], "unknown kind 'exp'"),
    (["lr=log:1e-2:1e-6"], "LOW < HIGH"),
    (["lr=log:0:1"], r"lr: expected a finite number > 0, got 0"),
    (["lr=log:1e-3"], "log:LOW:HIGH or log:LOW:HIGH:POINTS"),
    (["lr=log:1e-3:1e-1:0"], "positive whole number of grid points"),
    (["lr=abc"], "lr: expected a number, got 'abc'"),
    (["lr=0.1", "lr=0.2"], "lr is given twice"),
    (["batch_size=lin:10:100"], "list of whole numbers"),
    (["batch_size=10.5"], "whole number"),
    (["weight_decay=-1"], ">= 0"),
    ({}, "non-empty"),
])
def test_bad_search_spaces_are_named(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sw.parse_space(spec)


def test_trials_depend_only_on_seed_and_index():
    space = {"lr": "log:1e-6:1e-2", "weight_decay": "log:1e-8:1e-4"}
    five, three = sw.make_trials(space, 5, seed=7), sw.make_trials(space, 3, seed=7)
    assert five[:3] == three
    assert sw.make_trials(space, 3, seed=8) != three
    lrs = [t.params["lr"] for t in sw.make_trials(space, 200, seed=0)]
    assert 1e-6 <= min(lrs) and max(lrs) <= 1e-2
    # log-uniform: about a quarter of the draws in each decade
    decades = np.histogram(np.log10(lrs), bins=[-6, -5, -4, -3, -2])[0]
    assert decades.min() > 25
    assert len({t.init_seed for t in five} | {t.fit_seed for t in five}) == 10


def test_grid_is_every_combination():
    trials = sw.make_trials({"lr": "0.1,0.01", "batch_size": "50,100,150"}, grid=True)
    assert [(t.params["lr"], t.params["batch_size"]) for t in trials] == [
        (lr, b) for lr in (0.1, 0.01) for b in (50, 100, 150)]
    with pytest.raises(ValueError, match="grid needs a number of points"):
        sw.make_trials({"lr": "log:1e-3:1e-1"}, grid=True)
    with pytest.raises(ValueError, match="the grid has 6 points"):
        sw.make_trials({"lr": "0.1,0.01", "batch_size": "50,100,150"}, trials=5, grid=True)


def test_validation_split_is_the_books():
    x, t = np.arange(50.0).reshape(25, 2), np.arange(25)
    x_tr, t_tr, x_val, t_val = sw.split_validation(x, t, 0.2, seed=1)
    assert len(x_val) == int(25 * 0.2) == 5 and len(x_tr) == 20
    assert sorted(np.concatenate([t_tr, t_val])) == list(range(25))   # a partition of the samples
    assert (x_tr[:, 0] == 2 * t_tr).all()                             # rows keep their labels
    assert list(t_val) != list(range(5))                              # shuffled first
    with pytest.raises(ValueError, match="between 0 and 1"):
        sw.split_validation(x, t, 1.0)


def _setup(**kw):
    s = dict(SMALL)
    return sw.Setup(10, tuple(s["hidden_size_list"]), "relu", "relu", s["epochs"], s["batch_size"],
                    "float64", **kw)


def test_a_trial_is_reproducible_and_honours_weight_decay(data):
    x, t = data
    split = sw.split_validation(x, t)
    trial = sw.make_trials({"lr": [0.1], "weight_decay": [0.0]}, 1)[0]
    a, b = sw.run_trial(trial, _setup(), split), sw.run_trial(trial, _setup(), split)
    assert a.digest == b.digest and a.val_curve == b.val_curve and a.val_acc > 0.2   # learnt (chance: 0.1)
    assert len(a.val_curve) == SMALL["epochs"] + 1   # after the first step, then each epoch
    decayed = sw.Trial(0, {"lr": 0.1, "weight_decay": 0.05}, trial.init_seed, trial.fit_seed)
    assert sw.run_trial(decayed, _setup(), split).digest != a.digest


def _digests(result):
    return {r.trial.index: r.digest for r in result.results}


def test_process_pool_results_do_not_depend_on_worker_or_order(data, tmp_path):
    x, t = data
    space = {"lr": "log:1e-2:0.5"}
    lines = []
    two = sw.sweep(x, t, space, trials=4, workers=2, executor="processes", seed=3,
                   csv=tmp_path / "s.csv", progress=lines.append, **SMALL)
    assert len(two.results) == 4 and not two.interrupted and "process pool" in two.where
    # (which worker takes which trial is the pool's choice: usually both take some, but one that
    # starts late may find none left, so the count of workers seen is not asserted)
    assert 1 <= len({r.worker for r in two.results}) <= 2
    one = sw.sweep(x, t, space, trials=4, workers=1, executor="processes", seed=3, progress=None,
                   **SMALL)
    assert _digests(one) == _digests(two)
    # and in this process, in reverse order
    split = sw.split_validation(np.asarray(x, dtype=np.float64), t, 0.2, 3)
    trials = sw.make_trials(space, 4, seed=3)
    here = {tr.index: sw.run_trial(tr, _setup(), split).digest for tr in reversed(trials)}
    assert here == _digests(two)
    # best first, in the table, the progress lines and the CSV
    accs = [r.val_acc for r in two.results]
    assert accs == sorted(accs, reverse=True)
    assert lines[0].startswith("sweep: 4 trials on 2 local worker processes") and len(lines) == 5
    assert "best" in lines[-1]
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [float(r["val_acc"]) for r in rows] == accs
    assert [r["weights_sha256"] for r in rows] == [r.digest for r in two.results]
    assert two.table().splitlines()[0].split()[:3] == ["rank", "trial", "lr"]


def test_dask_local_cluster_gives_the_same_trials(data):
    pytest.importorskip("distributed", reason="the dask extra (fastbp[dask]) is not installed")
    x, t = data
    space = {"lr": "log:1e-2:0.5"}
    on_dask = sw.sweep(x, t, space, trials=3, workers=2, executor="dask", seed=3, progress=None,
                       **SMALL)
    assert "LocalCluster" in on_dask.where
    pool = sw.sweep(x, t, space, trials=3, workers=1, executor="processes", seed=3, progress=None,
                    **SMALL)
    assert _digests(on_dask) == _digests(pool)
    assert [r.val_curve for r in on_dask.results] == [r.val_curve for r in pool.results]


def test_ctrl_c_stops_the_workers_and_keeps_what_finished(data, tmp_path):
    x, t = data

    def interrupt_after_first(line):
        if line.startswith("trial"):
            raise KeyboardInterrupt

    result = sw.sweep(x, t, {"lr": "log:1e-2:0.5"}, trials=30, workers=2, executor="processes",
                      csv=tmp_path / "partial.csv", progress=interrupt_after_first, **SMALL)
    assert result.interrupted and 1 <= len(result.results) < 30
    assert multiprocessing.active_children() == []      # the workers are gone
    rows = list(csv.DictReader(open(tmp_path / "partial.csv")))
    assert len(rows) == len(result.results)


def test_a_failing_trial_stops_the_search_with_its_error(data):
    x, t = data
    with pytest.raises(ValueError, match="weight_init_std"):
        sw.sweep(x, t, {"lr": [0.1]}, trials=2, workers=1, executor="processes", progress=None,
                 weight_init_std="bogus", **SMALL)
    assert multiprocessing.active_children() == []


def _crash(*args):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_worker_that_dies_is_named(data, monkeypatch):
    x, t = data
    monkeypatch.setattr(sw, "run_trial", _crash)   # what the workers are asked to run (by name)
    with pytest.raises(sw.WorkerDied, match="a worker process died"):
        sw.sweep(x, t, {"lr": [0.1]}, trials=2, workers=1, executor="processes", progress=None,
                 **SMALL)
    assert multiprocessing.active_children() == []


def test_the_book_figure(data, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (fastbp[plot]) is not installed")
    x, t = data
    split = sw.split_validation(x, t)
    results = [sw.run_trial(tr, _setup(), split) for tr in sw.make_trials({"lr": "log:1e-2:0.5"}, 3)]
    out = sw.SweepResult(results, 3).plot(tmp_path / "best.png", top=2)
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_diverged_trials_sort_last():
    trial = sw.Trial(0, {"lr": 1.0}, 1, 2)
    good = sw.TrialResult(sw.Trial(1, {"lr": 0.1}, 1, 2), 0.5, 0.6)
    bad = sw.TrialResult(trial, math.nan, math.nan, note="diverged: ...")
    assert sw.SweepResult([bad, good], 2).results == [good, bad]


def test_cli_sweep(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--dataset", "digits", "--train-size", "300", "--trials", "2",
                 "--epochs", "1", "--hidden", "12", "--batch-size", "50", "--workers", "1",
                 "--executor", "processes", "--param", "lr=log:1e-2:0.5",
                 "--param", "weight_decay=0,1e-4", "--csv", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "2 of 2 trials" in text and "trials/minute" in text
    assert len(list(csv.DictReader(open(out)))) == 2
    assert main(["sweep", "--dataset", "digits", "--param", "lr=log:1:0.1"]) == 2
    assert "LOW < HIGH" in capsys.readouterr().err
    assert main(["sweep", "--dataset", "digits", "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
