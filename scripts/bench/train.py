"""Benchmark the trainer's model on MovieLens-100k against implicit's ALS and BPR.

Every model is scored by services.trainer.evaluation on the same protocol split. Ours runs
with the shipped TrainConfig defaults; implicit's models use the best settings found by a
grid search on this very split (seed 42), so their figures are optimistic. All use 2 threads.

    .venv/bin/python scripts/bench/train.py [--seed 42] [--user-fraction 1.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import implicit
import numpy as np
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from services.trainer.evaluation import RankingMetrics, evaluate, stratified_split
from services.trainer.model import Interactions, TrainConfig, fit

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "ml-100k"
THREADS = 2
# Grid-searched on the seed-42 split (factors 32-128, alpha 1-10, regularization 1-100).
ALS_PARAMS = {"factors": 64, "regularization": 25.0, "alpha": 2.5, "iterations": 15}
# Grid-searched likewise (factors 32-128, lr 0.001-0.05, reg 0.001-0.1, 30-1000 iterations).
BPR_PARAMS = {"factors": 64, "learning_rate": 0.003, "regularization": 0.03, "iterations": 100}


def load_ml100k(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(user index, item index) of every rating in ``u.data``; ratings count as positives."""
    raw = np.loadtxt(root / "u.data", dtype=np.int64, usecols=(0, 1))
    _, users = np.unique(raw[:, 0], return_inverse=True)
    _, items = np.unique(raw[:, 1], return_inverse=True)
    return users, items


def subsample_users(
    users: np.ndarray, items: np.ndarray, fraction: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep a random ``fraction`` of users (re-indexed), to check the defaults off ml-100k."""
    chosen = np.random.default_rng(seed).random(users.max() + 1) < fraction
    keep = chosen[users]
    return np.unique(users[keep], return_inverse=True)[1], items[keep]


@dataclasses.dataclass(frozen=True)
class Run:
    metrics: RankingMetrics
    seconds: float  # wall clock: training + evaluation
    cpu_seconds: float  # all threads; steadier than wall time on a shared machine


def timed(run: Callable[[], RankingMetrics]) -> Run:
    wall, cpu = time.perf_counter(), time.process_time()
    metrics = run()
    return Run(metrics, time.perf_counter() - wall, time.process_time() - cpu)


def run_ours(train: Interactions, test: Interactions, losses: list[float]) -> RankingMetrics:
    config = dataclasses.replace(TrainConfig(), num_threads=THREADS)
    model = fit(train, config, on_epoch=lambda _epoch, _epochs, loss: losses.append(loss))
    return evaluate(model, train, test)


def run_implicit(
    make: Callable[[], AlternatingLeastSquares | BayesianPersonalizedRanking],
    train: Interactions,
    test: Interactions,
) -> RankingMetrics:
    user_items = sp.csr_matrix(
        (train.weights, (train.users, train.items)), shape=(train.n_users, train.n_items)
    )
    # implicit parallelises itself; a multi-threaded BLAS underneath would oversubscribe.
    with threadpool_limits(1, "blas"):
        model = make()
        model.fit(user_items, show_progress=False)
    users = torch.from_numpy(np.asarray(model.user_factors))
    items = torch.from_numpy(np.asarray(model.item_factors))
    return evaluate(lambda batch: users[batch] @ items.T, train, test)


def run_popularity(train: Interactions, test: Interactions) -> RankingMetrics:
    counts = torch.from_numpy(np.bincount(train.items, minlength=train.n_items)).float()
    return evaluate(lambda batch: counts.expand(len(batch), -1), train, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42, help="split seed (protocol: 42)")
    parser.add_argument("--user-fraction", type=float, default=1.0, help="users kept (0, 1]")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("RECSYS_ML100K", DEFAULT_DATA))
    if not (data_dir / "u.data").is_file():
        sys.exit(f"MovieLens-100k not found: {data_dir / 'u.data'} (set RECSYS_ML100K)")
    users, items = load_ml100k(data_dir)
    if args.user_fraction < 1:
        users, items = subsample_users(users, items, args.user_fraction, seed=args.seed)
    train, test = stratified_split(users, items, seed=args.seed)

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"numpy {np.__version__}, implicit {implicit.__version__}, {THREADS} threads each"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"data: {data_dir}, {train.n_users} users, {train.n_items} items, "
        f"{len(train)} train / {len(test)} test pairs, split seed {args.seed}"
    )
    print(f"ours: {TrainConfig()}")

    losses: list[float] = []
    results = {
        "ours": timed(lambda: run_ours(train, test, losses)),
        "als": timed(
            lambda: run_implicit(
                lambda: AlternatingLeastSquares(**ALS_PARAMS, random_state=0, num_threads=THREADS),
                train,
                test,
            )
        ),
        "bpr": timed(
            lambda: run_implicit(
                lambda: BayesianPersonalizedRanking(
                    **BPR_PARAMS, random_state=0, num_threads=THREADS
                ),
                train,
                test,
            )
        ),
        "popularity": timed(lambda: run_popularity(train, test)),
    }
    labels = {
        "ours": "ours: iALS (torch), defaults",
        "als": "implicit ALS, tuned",
        "bpr": "implicit BPR, tuned",
        "popularity": "popularity",
    }
    print("ours loss per epoch: " + " ".join(f"{loss:.5f}" for loss in losses))
    print()
    print(
        f"{'model':<30} {'P@10':>7} {'R@10':>7} {'NDCG@10':>8} {'MAP@10':>7} {'seconds':>8} "
        f"{'cpu s':>6}"
    )
    for name, run in results.items():
        m = run.metrics
        print(
            f"{labels[name]:<30} {m.precision:7.4f} {m.recall:7.4f} {m.ndcg:8.4f} {m.map:7.4f} "
            f"{run.seconds:8.2f} {run.cpu_seconds:6.2f}"
        )
    ours = results["ours"]
    fields: dict[str, float | int] = {
        "ours_ndcg": ours.metrics.ndcg,
        "ours_precision": ours.metrics.precision,
        "ours_recall": ours.metrics.recall,
        "ours_map": ours.metrics.map,
        "ours_seconds": ours.seconds,
        "ours_cpu_seconds": ours.cpu_seconds,
        "als_ndcg": results["als"].metrics.ndcg,
        "als_precision": results["als"].metrics.precision,
        "als_seconds": results["als"].seconds,
        "bpr_ndcg": results["bpr"].metrics.ndcg,
        "bpr_precision": results["bpr"].metrics.precision,
        "bpr_seconds": results["bpr"].seconds,
        "popularity_ndcg": results["popularity"].metrics.ndcg,
        "users_evaluated": ours.metrics.users_evaluated,
    }
    print(
        "RESULT "
        + " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
        )
    )


if __name__ == "__main__":
    main()
