"""Failure notification: a failed or crashed nightly or refresh run POSTs a short JSON message to
`notify_url` (off by default) through the flows' on_failure/on_crashed hooks.

The message is {flow, run_id, state, message, started, db}. The URL must be http(s) (the setting
refuses anything else); the POST has a timeout, and a failure to notify is logged, never raised:
it must not hide the run's own failure. A refresh running inside the nightly run leaves the
message to the nightly run, so one failed night sends one message.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from prefect.logging.loggers import flow_run_logger

from pipeline.settings import Settings, load_settings

TIMEOUT_SECONDS = 10.0


def failure_message(flow: Any, flow_run: Any, state: Any, settings: Settings) -> dict[str, Any]:
    """What the receiver gets: which run of which flow ended how, when it started, on which db."""
    return {
        "flow": flow.name,
        "run_id": str(flow_run.id),
        "state": state.name,
        "message": (state.message or "")[:2000],
        "started": flow_run.start_time.isoformat() if flow_run.start_time else None,
        "db": str(settings.db.resolve()),
    }


def post_json(url: str, body: dict[str, Any]) -> int:
    """POST `body` as JSON to an http(s) `url`; returns the HTTP status."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"notify_url {url!r} is not http(s)")
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "tribes-notify"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310 - http(s) only
        return answer.status


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """The on_failure/on_crashed hook: tell `notify_url`, if set, that this run failed."""
    logger = flow_run_logger(flow_run, flow)
    if flow_run.parent_task_run_id is not None:
        return  # a subflow: its parent run fails too and sends the message
    try:
        settings = load_settings(db=flow_run.parameters.get("db"))
        if settings.notify_url is None:
            return
        status = post_json(
            str(settings.notify_url), failure_message(flow, flow_run, state, settings)
        )
        where = settings.notify_url.host  # not the whole URL: it may hold a token
        logger.info("notified %s of the %s run (HTTP %s)", where, state.name, status)
    except Exception as exc:  # never raise: the run's own failure is what matters
        logger.warning("could not notify of the failed run: %s: %s", type(exc).__name__, exc)
