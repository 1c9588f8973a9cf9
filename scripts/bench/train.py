"""Benchmark the trainer's quality and cost on a panel of data shapes, beside implicit's ALS.

For every dataset, on the protocol's split (per-user stratified 75/25, split seed 42):
- ours, searched: exactly a training job's path: the hyper-parameter search with the trainer's
  default budget on the training part (its own validation split, never the test part), then
  the chosen hyper-parameters fitted on the training part and ranked on the test part;
- ours with the shipped fallback defaults (what `recsys train --no-search` uses);
- implicit's ALS, grid-searched on the test part itself (optimistic: it sees the answers);
- popularity.
The panel (default): MovieLens-100k; ml-100k with 30% of its users; ml-100k with each user's
ratings thinned at random to a third; and three synthetic shapes (items >> users, a long tail,
high sparsity). `--data PATH` adds any MovieLens directory or ratings file (u.data,
ratings.dat, ratings.csv), or a CSV with --user-column/--item-column.

    .venv/bin/python scripts/bench/train.py [--datasets ml100k,syn-wide] [--data PATH ...]

`--workers 1,2` instead times a job's distributed fits (scripts/bench/train_workers.py) on
`--events` synthetic interactions (default 5M) for each number of workers, with the time
their collectives take per epoch.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import implicit
import numpy as np
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

# Run as a file (`python scripts/bench/train.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench import train_workers
from services.data import loaders
from services.data.loaders import Interaction
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.trainer import search
from services.trainer.dataset import index_ids
from services.trainer.evaluation import RankingMetrics, evaluate, popularity, stratified_split
from services.trainer.model import Interactions, TrainConfig, fit
from services.trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
ML100K = Path(os.environ.get("RECSYS_ML100K") or ROOT.parent / "shared" / "datasets" / "ml-100k")
THREADS = 2
# implicit's ALS grid, wide enough that the best setting of every dataset lies inside it.
ALS_GRID = {"factors": (32, 64, 128), "regularization": (1.0, 5.0, 25.0, 100.0, 400.0),
            "alpha": (2.5, 10.0, 40.0, 100.0)}
SYNTHETIC = {
    "syn-wide": SyntheticSpec(users=1_000, items=20_000, events=60_000, seed=1),
    "syn-tail": SyntheticSpec(users=5_000, items=5_000, events=150_000, seed=2,
                              popularity_exponent=1.2),
    "syn-sparse": SyntheticSpec(users=20_000, items=10_000, events=100_000, seed=3),
}
PANEL = ("ml100k", "ml100k-30users", "ml100k-thin3", *SYNTHETIC)


@dataclasses.dataclass(frozen=True)
class Run:
    metrics: RankingMetrics
    seconds: float
    note: str = ""
    search_seconds: float = 0.0


Runner = Callable[[], tuple[RankingMetrics, str, float]]


def pairs(events: Iterator[Interaction]) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) indices, ids indexed as the trainer indexes them (natural order)."""
    users, items = [], []
    for event in events:
        users.append(event.user_id)
        items.append(event.item_id)
    return (index_ids(np.array(users, dtype=object))[1],
            index_ids(np.array(items, dtype=object))[1])


