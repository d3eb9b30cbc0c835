"""ResumableEmrAddStepsOperator against moto with the lifecycle controller."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_resumable.exceptions import InvalidJobSpecError, JobFailedError, ResumableError
from airflow_resumable.providers.amazon import ResumableEmrAddStepsOperator
from airflow_resumable.providers.amazon._emr_steps import combined_step_state, step_marker
from airflow_resumable.testing.aws import MotoJobDriver, MotoServer, aws_client, provision_emr_cluster
from airflow_resumable.testing.contract import (
    ResumableOperatorContract,
    ScenarioProbe,
    SimulatedWorkerCrash,
    finish_on_first_poll,
)
from tests.providers.amazon.helpers import (
    XComParity,
    allow_botocore_retries,
    context,
    record,
    run_task,
    submit_requests,
    xcoms,
)

STEP_STATES = {
    "PENDING": (True, False),
    "CANCEL_PENDING": (True, False),
    "RUNNING": (True, False),
    "COMPLETED": (False, True),
    "CANCELLED": (False, False),
    "FAILED": (False, False),
    "INTERRUPTED": (False, False),
}


def steps(count: int = 3, marker: str = "", action: str = "CANCEL_AND_WAIT") -> list[dict[str, Any]]:
    """``count`` Spark steps."""
    return [
        {
            "Name": f"step-{index}{marker}",
            "ActionOnFailure": action,
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": ["spark-submit", f"s3://bucket/{index}.py"],
            },
        }
        for index in range(count)
    ]


class StepsDriver(MotoJobDriver):
    """The kit's driver, plus a cluster."""

    def __init__(self, server: MotoServer) -> None:
        super().__init__(server, "emr")
        self.server = server
        self.cluster_id = provision_emr_cluster(server.url)


@pytest.fixture
def cloud(moto: MotoServer) -> StepsDriver:
    """A reset controller with a waiting cluster."""
    return StepsDriver(moto)


def kwargs(cloud: StepsDriver, **extra: Any) -> dict[str, Any]:
    """The operator's own arguments."""
    return {
        "job_flow_id": cloud.cluster_id,
        "steps": steps(),
        "wait_for_completion": True,
        "waiter_delay": 0.001,
        **extra,
    }


class TestResumableEmrAddStepsOperatorContract(XComParity, ResumableOperatorContract):
    """The resumable contract; the spec marker is in the templated step names."""

    operator_class = ResumableEmrAddStepsOperator
    deferrable_kwargs = {"deferrable": True, "waiter_delay": 0.05, "waiter_max_attempts": 1000}
    expected_xcom_keys = frozenset(
        {
            "return_value",
            "job_flow_id",
            "emr_cluster",
            "emr_logs",
            "_link_EmrClusterLink",
            "_link_EmrLogsLink",
        }
    )

    def operator_kwargs(self, cloud: Any, spec_marker: str) -> dict[str, Any]:
        return kwargs(cloud, steps=steps(2, marker=f"-{spec_marker}"))


class TestStockParity:
    """The same XComs as the stock operator: job_flow_id, the two links, the step ids."""

    def test_same_xcoms_as_the_stock_operator(self, cloud: StepsDriver) -> None:
        """Keys and values match except for the step ids."""
        from airflow.providers.amazon.aws.operators.emr import EmrAddStepsOperator

        cloud.server.set_lifecycle("clock", run_duration=0.0, reads_per_state=0)
        arguments = kwargs(cloud, steps=steps(1), waiter_delay=1)
        stock = xcoms(run_task(EmrAddStepsOperator, retries=0, **arguments))
        ours = xcoms(run_task(ResumableEmrAddStepsOperator, retries=0, **arguments))
        assert set(stock) == set(ours)
        assert {k: v for k, v in stock.items() if k != "return_value"} == {
            k: v for k, v in ours.items() if k != "return_value"
        }
        assert len(stock["return_value"]) == len(ours["return_value"]) == 1


