"""The project's exceptions. Each knows its gRPC status; one interceptor maps them.

Core modules raise these (they never import grpc); the error interceptor turns them into
statuses, so a servicer never maps errors by hand.
"""

from __future__ import annotations

from google.protobuf.message import Message
from grpc import StatusCode


class RecsysError(Exception):
    """Base of every expected failure; `code` is the gRPC status it maps to."""

    code: StatusCode = StatusCode.INTERNAL
    #: False when resending the same request would repeat work already done; the interceptor
    #: then tells clients' transparent gRPC retries to stop.
    retryable: bool = True

    def __init__(self, message: str, *, details: Message | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: Optional protobuf message sent as a google.rpc.Status detail.
        self.details = details


class InvalidArgument(RecsysError):
    """Bad input; the message names the field."""

    code = StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str, *, details: Message | None = None) -> None:
        super().__init__(f"{field}: {reason}", details=details)
        self.field = field
        self.reason = reason


class NotFound(RecsysError):
    code = StatusCode.NOT_FOUND


class AlreadyExists(RecsysError):
    code = StatusCode.ALREADY_EXISTS


class FailedPrecondition(RecsysError):
    code = StatusCode.FAILED_PRECONDITION


class PermissionDenied(RecsysError):
    """The caller is known (its client certificate) but may not call this method."""

    code = StatusCode.PERMISSION_DENIED


class Unavailable(RecsysError):
    """A dependency is down; the call is safe to retry unless `retryable` is False (part of
    it was done, e.g. some events were published)."""

    code = StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, details: Message | None = None,
                 retryable: bool = True) -> None:
        super().__init__(message, details=details)
        self.retryable = retryable


class DeadlineExceeded(RecsysError):
    code = StatusCode.DEADLINE_EXCEEDED
