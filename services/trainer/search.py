"""Hyper-parameter search: Optuna's TPE over a validation split carved from the training part.

Why a search in every job: iALS quality sits on a narrow ridge of regularisation that moves
with the data's shape (a value that is best on one dataset loses a fifth of NDCG on a sparser
one), so no fixed default suits every user's data.

- **No leakage**: trials are fitted on 80% of each user's training items and ranked against the
  other 20% (per-user stratified, like the protocol); the held-out split that the quality gate
  and MLflow report is never seen here.
- **Warm start**: the first trials are the given starting points (the champion's
  hyper-parameters, then the shipped defaults); the best trial wins, ties going to the earlier,
  so a search that finds nothing better keeps the champion's.
- **Pruning**: a trial reports its validation NDCG@10 every other epoch; Optuna's median
  pruner stops one that is behind the median of earlier trials at the same epoch, and any trial
  still running when the trials' share of the time ends is stopped there (the first trial
  always finishes).
- **Confirmation**: the starting points and the best few other trials are fitted again on
  fresh validation splits, and the best mean wins: the maximum of many noisy figures favours
  luck (the winner's curse), a fresh split does not know which trial won.
- **Budget**: at most `trials` trials and `seconds` of wall clock; by default the seconds are
  a multiple of what the first trial took, so the budget follows the data's cost whatever
  drives it (interactions, catalogue size, factors), up to a ceiling.
- **Scale**: trials fit at most `max_rows` interactions (a seeded sample of users beyond that)
  and are ranked for at most `max_eval_users` validation users, so a trial's cost is bounded
  whatever the data size; frequency-scaled regularisation makes what is found on the sample
  carry over to the whole.
- **Regularisation is searched as a penalty**: the penalty of a typical user's row,
  ``regularization * (n_items + alpha * median user weight) ** reg_exponent``, log-uniform;
  converted back, so `regularization` no longer moves with alpha and the exponent, which TPE
  (sampling each parameter on its own) could not follow.
- **Reproducible**: TPE is seeded with the starting point's seed, which also draws the
  validation split and the sample; the trials run one at a time.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from services.trainer.evaluation import evaluate, only_users, sample_users, stratified_split
from services.trainer.hyperparameters import SEARCH_SPACE, SearchRange
from services.trainer.model import FactorModel, Interactions, TrainConfig, fit

# What a request may ask of a search at most.
MAX_TRIALS = 1000
MAX_SECONDS = 86_400.0
# The share of each user's training items that trials fit on; the rest ranks them. High, so
# trials see nearly as much data as the final fit (less data favours stronger penalties).
FIT_SHARE = 0.9
# The median pruner compares a trial with earlier ones only after this many completed trials,
# and never before this epoch.
PRUNER_STARTUP_TRIALS = 5
PRUNER_WARMUP_EPOCHS = 2
# Random trials before TPE models the results (after the starting points).
RANDOM_STARTUP_TRIALS = 6
# The share of the time budget for trials; confirmation gets the rest.
TRIALS_SHARE = 0.6
# Confirmation: the first trial and the best few others...
CONFIRMED_TRIALS = 3
# ...each fitted on fresh splits holding about this many interactions in all (small data,
# whose figures are the noisiest, gets more of them, each cheap), 3 to 8 splits: fewer than 3
# cannot tell a real difference of 0.005 NDCG from the noise of one split.
CONFIRMING_ROWS = 200_000
CONFIRMING_SPLITS = (3, 8)

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True, kw_only=True)
class Budget:
    """At most `trials` trials (0: no search) and `seconds` of wall clock; None: the first
    trial's duration times `trial_multiple`, at most `max_seconds`."""

    trials: int
    seconds: float | None = None
    trial_multiple: float = 30.0
    max_seconds: float = 900.0

    def seconds_after(self, first_trial_s: float) -> float:
        if self.seconds is not None:
            return self.seconds
        return min(self.trial_multiple * first_trial_s, self.max_seconds)


