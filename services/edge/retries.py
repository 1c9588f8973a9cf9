"""Which calls Envoy retries, on another replica, and on which failures.

Only calls that do no harm when they run twice: the recommender's three reads, and
CreateInteraction, whose event id is derived from the event's content, so that a second
delivery is the same event (the trainer's dataset keeps one row per id). A batch or a stream
is not retried: after a partial publish ingest says which events were not published, and a
blind resend would publish the others again. The trainer's calls start, cancel and promote:
never retried.

The failures are those of a replica that is stopping or gone: it refuses the connection or the
stream, resets it, answers UNAVAILABLE, or cancels a call that reached it as it stopped
(before running it). Each retry goes to a host not tried yet for that call.
"""

from __future__ import annotations

from typing import Any

from services.core.names import SERVICE_NAMES
from services.edge.blocks import typed

#: gRPC method paths that are safe to run twice.
IDEMPOTENT = frozenset({
    f"/{SERVICE_NAMES['recommender']}/Recommend",
    f"/{SERVICE_NAMES['recommender']}/SimilarItems",
    f"/{SERVICE_NAMES['recommender']}/GetModelInfo",
    f"/{SERVICE_NAMES['ingest']}/CreateInteraction",
})
RETRY_ON = "connect-failure,refused-stream,reset,unavailable,cancelled"
RETRIES = 3


def retry_policy(service: str) -> dict[str, Any] | None:
    """The retry policy of a service's route (its idempotent methods only), or None."""
    methods = sorted(path for path in IDEMPOTENT if path.startswith(f"/{SERVICE_NAMES[service]}/"))
    if not methods:
        return None
    return {
        "retry_on": RETRY_ON,
        "num_retries": RETRIES,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": typed("envoy.extensions.retry.host.previous_hosts.v3."
                                  "PreviousHostsPredicate")}],
        "host_selection_retry_max_attempts": 5,
        "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
        # The route serves every method of the service: retry only these.
        "retriable_request_headers": [{"name": ":path", "string_match": {"exact": path}}
                                      for path in methods],
    }
