"""`recsys train` and `recsys models` against a real trainer that holds a dataset."""

from __future__ import annotations

import asyncio

import pytest

from services.cli import __main__ as cli
from tests.support.trainer_server import Trainer

pytestmark = pytest.mark.integration


async def test_the_cli_trains_with_a_progress_bar_lists_and_promotes(
    trainer: Trainer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", f"127.0.0.1:{trainer.running.port}"]
    code = await asyncio.to_thread(cli.main, ["train", *target, "--factors", "8",
                                              "--epochs", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    # The progress, fed by WatchTrainingJob: the search's trials, then the epochs.
    assert "searching: 1/" in err and "training: 3/3" in err
    assert ": succeeded" in out and "held-out: NDCG@10" in out

    assert await asyncio.to_thread(cli.main, ["models", "list", *target]) == 0
    out, _ = capsys.readouterr()
    assert "champion" in out and out.count("\n") >= 2  # the heading and a version at least

    assert await asyncio.to_thread(cli.main, ["models", "promote", "999", *target]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("recsys models: error: NOT_FOUND")