@dataclass(frozen=True, kw_only=True)
class Progress:
    """The search so far (`recsys.trainer.v1.SearchProgress`)."""

    trials_done: int
    trials_budget: int
    trials_pruned: int
    best_validation_ndcg: float
    first_validation_ndcg: float
    seconds: float
    seconds_budget: float  # 0 until the first trial has set it


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One finished trial: its hyper-parameters and its last validation NDCG@10 (None when
    it was stopped before its first report)."""

    number: int
    config: TrainConfig
    validation_ndcg: float | None
    pruned: bool
    epochs_run: int
    seconds: float


@dataclass(frozen=True)
class SearchResult:
    config: TrainConfig  # the confirmed best, or the first starting point
    progress: Progress
    trials: tuple[Trial, ...]


@dataclass(frozen=True)
class SearchData:
    """The split trials fit on and are ranked against."""

    fit: Interactions
    validation: Interactions

    @classmethod
    def carve(cls, train: Interactions, *, seed: int, max_rows: int,
              max_eval_users: int) -> SearchData:
        """Split each user's items FIT_SHARE / rest; keep a seeded sample of users when the
        fit part is larger than `max_rows`, and rank at most `max_eval_users` of them."""
        rng = np.random.default_rng(seed)
        fit_part, validation = stratified_split(
            train.users, train.items, train.weights, ratio=FIT_SHARE, seed=seed,
            n_users=train.n_users, n_items=train.n_items)
        kept = sample_users(fit_part, max_rows, rng)
        if kept is not None:
            fit_part, validation = only_users(fit_part, kept), only_users(validation, kept)
        ranked = np.unique(validation.users)
        if len(ranked) > max_eval_users:
            chosen = rng.choice(ranked, max_eval_users, replace=False)
            validation = _only(validation, np.isin(validation.users, chosen))
        return cls(fit_part, validation)

    def score(self, config: TrainConfig, should_cancel: Callable[[], bool] | None) -> float:
        """Validation NDCG@10 of `config` fitted here."""
        model = fit(self.fit, config, should_cancel=should_cancel)
        return evaluate(model, self.fit, self.validation).ndcg


def _only(data: Interactions, mask: np.ndarray) -> Interactions:
    return Interactions(data.users[mask], data.items[mask], data.weights[mask], data.n_users,
                        data.n_items)


def typical_row(data: Interactions, alpha: float) -> float:
    """The penalty base of a median user's row: n_items + alpha * their total weight."""
    totals = np.bincount(data.users, weights=data.weights, minlength=data.n_users)
    active = totals[totals > 0]
    return data.n_items + alpha * float(np.median(active) if len(active) else 0.0)


def penalty(config: TrainConfig, data: Interactions) -> float:
    """`config`'s regularisation as the penalty of a typical row of `data`."""
    return config.regularization * typical_row(data, config.alpha) ** config.reg_exponent


