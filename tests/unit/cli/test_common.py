"""The CLI's shared target and error handling."""

from __future__ import annotations

import argparse

import grpc
import pytest

from services.cli.__main__ import build_parser, main
from services.cli.common import INGEST, RECOMMENDER, TRAINER, guarded


@pytest.mark.parametrize("command", [["ingest", "synthetic", "--users", "1", "--items", "1",
                                      "--events", "1"], ["models", "list"], ["model-info"]])
def test_every_command_has_a_target_apart_from_the_services_settings(
        command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for target in (INGEST, TRAINER, RECOMMENDER):
        assert target.env.startswith("RECSYS_CLI_")
        monkeypatch.setenv(target.env, f"{target.service}:1")
    assert build_parser().parse_args(command).target.endswith(":1")


class _Failed(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND

    def details(self) -> str:
        return "user_id 'x' is unknown"


def _raise(error: Exception) -> int:
    raise error


def test_a_failed_call_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    run = guarded(lambda args: _raise(_Failed()))
    assert run(argparse.Namespace(command="recommend")) == 1
    assert capsys.readouterr().err == "recsys recommend: error: NOT_FOUND: user_id 'x' is unknown\n"


def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    run = guarded(lambda args: _raise(ValueError("no such column 'ts'")),
                  input_errors=(ValueError,))
    assert run(argparse.Namespace(command="ingest")) == 2
    assert "no such column 'ts'" in capsys.readouterr().err


def test_an_unreachable_service_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model-info", "--target", "127.0.0.1:1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