class TestStateMapping:
    """Every step state through moto and botocore, and the combined state of several steps."""

    @pytest.mark.parametrize(("state", "expected"), STEP_STATES.items())
    def test_step_state(self, cloud: StepsDriver, state: str, expected: tuple[bool, bool]) -> None:
        """A one-step job has its step's state, classified."""
        emr = aws_client(cloud.server.url, "emr")
        (step_id,) = emr.add_job_flow_steps(JobFlowId=cloud.cluster_id, Steps=steps(1))["StepIds"]
        cloud.server.set_state(step_id, state)
        operator = ResumableEmrAddStepsOperator(task_id="t", **kwargs(cloud))
        operator.prepare_try(context() | {"ti": _PushingTaskInstance()})
        status = operator.get_job_status([step_id], context())
        assert status == state
        assert (operator.is_job_active(status), operator.is_job_succeeded(status)) == expected

    @pytest.mark.parametrize(
        ("states", "combined"),
        [
            (["COMPLETED", "COMPLETED"], "COMPLETED"),
            (["COMPLETED", "RUNNING", "PENDING"], "RUNNING"),
            (["PENDING", "PENDING"], "PENDING"),
            (["COMPLETED", "CANCEL_PENDING"], "CANCEL_PENDING"),
            (["FAILED", "RUNNING"], "RUNNING"),
            (["COMPLETED", "FAILED", "CANCELLED"], "FAILED"),
            (["COMPLETED", "INTERRUPTED"], "INTERRUPTED"),
            (["CANCELLED", "COMPLETED"], "CANCELLED"),
            (["COMPLETED", "SOMETHING_NEW"], "SOMETHING_NEW"),
        ],
    )
    def test_combined_state(self, states: list[str], combined: str) -> None:
        """Done when all completed; active while any step is; else the first step that did not complete."""
        assert combined_step_state(states) == combined

    def test_external_id_is_a_list_of_step_ids(self) -> None:
        """Only a non-empty list of non-blank strings is an id of this operator."""
        operator = ResumableEmrAddStepsOperator(task_id="t", job_flow_id="j-1", steps=steps(1))
        assert operator.is_valid_external_id(["s-1", "s-2"])
        assert not any(operator.is_valid_external_id(v) for v in ([], "s-1", ["s-1", ""], [1], None))