def search(
    train: Interactions,
    *,
    starts: Sequence[TrainConfig],
    pinned: Collection[str] = (),
    budget: Budget,
    max_rows: int = 1_000_000,
    max_eval_users: int = 5_000,
    on_trial: Callable[[Trial, Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> SearchResult:
    """Search the hyper-parameters of SEARCH_SPACE that are not `pinned` on `train`.

    `starts` are tried first, in order; the first also gives the pinned values, the seed and
    everything that is not searched. `on_trial` runs after each trial. Raises
    TrainingCancelled when `should_cancel` says so.
    """
    run = _Search(train, starts=starts, pinned=pinned, budget=budget, max_rows=max_rows,
                  max_eval_users=max_eval_users, on_trial=on_trial, should_cancel=should_cancel)
    with warnings.catch_warnings():
        # A starting point may lie outside the drawn ranges (a champion's, or the defaults).
        warnings.filterwarnings("ignore", "Fixed parameter", UserWarning)
        run.trials_phase()
    config = run.confirmed()
    return SearchResult(config, run.progress(), tuple(run.trials))


class _Search:
    """One search's state: the study, the trials so far, the clock."""

    def __init__(self, train: Interactions, *, starts: Sequence[TrainConfig],
                 pinned: Collection[str], budget: Budget, max_rows: int, max_eval_users: int,
                 on_trial: Callable[[Trial, Progress], None] | None,
                 should_cancel: Callable[[], bool] | None) -> None:
        self.first = starts[0]
        self.starting_points = list(starts)
        self.budget = budget
        self.clock = time.monotonic()
        self.seconds = 0.0  # the time budget, once the first trial has run
        self.train = train
        self.max_rows = max_rows
        self.max_eval_users = max_eval_users
        self.on_trial = on_trial
        self.should_cancel = should_cancel
        self.data = SearchData.carve(train, seed=self.first.seed, max_rows=max_rows,
                                     max_eval_users=max_eval_users)
        self.space = {name: scope for name, scope in SEARCH_SPACE.items() if name not in pinned}
        self.study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(
                seed=self.first.seed, n_startup_trials=len(starts) + RANDOM_STARTUP_TRIALS,
                multivariate=True),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                               n_warmup_steps=PRUNER_WARMUP_EPOCHS))
        for number, start in enumerate(starts):
            self.study.enqueue_trial(_params(start, self.space, self.data.fit),
                                     user_attrs={"start": number}, skip_if_exists=True)
        self.trials: list[Trial] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.clock

    def progress(self) -> Progress:
        complete = [t.validation_ndcg for t in self.trials if not t.pruned and t.validation_ndcg]
        first = self.trials[0].validation_ndcg if self.trials else None
        return Progress(
            trials_done=len(self.trials), trials_budget=self.budget.trials,
            trials_pruned=sum(t.pruned for t in self.trials),
            best_validation_ndcg=max(complete, default=0.0),
            first_validation_ndcg=first or 0.0, seconds=self.elapsed(),
            seconds_budget=self.seconds)

    def trials_phase(self) -> None:
        """The first trial (always: the baseline to beat), then the others while the trials'
        share of the budget lasts."""
        if self.budget.trials < 1:
            return
        self.study.optimize(self.objective, n_trials=1)
        self.seconds = self.budget.seconds_after(self.trials[0].seconds)
        left = TRIALS_SHARE * self.seconds - self.elapsed()
        if self.budget.trials > 1 and left > 0:
            self.study.optimize(self.objective, n_trials=self.budget.trials - 1, timeout=left)

    def objective(self, trial: optuna.Trial) -> float:
        config = _config(trial, self.first, self.space, self.data.fit)
        if "start" in trial.user_attrs:  # exactly the starting point, not its round trip
            config = self.starting_points[trial.user_attrs["start"]]
        started = time.monotonic()
        reported: list[tuple[int, float]] = []  # (epoch, validation NDCG@10)

        def on_epoch(epoch: int, epochs: int, model: FactorModel) -> None:
            if epoch % 2 and epoch < epochs:
                return
            reported.append((epoch, evaluate(model, self.data.fit, self.data.validation).ndcg))
            trial.report(reported[-1][1], epoch)
            late = trial.number > 0 and self.elapsed() > TRIALS_SHARE * self.seconds
            if epoch < epochs and (late or trial.should_prune()):
                raise optuna.TrialPruned

        try:
            fit(self.data.fit, config, on_epoch=on_epoch, should_cancel=self.should_cancel)
        except optuna.TrialPruned:
            self._finished(trial.number, config, reported, started, pruned=True)
            raise
        self._finished(trial.number, config, reported, started, pruned=False)
        return reported[-1][1]

    def _finished(self, number: int, config: TrainConfig, reported: list[tuple[int, float]],
                  started: float, *, pruned: bool) -> None:
        epoch, value = reported[-1] if reported else (0, None)
        self.trials.append(Trial(number=number, config=config, validation_ndcg=value,
                                 pruned=pruned, epochs_run=epoch,
                                 seconds=time.monotonic() - started))
        if self.on_trial is not None:
            self.on_trial(self.trials[-1], self.progress())

    def confirmed(self) -> TrainConfig:
        """The finalist with the best mean validation NDCG@10 over fresh splits: the first
        trial and the CONFIRMED_TRIALS best others. As many splits as CONFIRMING_ROWS asks
        and the budget's rest pays for, within CONFIRMING_SPLITS; ties go to the earlier
        trial, so the first starting point wins unless another beats it."""
        complete = [t for t in self.trials if not t.pruned and t.validation_ndcg is not None]
        if not complete or complete[0].number != 0:
            return self.first
        others = sorted(complete[1:], key=lambda t: -(t.validation_ndcg or 0.0))
        finalists = [complete[0], *others[:CONFIRMED_TRIALS]]
        if len(finalists) == 1:
            return self.first
        rows = max(len(self.data.fit), 1)
        affordable = (self.seconds - self.elapsed()) / sum(t.seconds for t in finalists)
        fewest, most = CONFIRMING_SPLITS
        count = max(fewest, min(math.ceil(CONFIRMING_ROWS / rows), most, math.floor(affordable)))
        splits = [SearchData.carve(self.train, seed=self.first.seed + n, max_rows=self.max_rows,
                                   max_eval_users=self.max_eval_users)
                  for n in range(1, count + 1)]
        scores = [np.mean([split.score(t.config, self.should_cancel) for split in splits])
                  for t in finalists]
        return finalists[int(np.argmax(scores))].config


def _params(config: TrainConfig, space: dict[str, SearchRange],
            data: Interactions) -> dict[str, Any]:
    """`config` as the search's parameters (regularisation as a penalty)."""
    params: dict[str, Any] = {name: getattr(config, name) for name in space
                              if name != "regularization"}
    if "regularization" in space:
        params["penalty"] = penalty(config, data)
    return params


def _config(trial: optuna.Trial, first: TrainConfig, space: dict[str, SearchRange],
            data: Interactions) -> TrainConfig:
    """The trial's hyper-parameters: suggested where searched, `first`'s elsewhere."""
    values: dict[str, Any] = {}
    for name, scope in space.items():
        if name == "regularization":
            continue
        if scope.integer:
            values[name] = trial.suggest_int(name, int(scope.low), int(scope.high),
                                             log=scope.log)
        else:
            values[name] = trial.suggest_float(name, scope.low, scope.high, log=scope.log)
    config = dataclasses.replace(first, **values)
    if "regularization" in space:
        scope = space["regularization"]
        wanted = trial.suggest_float("penalty", scope.low, scope.high, log=scope.log)
        base = typical_row(data, config.alpha) ** config.reg_exponent
        config = dataclasses.replace(config, regularization=wanted / base)
    return config


# Configurations that were the best on the data shapes the project measures (README,
# "Hyper-parameter search"): tried right after the starting points, so even a small budget
# covers dense data (ml-100k's optimum), sparse data (high confidence, weaker scaling) and
# very sparse data (a few items per user: very high confidence, one strong fixed penalty).
PORTFOLIO: tuple[Mapping[str, float], ...] = (
    {"factors": 64, "epochs": 8, "alpha": 2.5, "reg_exponent": 1.0, "regularization": 0.02},
    {"factors": 40, "epochs": 9, "alpha": 13.0, "reg_exponent": 0.85, "regularization": 0.13},
    {"factors": 64, "epochs": 15, "alpha": 100.0, "reg_exponent": 0.0, "regularization": 400.0},
)


def starting_points(defaults: TrainConfig, *, champion: Mapping[str, float],
                    pinned: Collection[str]) -> list[TrainConfig]:
    """The champion's searched hyper-parameters (when its version records them), the
    defaults, then the portfolio; each keeps the pinned values and everything not searched
    (seed, threads) from `defaults`."""

    def based(values: Mapping[str, float]) -> TrainConfig:
        kept: dict[str, Any] = {name: _typed(name, value) for name, value in values.items()
                                if name in SEARCH_SPACE and name not in pinned}
        return dataclasses.replace(defaults, **kept)

    starts = [based(champion)] if champion else []
    starts += [defaults, *(based(values) for values in PORTFOLIO)]
    unique: list[TrainConfig] = []
    for start in starts:
        if start not in unique:
            unique.append(start)
    return unique


def _typed(name: str, value: float) -> int | float:
    return round(value) if SEARCH_SPACE[name].integer else float(value)


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """The trainer's search settings: `trials`, a time budget of `trial_multiple` times the
    first trial's duration (at most `max_seconds`), trials fit at most `max_rows`."""

    trials: int
    trial_multiple: float
    max_seconds: float
    max_rows: int

    def budget(self, *, trials: int | None, seconds: float | None) -> Budget:
        """A job's budget: its request's values where it has them, else these."""
        return Budget(trials=self.trials if trials is None else trials, seconds=seconds,
                      trial_multiple=self.trial_multiple, max_seconds=self.max_seconds)
