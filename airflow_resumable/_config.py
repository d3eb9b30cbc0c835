"""
The ``[resumable]`` configuration section: deployment-wide defaults for the stop policy.

Operator arguments override these. Set them in ``airflow.cfg`` or as environment variables
(``AIRFLOW__RESUMABLE__MAX_RESUMES=5``). Option names are public: never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECTION = "resumable"


@dataclass(frozen=True)
class Option:
    """One option: its type (``integer``, ``float``, ``boolean``, ``string``), default and description."""

    type: str
    default: Any
    description: str
    version_added: str = "0.1.0"
    #: False for a deployment-wide setting that no operator argument overrides.
    per_operator: bool = True


OPTIONS: dict[str, Option] = {
    "resume_delay_seconds": Option(
        "float", 15.0, "Seconds after a worker-shutdown checkpoint before the task resumes."
    ),
    "max_resumes": Option(
        "integer", 3, "Consecutive checkpoints allowed per remote job; the next shutdown fails the task."
    ),
    "cancel_on_user_stop": Option(
        "boolean",
        True,
        "Cancel the remote job when a user marks the task failed or success, or fails or deletes "
        "its DAG run.",
    ),
    "cancel_on_timeout": Option("boolean", True, "Cancel the remote job when execution_timeout is reached."),
    "cancel_on_failure": Option(
        "boolean", True, "Cancel a possibly active remote job when the task fails for good."
    ),
    "cancel_on_spec_change": Option(
        "boolean",
        True,
        "Cancel a still-active job of an earlier generation when a clear re-runs the task with a "
        "changed job spec, before the new spec is submitted.",
        "0.2.0",
    ),
    "keep_ledger": Option(
        "boolean",
        True,
        "Keep a copy of each in-flight job's record in an Airflow Variable (airflow_resumable.ledger.*), "
        "so that a clear that deletes the task state store cannot cause a second job.",
        "0.2.0",
    ),
    "custodian_interval_seconds": Option(
        "float",
        10.0,
        "Seconds between the scheduler's sweeps of the ledger of jobs in flight: a job whose task "
        "instance is finished or gone (and that no worker or trigger polls) is cancelled. 0 turns "
        "the periodic sweep off; user stops are still handled at once.",
        "0.2.0",
        per_operator=False,
    ),
    "custodian_give_up_seconds": Option(
        "float",
        3600.0,
        "Seconds after its first failed cancel that the custodian gives up on a stopped task's job "
        "(retrying with a backoff of 5 s doubling to 300 s until then) and flags it on the jobs page.",
        "0.3.0",
        per_operator=False,
    ),
    "custodian_call_timeout_seconds": Option(
        "float",
        30.0,
        "Deadline of each cloud call the custodian makes to cancel a job (1 to 600); a call past it "
        "counts as a failed cancel and no longer holds up other cancels.",
        "0.3.0",
        per_operator=False,
    ),
    "custodian_parallel_cancels": Option(
        "integer",
        8,
        "Cancels the custodian runs at once, each connection's one at a time (1 to 64).",
        "0.3.0",
        per_operator=False,
    ),
    "record_retention_days": Option(
        "integer",
        30,
        "Days a record stays in task_state_store after its job ended (completed or cancelled), "
        "until airflow state-store clean removes it; a record of a job that may still run never "
        "expires. 0 keeps ended records for good.",
        "0.3.0",
        per_operator=False,
    ),
    "visibility_window_seconds": Option(
        "string",
        "",
        "Seconds after its submission during which a job the service does not find is taken as not "
        "yet visible (eventual consistency), not as expired: status reads and lookups keep trying, "
        "and nothing is resubmitted. A number for every service, or a JSON object by service "
        "(keys: databricks, batch, emr_steps, emr_serverless, emr_containers, ecs, glue, "
        'sagemaker, step_functions), e.g. {"batch": 120}; empty: each operator\'s documented window.',
        "0.4.0",
    ),
    "throttle_patience_seconds": Option(
        "float",
        600.0,
        "Seconds a cloud call keeps being retried while the service throttles it (backoff 1 s "
        "doubling to 30 s); throttled calls do not count against cloud_retry's attempts.",
        "0.4.0",
    ),
    "stop_classification_timeout": Option(
        "float", 3.0, "Seconds to wait for the API server's answer after a stop signal."
    ),
}


def setting(name: str) -> Any:
    """The configured value of option ``name`` of ``[resumable]``, or its built-in default."""
    from airflow.sdk.configuration import conf

    option = OPTIONS[name]
    getter = {
        "integer": conf.getint,
        "float": conf.getfloat,
        "boolean": conf.getboolean,
        "string": conf.get,
    }[option.type]
    return getter(SECTION, name, fallback=option.default)


def default_text(option: Option) -> str:
    """The default as Airflow's configuration parser takes it: a string (``True``, ``15.0``, ``3``)."""
    return str(option.default)


def provider_config() -> dict[str, Any]:
    """
    The ``config`` entry of the provider info, generated from :data:`OPTIONS`.

    Airflow's parser needs every ``default`` as a string, and prints it as the option's value
    (``airflow config list --section resumable --show-values``; Airflow 3.3 hides values unless
    asked). The description says the default as well, for ``--include-descriptions`` without
    ``--show-values``, and whether an operator argument overrides it; ``example`` is left out,
    since it would only repeat the default.
    """
    return {
        SECTION: {
            "description": "Defaults of airflow_resumable's operators; operator arguments override them.",
            "options": {
                name: {
                    "description": f"{option.description} Default: {default_text(option)}."
                    + (
                        f" Operator argument: {name.removesuffix('_seconds')}."
                        if option.per_operator
                        else " Deployment-wide (no operator argument)."
                    ),
                    "version_added": option.version_added,
                    "type": option.type,
                    "example": None,
                    "default": default_text(option),
                }
                for name, option in OPTIONS.items()
            },
        }
    }