class TestStepMarker:
    """Step names carry the token marker; find_job reads it back."""

    def test_names_carry_the_marker(self, cloud: StepsDriver) -> None:
        """Every step name ends with `` [ar:<key>:<i>/<n>]`` of the record's token."""
        outcome = run_task(
            ResumableEmrAddStepsOperator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud)
        )
        token = record(outcome)["token"]
        (request,) = submit_requests(cloud.server, "AddJobFlowSteps")
        assert [s["Name"] for s in request["Steps"]] == [
            f"step-{i}{step_marker(token, i, 3)}" for i in range(3)
        ]

    def test_long_names_are_cut_to_fit(self, cloud: StepsDriver) -> None:
        """A 256-character name keeps its marker and EMR's length limit."""
        long_steps = steps(1)
        long_steps[0]["Name"] = "x" * 256
        run_task(
            ResumableEmrAddStepsOperator,
            ScenarioProbe(cloud, finish_on_first_poll()),
            **kwargs(cloud, steps=long_steps),
        )
        (request,) = submit_requests(cloud.server, "AddJobFlowSteps")
        name = request["Steps"][0]["Name"]
        assert len(name) == 256 and name.endswith(":1/1]")

    def test_crash_before_persist_finds_the_steps(self, cloud: StepsDriver) -> None:
        """Try 2 lists the cluster's steps, finds them by marker, and adds nothing."""
        probe = ScenarioProbe(cloud, finish_on_first_poll(), crash_after_submit={1})
        outcome = run_task(ResumableEmrAddStepsOperator, probe, **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        assert len(cloud.server.calls("AddJobFlowSteps")) == 1
        assert (
            probe.polled[2] == cloud.submitted_ids()
            and xcoms(outcome)["return_value"] == cloud.submitted_ids()[0]
        )

    def test_partial_marker_set_is_refused(self, cloud: StepsDriver) -> None:
        """Finding 1 of 2 marked steps is an error, never a resubmission."""
        token = "ar-" + "ab" * 20
        aws_client(cloud.server.url, "emr").add_job_flow_steps(
            JobFlowId=cloud.cluster_id, Steps=[{**steps(1)[0], "Name": "a" + step_marker(token, 0, 2)}]
        )
        operator = ResumableEmrAddStepsOperator(task_id="t", **kwargs(cloud))
        operator.prepare_try(context() | {"ti": _PushingTaskInstance()})
        with pytest.raises(ResumableError, match="1 of the 2 steps"):
            operator.find_job(token, context())
        assert operator.find_job("ar-" + "cd" * 20, context()) is None


class TestPartialProgress:
    """A crash after some steps completed: the retry waits only for the rest, adds nothing."""

    def test_reconnect_waits_for_the_remaining_steps(self, cloud: StepsDriver) -> None:
        """Step 1 completed in try 1; try 2 polls the same three ids, which then complete."""

        def on_poll(probe: ScenarioProbe, try_number: int, external_id: Any, index: int) -> None:
            if try_number == 1:
                cloud.server.finish(external_id[0])
                raise SimulatedWorkerCrash("worker died while step 2 ran")
            if index == 0:
                assert cloud.server.job(external_id[0])["state"] == "COMPLETED"
                assert cloud.server.job(external_id[2])["state"] == "PENDING"
            probe.cloud.finish(external_id, succeeded=True)

        probe = ScenarioProbe(cloud, on_poll)
        outcome = run_task(ResumableEmrAddStepsOperator, probe, **kwargs(cloud))
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 2
        (step_ids,) = cloud.submitted_ids()
        assert probe.polled[2] == [step_ids] and probe.submitted[2] == []
        assert len(cloud.server.calls("AddJobFlowSteps")) == 1

    def test_failed_step_is_named(self, cloud: StepsDriver) -> None:
        """The error names the step that failed and its reason."""
        emr = aws_client(cloud.server.url, "emr")
        ids = emr.add_job_flow_steps(JobFlowId=cloud.cluster_id, Steps=steps(3))["StepIds"]
        cloud.server.finish(ids[0])
        cloud.server.finish(ids[1], succeeded=False, reason="Step exited with code 2")
        operator = ResumableEmrAddStepsOperator(task_id="t", **kwargs(cloud))
        operator.prepare_try(context() | {"ti": _PushingTaskInstance()})
        with pytest.raises(
            JobFailedError, match=rf"step {ids[1]} \(step-1\) ended FAILED: Step exited with code 2"
        ):
            operator.poll_until_complete(ids, context())


class TestLostAnswerAndThrottling:
    """AddJobFlowSteps is never re-sent blindly; throttled reads are retried."""

    def test_lost_add_steps_answer(self, cloud: StepsDriver, monkeypatch: pytest.MonkeyPatch) -> None:
        """With botocore retries on, AddJobFlowSteps is sent once; the steps are found by marker."""
        allow_botocore_retries(monkeypatch, cloud.server)
        cloud.server.lose_response("AddJobFlowSteps")
        cloud.server.throttle("ListSteps", 2)
        outcome = run_task(
            ResumableEmrAddStepsOperator, ScenarioProbe(cloud, finish_on_first_poll()), **kwargs(cloud)
        )
        assert outcome.task("job").state == "success" and outcome.task("job").try_number == 1
        assert len(cloud.server.calls("AddJobFlowSteps")) == 1 and len(cloud.submitted_ids()) == 1


class TestClusterAndModes:
    """A cluster by name, and the stock default of not waiting."""

    def test_cluster_by_name(self, cloud: StepsDriver) -> None:
        """job_flow_name resolves to the cluster; its id is pushed as the stock job_flow_id XCom."""
        arguments = {
            **kwargs(cloud, job_flow_name="airflow-resumable", cluster_states=["WAITING", "RUNNING"])
        }
        del arguments["job_flow_id"]
        outcome = run_task(
            ResumableEmrAddStepsOperator, ScenarioProbe(cloud, finish_on_first_poll()), **arguments
        )
        assert outcome.task("job").state == "success"
        assert xcoms(outcome)["job_flow_id"] == cloud.cluster_id

    def test_not_waiting_is_the_stock_default(self, cloud: StepsDriver) -> None:
        """Without wait_for_completion the task ends once the steps exist, and leaves them running."""
        arguments = kwargs(cloud)
        del arguments["wait_for_completion"]
        outcome = run_task(ResumableEmrAddStepsOperator, retries=0, **arguments)
        (step_ids,) = cloud.submitted_ids()
        assert outcome.task("job").state == "success" and xcoms(outcome)["return_value"] == step_ids
        assert cloud.cancelled_ids() == []


class TestInvalidSpec:
    """Invalid steps fail before any AWS call, naming the argument."""

    @pytest.mark.parametrize(
        ("override", "argument"),
        [
            ({"steps": []}, "steps"),
            ({"steps": "not a list"}, "steps"),
            ({"steps": [["Name", "x"]]}, r"steps\[0\]"),
            ({"steps": [{"HadoopJarStep": {"Jar": "x"}}]}, r"steps\[0\]\['Name'\]"),
            ({"steps": [{"Name": "x"}]}, r"steps\[0\]\['HadoopJarStep'\]"),
            ({"job_flow_id": ""}, "job_flow_id"),
        ],
    )
    def test_invalid_argument(self, cloud: StepsDriver, override: dict[str, Any], argument: str) -> None:
        """InvalidJobSpecError names the argument; no AWS call was made."""
        operator = ResumableEmrAddStepsOperator(task_id="t", **{**kwargs(cloud), **override})
        calls = len(cloud.server.ledger())
        with pytest.raises(InvalidJobSpecError, match=argument):
            operator.execute(context())
        assert len(cloud.server.ledger()) == calls

    def test_steps_as_a_string_are_parsed(self, cloud: StepsDriver) -> None:
        """A rendered string (XCom, .json file) is parsed as the stock operator parses it."""
        operator = ResumableEmrAddStepsOperator(task_id="t", **kwargs(cloud, steps=repr(steps(2))))
        assert operator._steps() == steps(2)


class _PushingTaskInstance:
    """A ti that accepts XCom pushes (for calling ``prepare_try`` directly)."""

    dag_id, run_id, task_id, map_index, try_number, max_tries = "dag", "manual__1", "t", -1, 1, 0

    def xcom_push(self, key: str, value: Any) -> None:
        """Ignore the value."""