def reindexed(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.unique(users, return_inverse=True)[1], np.unique(items, return_inverse=True)[1]


def load(name: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    if name in SYNTHETIC:
        data = SyntheticData(SYNTHETIC[name])
        blocks = list(data.blocks())
        return reindexed(np.concatenate([b.user for b in blocks]),
                         np.concatenate([b.item for b in blocks]))
    if name.startswith("ml100k"):
        if not (ML100K / "u.data").is_file():
            sys.exit(f"MovieLens-100k not found at {ML100K} (set RECSYS_ML100K)")
        users, items = pairs(loaders.read_movielens(ML100K))
        if name == "ml100k-30users":
            keep = (rng.random(users.max() + 1) < 0.3)[users]
            return reindexed(users[keep], items[keep])
        if name == "ml100k-thin3":
            keep = rng.random(len(users)) < 1 / 3
            return reindexed(users[keep], items[keep])
        return users, items
    path = Path(name)
    if path.suffix == ".csv" and path.name != "ratings.csv":
        columns = loaders.Columns(user=args.user_column, item=args.item_column,
                                  time=args.time_column, fixed_type=loaders.parse_type("rating"))
        return pairs(loaders.read_table(path, columns))
    return pairs(loaders.read_movielens(path))


def timed(run: Runner) -> Run:
    start = time.perf_counter()
    metrics, note, search_seconds = run()
    return Run(metrics, time.perf_counter() - start, note, search_seconds)


def ours(train: Interactions, test: Interactions) -> tuple[RankingMetrics, str, float]:
    """A job's compute: search on the training part, fit the choice there and rank the test
    part, then fit it on everything (the registered model)."""
    defaults = TrainConfig(num_threads=THREADS)
    result = search.search(
        train, starts=search.starting_points(defaults, champion={}, pinned=()),
        budget=TrainerSettings().search_defaults().budget(trials=None, seconds=None),
        max_rows=TrainerSettings().search_max_rows)
    c, p = result.config, result.progress
    note = (f"{p.trials_done} trials ({p.trials_pruned} pruned) in {p.seconds:.1f} s; "
            f"factors {c.factors}, epochs {c.epochs}, regularization {c.regularization:.3g}, "
            f"reg_exponent {c.reg_exponent:.2f}, alpha {c.alpha:.3g}")
    metrics = evaluate(fit(train, result.config), train, test)
    everything = Interactions.from_arrays(
        np.concatenate([train.users, test.users]), np.concatenate([train.items, test.items]),
        n_users=train.n_users, n_items=train.n_items)
    fit(everything, result.config)
    return metrics, note, p.seconds


def defaults(train: Interactions, test: Interactions) -> tuple[RankingMetrics, str, float]:
    return evaluate(fit(train, TrainConfig(num_threads=THREADS)), train, test), "", 0.0


def als_tuned(train: Interactions, test: Interactions) -> tuple[RankingMetrics, str, float]:
    """implicit's ALS, every setting of ALS_GRID ranked on the test part; the best kept."""
    user_items = sp.csr_matrix((train.weights, (train.users, train.items)),
                               shape=(train.n_users, train.n_items))
    best: tuple[RankingMetrics, str, float] | None = None
    for factors, regularization, alpha in itertools.product(*ALS_GRID.values()):
        # implicit parallelises itself; a multi-threaded BLAS underneath would oversubscribe.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=factors, regularization=regularization,
                                            alpha=alpha, iterations=15, random_state=0,
                                            num_threads=THREADS)
            model.fit(user_items, show_progress=False)
        users = torch.from_numpy(np.asarray(model.user_factors))
        items = torch.from_numpy(np.asarray(model.item_factors))
        metrics = evaluate(lambda batch, u=users, i=items: u[batch] @ i.T, train, test)
        if best is None or metrics.ndcg > best[0].ndcg:
            best = (metrics, f"factors {factors}, regularization {regularization:g}, "
                             f"alpha {alpha:g}", 0.0)
    assert best is not None
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(PANEL),
                        help=f"panel datasets to run, comma-separated (default: all of "
                             f"{', '.join(PANEL)}; '' for none)")
    parser.add_argument("--data", action="append", default=[], type=Path,
                        help="another dataset: a MovieLens directory or ratings file, or a CSV "
                             "with the columns below (repeatable)")
    parser.add_argument("--user-column", default="user_id")
    parser.add_argument("--item-column", default="item_id")
    parser.add_argument("--time-column", default="timestamp")
    parser.add_argument("--seed", type=int, default=42, help="split seed (protocol: 42)")
    parser.add_argument("--workers", default="",
                        help="time distributed fits for these numbers of workers, e.g. 1,2 "
                             "(instead of the quality panel)")
    parser.add_argument("--events", type=int, default=5_000_000,
                        help="--workers: synthetic interactions (default 5M)")
    parser.add_argument("--epochs", type=int, default=3, help="--workers: epochs per fit")
    args = parser.parse_args()
    if args.workers:
        print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch "
              f"{torch.__version__}")
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        fields = train_workers.run([int(n) for n in args.workers.split(",")],
                                   events=args.events, epochs=args.epochs)
        print("RESULT " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in fields.items()))
        return
    names = [n for n in args.datasets.split(",") if n] + [str(p) for p in args.data]
    unknown = [n for n in names[: len(names) - len(args.data)] if n not in PANEL]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r} (the panel: {', '.join(PANEL)})")

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"numpy {np.__version__}, implicit {implicit.__version__}, {THREADS} threads each")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"ours: search with the trainer's defaults ({TrainerSettings().search_trials} trials, "
          f"{TrainerSettings().search_trial_multiple:g}x the first trial's time); fallback "
          f"defaults {TrainConfig()}")
    results: dict[str, dict[str, Run]] = {}
    for name in names:
        users, items = load(name, args)
        train, test = stratified_split(users, items, seed=args.seed)
        print(f"\n{name}: {train.n_users} users, {train.n_items} items, {len(train)} train / "
              f"{len(test)} test pairs, density {len(train) / train.n_users / train.n_items:.4f}",
              flush=True)
        runs = {
            "ours, searched": timed(lambda t=train, s=test: ours(t, s)),
            "ours, fallback defaults": timed(lambda t=train, s=test: defaults(t, s)),
            "implicit ALS, tuned on test": timed(lambda t=train, s=test: als_tuned(t, s)),
            "popularity": timed(lambda t=train, s=test: (evaluate(popularity(t), t, s), "", 0.0)),
        }
        for label, run in runs.items():
            m = run.metrics
            print(f"  {label:<28} NDCG@10 {m.ndcg:.4f}  P@10 {m.precision:.4f}  "
                  f"R@10 {m.recall:.4f}  {run.seconds:7.1f} s  {run.note}", flush=True)
        results[name] = runs

    print(f"\n{'dataset':<18} {'ours':>7} {'defaults':>8} {'ALS':>7} {'pop':>7} "
          f"{'ours/ALS':>8} {'ours s':>7}")
    ratios = {}
    for name, runs in results.items():
        ours_run, als = runs["ours, searched"], runs["implicit ALS, tuned on test"]
        ratios[name] = ours_run.metrics.ndcg / als.metrics.ndcg
        print(f"{name:<18} {ours_run.metrics.ndcg:7.4f} "
              f"{runs['ours, fallback defaults'].metrics.ndcg:8.4f} {als.metrics.ndcg:7.4f} "
              f"{runs['popularity'].metrics.ndcg:7.4f} {ratios[name]:8.3f} "
              f"{ours_run.seconds:7.1f}")
    fields: dict[str, float | str] = {}
    if "ml100k" in results:
        ml = results["ml100k"]["ours, searched"]
        fields |= {"ours_ndcg": ml.metrics.ndcg, "ours_precision": ml.metrics.precision,
                   "ours_seconds": ml.seconds, "search_seconds": ml.search_seconds}
    if ratios:
        worst = min(ratios, key=ratios.__getitem__)
        fields |= {"min_ratio_vs_als": ratios[worst], "min_ratio_dataset": worst}
    print("RESULT " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in fields.items()))


if __name__ == "__main__":
    main()
