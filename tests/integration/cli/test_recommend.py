"""`recsys recommend`, `similar` and `model-info` against a real recommender."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.cli.__main__ import main as recsys
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish
from tests.support.recommender_replica import ReplicaFactory

pytestmark = pytest.mark.integration


async def test_recsys_commands(replica: ReplicaFactory, servers: dict[str, str], model_name: str,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version = publish(servers["mlflow_tracking_uri"], model_name, small_artifact(), tmp_path)
    async with replica(**servers) as r:
        await r.wait_for_version(version)
        capsys.readouterr()  # MLflow's own messages from publishing

        async def run(*argv: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(recsys, [*argv, "--target", r.target])
            out, err = capsys.readouterr()
            return code, out, err

        code, out, _ = await run("recommend", "u1", "-k", "3")
        assert code == 0
        assert f"model version {version}, strategy personalized" in out
        assert len(out.splitlines()) == 5  # heading, column names, 3 items
        code, out, _ = await run("similar", "i4", "-k", "2")
        assert (code, len(out.splitlines())) == (0, 4)
        code, out, _ = await run("model-info")
        assert code == 0
        assert f"{model_name} version {version} (alias champion)" in out
        assert "60 users, 120 items, 8 factors" in out
        assert "scoring:     top lists ranked at load, else exact (every item)" in out
        code, _, err = await run("similar", "nope")
        assert code == 1
        assert err.startswith("recsys similar: error: NOT_FOUND: ")
