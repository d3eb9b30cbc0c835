"""What the four AWS operators share: MRO, transient errors, the submit client, argument checks."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from airflow_resumable._stopping import StopHandlingMixin
from airflow_resumable.exceptions import InvalidJobSpecError
from airflow_resumable.mixin import ResumableJobMixin
from airflow_resumable.providers.amazon import (
    ResumableBatchOperator,
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
)
from airflow_resumable.providers.amazon.common import (
    is_transient_aws_error,
    no_retry_client,
    require_mapping,
    require_text,
    says_not_found,
)

OPERATORS = [
    ResumableBatchOperator,
    ResumableEmrAddStepsOperator,
    ResumableEmrContainerOperator,
    ResumableEmrServerlessStartJobOperator,
]


def client_error(code: str, status: int) -> ClientError:
    """A botocore ClientError as a service answer would raise it."""
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


class TestDropIn:
    """Each operator is the stock one with our mixin first in the MRO."""

    @pytest.mark.parametrize("operator_class", OPERATORS)
    def test_mixin_comes_first(self, operator_class: type) -> None:
        """on_kill only records the signal; execute and submit_job are ours; the stock class is a base."""
        mro = operator_class.__mro__
        stock = operator_class.__name__.removeprefix("Resumable")
        stock_class = next(cls for cls in mro if cls.__name__ == stock)
        assert mro.index(ResumableJobMixin) < mro.index(stock_class)
        assert operator_class.on_kill is StopHandlingMixin.on_kill
        assert operator_class.submit_job is not stock_class.__dict__.get("submit_job")

    @pytest.mark.parametrize("operator_class", OPERATORS)
    def test_distinct_external_id_keys(self, operator_class: type) -> None:
        """Every operator names its own key (never the mixin's default)."""
        assert operator_class.external_id_key != ResumableJobMixin.external_id_key

    def test_idempotency_flags(self) -> None:
        """Only the EMR job runs deduplicate on a token; Batch and steps use find_job."""
        assert ResumableEmrServerlessStartJobOperator.submission_is_idempotent
        assert ResumableEmrContainerOperator.submission_is_idempotent
        assert not ResumableBatchOperator.submission_is_idempotent
        assert not ResumableEmrAddStepsOperator.submission_is_idempotent

    def test_poll_interval_follows_the_stock_argument(self) -> None:
        """The stock interval arguments drive the resumable poll loop."""
        batch = ResumableBatchOperator(
            task_id="b", job_name="n", job_queue="q", job_definition="d", poll_interval=7
        )
        steps = ResumableEmrAddStepsOperator(task_id="s", job_flow_id="j-1", steps=[], waiter_delay=9)
        assert (batch.resumable_poll_interval, steps.resumable_poll_interval) == (7.0, 9.0)


class TestTransientErrors:
    """Throttling, 429, 5xx and connection errors are worth another try; client errors are not."""

    @pytest.mark.parametrize(
        ("error", "transient"),
        [
            (client_error("ThrottlingException", 400), True),
            (client_error("TooManyRequestsException", 429), True),
            (client_error("RequestLimitExceeded", 400), True),
            (client_error("SomethingElse", 429), True),
            (client_error("InternalServerException", 500), True),
            (client_error("ServiceUnavailable", 503), True),
            (client_error("ValidationException", 400), False),
            (client_error("ResourceNotFoundException", 404), False),
            (ConnectTimeoutError(endpoint_url="http://x"), True),
            (ReadTimeoutError(endpoint_url="http://x"), True),
            (KeyError("jobId"), False),
        ],
    )
    def test_classification(self, error: BaseException, transient: bool) -> None:
        """is_transient_aws_error answers as botocore's standard retry mode would."""
        assert is_transient_aws_error(error) is transient


class TestSaysNotFound:
    """A code the service also answers for other causes counts as not found only when it says so."""

    @pytest.mark.parametrize(
        ("code", "message", "gone"),
        [
            ("InvalidRequestException", "QueryExecution q-1 was not found", True),
            ("InvalidRequestException", "Indicates that something is wrong with the input", False),
            ("ValidationException", "Requested resource not found.", True),
            ("ValidationException", "Could not find training job 'arn:...:training-job/x'.", True),
            ("ValidationException", "1 validation error detected: Value at 'trainingJobName'", False),
            ("ResourceNotFoundException", "whatever it says", True),
            ("AccessDeniedException", "Job run jr-1 not found", False),
        ],
    )
    def test_message_decides_for_a_shared_code(self, code: str, message: str, gone: bool) -> None:
        """``by_code`` codes mean not found; ``codes`` need the words; other codes never count."""
        error = ClientError({"Error": {"Code": code, "Message": message}}, "Describe")
        codes = ("InvalidRequestException", "ValidationException")
        assert says_not_found(error, codes, by_code=("ResourceNotFoundException",)) is gone

    def test_not_a_client_error(self) -> None:
        """Anything but a ClientError is not a not-found answer."""
        assert says_not_found(KeyError("not found"), ("ValidationException",)) is False


class TestSubmitClient:
    """The submit client of Batch and steps does not retry."""

    def test_one_attempt_over_the_connection_config(self) -> None:
        """total_max_attempts=1 is merged over the connection's config (proxies etc. kept)."""
        from botocore.config import Config

        class Hook:
            config = Config(connect_timeout=7, retries={"mode": "adaptive", "max_attempts": 9})

            def get_client_type(self, config: Config) -> Config:
                return config

        merged: Any = no_retry_client(Hook())
        assert merged.connect_timeout == 7
        assert merged.retries == {"mode": "standard", "total_max_attempts": 1}


class TestArgumentChecks:
    """The helpers name the argument and the service."""

    def test_require_text(self) -> None:
        """Blank strings and non-strings are refused."""
        assert require_text("q", "job_queue", "AWS Batch") == "q"
        for value in ("", "  ", None, 3):
            with pytest.raises(InvalidJobSpecError, match="AWS Batch: argument 'job_queue'"):
                require_text(value, "job_queue", "AWS Batch")

    def test_require_mapping(self) -> None:
        """None is fine when optional; a required mapping must not be empty."""
        assert require_mapping(None, "tags", "X") is None
        with pytest.raises(InvalidJobSpecError, match="non-empty dict"):
            require_mapping({}, "job_driver", "X", optional=False)
        with pytest.raises(InvalidJobSpecError, match="got a list"):
            require_mapping([], "tags", "X")


class TestPublicHooks:
    """AwsJobMixin's hooks a maintainer writes: public names, and each says so when left out."""

    @pytest.mark.parametrize(
        ("call", "named"),
        [
            (lambda op: op.job_request(), r"job_request\(\): return the validated, rendered request"),
            (lambda op: op.adopt_job("j-1", {}), r"adopt_job\(external_id, context\)"),
            (lambda op: op.job_trigger("j-1", {}), r"job_trigger\(external_id, resumable\)"),
            (lambda op: op.event_external_id({}), r"event_external_id\(event\)"),
        ],
    )
    def test_a_required_hook_left_out_names_itself(self, call: Any, named: str) -> None:
        """The NotImplementedError names the class, the hook and where the hooks are described."""
        from airflow_resumable.providers.amazon.common import AwsJobMixin

        class Unfinished:  # the hooks as a subclass that left them out has them
            job_request = AwsJobMixin.job_request
            adopt_job = AwsJobMixin.adopt_job
            job_trigger = AwsJobMixin.job_trigger
            event_external_id = AwsJobMixin.event_external_id

        with pytest.raises(
            NotImplementedError, match=rf"Unfinished must implement {named}.*docs/maintainers.md"
        ):
            call(Unfinished())

    def test_a_hook_under_its_private_04_name_still_works_with_a_warning(self) -> None:
        """``_adopt`` written for 0.4 is the ``adopt_job`` hook, with a DeprecationWarning naming both."""
        from airflow_resumable.providers.amazon.common import AwsJobMixin

        adopted: list[Any] = []
        with pytest.warns(
            DeprecationWarning, match=r"Written04._adopt is called adopt_job since airflow-resumable 0.5.0"
        ):

            class Written04(AwsJobMixin):
                def _adopt(self, external_id: Any, context: Any) -> None:
                    adopted.append(external_id)

        Written04.adopt_job(None, "j-1", {})  # type: ignore[arg-type]
        assert adopted == ["j-1"]
