"""`recsys train` starts a training job and shows its progress live; `recsys models` lists
registered versions and promotes one to champion (rollback)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from tqdm import tqdm

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.cli.common import TRAINER, add_json_flag, add_target, guarded, show
from services.core.client import DEFAULT_TIMEOUT_S, channel
from services.trainer.hyperparameters import BOUNDS

_HYPERPARAMETERS: tuple[tuple[str, type, str], ...] = (
    ("factors", int, "latent dimensions"),
    ("epochs", int, "alternating least-squares sweeps"),
    ("regularization", float, "L2 regularisation strength"),
    ("reg_exponent", float, "frequency scaling of the regularisation"),
    ("alpha", float, "confidence scaling (1 + alpha * weight)"),
    ("seed", int, "initialisation seed"),
)
_SEARCHING = trainer_pb2.JOB_PHASE_SEARCHING
_EPOCHS = (trainer_pb2.JOB_PHASE_TRAINING, trainer_pb2.JOB_PHASE_EVALUATING)


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train", help="start a training job and show its progress",
        description="Start a training job on the trainer's dataset and follow it to the end. "
                    "A hyper-parameter given here is pinned; the others are searched on a "
                    "validation split of the training data (or take the trainer's defaults "
                    "with --no-search).")
    add_target(train, TRAINER)
    for name, kind, text in _HYPERPARAMETERS:
        train.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                           help=f"{text}, {BOUNDS[name].rule}")
    search = train.add_mutually_exclusive_group()
    search.add_argument("--trials", type=int,
                        help="hyper-parameter search: trials at most (default: the trainer's)")
    search.add_argument("--no-search", action="store_const", const=0, dest="trials",
                        help="train with the trainer's default hyper-parameters")
    train.add_argument("--search-seconds", type=float,
                       help="hyper-parameter search: time budget in seconds (default: the "
                            "trainer's, which grows with the data)")
    train.add_argument("--skip-wait-for-events", action="store_true",
                       help="train on what the dataset holds now, without waiting for the "
                            "events acknowledged before the job started")
    train.add_argument("--workers", type=int,
                       help="processes that fit the models (default: the trainer's "
                            "RECSYS_TRAINER_WORKERS); more than 1 needs the trainer's snapshot "
                            "store")
    train.add_argument("--no-wait", action="store_true",
                       help="print the job id and return at once")
    train.add_argument("--timeout", type=float, default=3600.0,
                       help="stop following after this many seconds (default %(default)s); "
                            "the job keeps running")
    train.set_defaults(func=guarded(_train))

    models = subparsers.add_parser("models", help="list registered model versions, promote one")
    actions = models.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="registered versions, newest first")
    add_target(listing, TRAINER)
    add_json_flag(listing)
    listing.add_argument("--limit", type=int, default=20, help="1 to 100 (default 20)")
    listing.set_defaults(func=guarded(_list_models))
    promote = actions.add_parser("promote", help="point the champion alias at a version")
    add_target(promote, TRAINER)
    promote.add_argument("version", help="registered version number, e.g. 3")
    promote.set_defaults(func=guarded(_promote))


def _train(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name, _, _ in _HYPERPARAMETERS
                 if getattr(args, name) is not None}
    request = trainer_pb2.StartTrainingJobRequest(
        hyperparameters=trainer_pb2.Hyperparameters(**overrides),
        search=trainer_pb2.SearchBudget(trials=args.trials, seconds=args.search_seconds),
        skip_wait_for_events=args.skip_wait_for_events, workers=args.workers)
    with channel(args.target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        job = stub.StartTrainingJob(request, timeout=DEFAULT_TIMEOUT_S).job
        print(f"training job {job.job_id} started", file=sys.stderr)
        if args.no_wait:
            print(job.job_id)
            return 0
        try:
            job = _follow(stub, job, timeout=args.timeout)
        except KeyboardInterrupt:
            print(f"\nstopped following; job {job.job_id} keeps running", file=sys.stderr)
            return 130
    print(describe_job(job))
    return 0 if job.state == trainer_pb2.JOB_STATE_SUCCEEDED else 1


def _follow(stub: trainer_pb2_grpc.TrainerServiceStub, job: trainer_pb2.TrainingJob, *,
            timeout: float) -> trainer_pb2.TrainingJob:
    """Show progress from the watch stream until the job ends; return its last state.

    A terminal gets a live bar; a log (CI, the local stack's main job) gets one line per
    phase or epoch instead of every redraw.
    """
    stream = stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id),
                                   timeout=timeout)
    if not sys.stderr.isatty():
        shown = None
        for update in stream:
            job = update.job
            label, done, _, _ = _progress(job)
            if (label, done) != shown:
                shown = (label, done)
                print(progress_line(job), file=sys.stderr, flush=True)
        return job
    with tqdm(total=job.epochs, file=sys.stderr, dynamic_ncols=True) as bar:
        for update in stream:
            job = update.job
            label, done, total, detail = _progress(job)
            if label != bar.desc:
                bar.reset(total=total or None)
                bar.set_description(label)
            bar.n = done
            bar.set_postfix_str(detail.strip(" ,"))
    return job


def progress_line(job: trainer_pb2.TrainingJob) -> str:
    """The job's progress in one line, e.g. "searching: 3/40, best validation NDCG@10 ..."."""
    label, done, total, detail = _progress(job)
    counted = f" {done}/{total}" if total else ""
    text = f"{counted}{detail}".lstrip(" ,")
    return f"{label}: {text}" if text else label


def _progress(job: trainer_pb2.TrainingJob) -> tuple[str, int, int, str]:
    """The job's phase as (label, done, total, detail): trials while searching, epochs while
    fitting; total 0 where nothing is counted."""
    label = _phase(job)
    if job.phase == _SEARCHING and job.HasField("search"):
        search = job.search
        return label, search.trials_done, search.trials_budget, (
            f", best validation NDCG@10 {search.best_validation_ndcg:.4f} (first "
            f"{search.first_validation_ndcg:.4f}), {search.trials_pruned} pruned" +
            _eta(job))
    if job.phase in _EPOCHS:
        loss = f", loss {job.loss:.4f}" if job.epoch else ""
        return label, job.epoch, job.epochs, loss + _eta(job)
    if job.events_behind:
        return label, 0, 0, f", {job.events_behind} events behind"
    return label, 0, 0, ""


def _eta(job: trainer_pb2.TrainingJob) -> str:
    return f", eta {job.eta_seconds:.0f}s" if job.eta_seconds else ""


def _phase(job: trainer_pb2.TrainingJob) -> str:
    """The phase's name, or the state's before the job has a phase (queued)."""
    if job.phase == trainer_pb2.JOB_PHASE_UNSPECIFIED:
        return trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    return trainer_pb2.JobPhase.Name(job.phase).removeprefix("JOB_PHASE_").lower()


def describe_job(job: trainer_pb2.TrainingJob) -> str:
    """A few readable lines: outcome, held-out metrics, version and the gate's decision."""
    state = trainer_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    lines = [f"job {job.job_id}: {state}"]
    if job.error:
        lines.append(f"  error: {job.error}")
    if job.HasField("metrics"):
        m = job.metrics
        lines.append(f"  held-out: NDCG@10 {m.ndcg_at_10:.4f}  P@10 {m.precision_at_10:.4f}  "
                     f"R@10 {m.recall_at_10:.4f}  MAP@10 {m.map_at_10:.4f}  "
                     f"({m.users_evaluated} users)")
        if m.popularity_ndcg_at_10:
            lines.append(f"  popularity baseline: NDCG@10 {m.popularity_ndcg_at_10:.4f}; the "
                         f"model is {m.ndcg_at_10 / m.popularity_ndcg_at_10:.2f}x that")
    if job.HasField("search"):
        search = job.search
        lines.append(f"  search: {search.trials_done} trials ({search.trials_pruned} pruned) "
                     f"in {search.seconds:.0f} s, validation NDCG@10 "
                     f"{search.best_validation_ndcg:.4f} (first trial "
                     f"{search.first_validation_ndcg:.4f})")
    if job.HasField("hyperparameters"):
        hp = job.hyperparameters
        lines.append(f"  hyper-parameters: factors {hp.factors}, epochs {hp.epochs}, "
                     f"regularization {hp.regularization:.4g}, reg_exponent "
                     f"{hp.reg_exponent:.3g}, alpha {hp.alpha:.3g}")
    if job.HasField("lineage"):
        lin = job.lineage
        lines.append(f"  data: {lin.row_count} events, {lin.user_count} users, "
                     f"{lin.item_count} items, sha256 {lin.content_hash[:12]}")
    if job.model_version:
        verdict = "promoted to champion" if job.promoted else "not promoted"
        lines.append(f"  model version {job.model_version}: {verdict} ({job.promotion_reason})")
    if job.mlflow_run_id:
        lines.append(f"  MLflow run {job.mlflow_run_id}")
    return "\n".join(lines)


def _list_models(args: argparse.Namespace) -> int:
    with channel(args.target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        reply = stub.ListModelVersions(
            trainer_pb2.ListModelVersionsRequest(page_size=args.limit),
            timeout=DEFAULT_TIMEOUT_S)
    return show(args, reply, _print_versions)


def _print_versions(reply: trainer_pb2.ListModelVersionsResponse) -> None:
    versions = reply.versions
    if not versions:
        print("no registered versions yet")
        return
    print(f"{'VERSION':>7}  {'ALIASES':<10} {'NDCG@10':>7} {'P@10':>6} {'EVENTS':>9}  "
          f"{'CREATED (UTC)':<19}  RUN")
    for v in versions:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at.seconds))
        print(f"{v.version:>7}  {','.join(v.aliases) or '-':<10} {v.metrics.ndcg_at_10:>7.4f} "
              f"{v.metrics.precision_at_10:>6.4f} {v.lineage.row_count:>9}  {created:<19}  "
              f"{v.mlflow_run_id}")


def _promote(args: argparse.Namespace) -> int:
    with channel(args.target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        response = stub.PromoteModelVersion(
            trainer_pb2.PromoteModelVersionRequest(version=args.version),
            timeout=DEFAULT_TIMEOUT_S)
    previous = response.previous_version or "none"
    print(f"champion is now version {response.model_version.version} (was {previous})")
    return 0
