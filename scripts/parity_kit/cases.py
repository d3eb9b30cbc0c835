"""
The operator table: each resumable operator, the stock class it replaces, the upstream test module,
and the rule that picks the tests exercising it.

**The counting rule:** a test counts for an operator when it is in that operator's upstream module
and its class is named ``Test<StockClass>``, optionally followed by a CamelCase suffix
(``TestGlueJobOperatorDurableExecution``, ``TestEmrContainerOperatorOpenLineageInjection``); a
test function outside a class counts when its name contains the stock class's snake_case name. Other
classes in the same module (``TestBatchCreateComputeEnvironmentOperator``, ``TestEcsBaseOperator``)
test other operators and are not run.

An operator whose resumable class does not import (a module another change has not added yet) is
skipped with a printed reason, so new operators join the table by one line.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cached_property

__all__ = ["CASES", "OperatorCase", "load_class"]


@dataclass(frozen=True)
class OperatorCase:
    """One resumable operator and the stock operator it replaces in the upstream tests."""

    #: ``module:Class`` of the resumable operator.
    ours: str
    #: ``module:Class`` of the stock operator; the module attribute is what gets replaced.
    stock: str
    #: ``amazon`` or ``databricks``: which sdist holds the tests.
    provider: str
    #: The upstream test module, relative to the sdist's ``tests/`` directory.
    module: str

    @property
    def stock_name(self) -> str:
        return self.stock.partition(":")[2]

    @property
    def name(self) -> str:
        return self.ours.partition(":")[2]

    @cached_property
    def _class_rule(self) -> re.Pattern[str]:
        return re.compile(rf"Test{self.stock_name}(?:[A-Z][A-Za-z0-9]*)?")

    @cached_property
    def _function_rule(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.stock_name).lower()

    def owns(self, module: str, cls: str | None, function: str) -> bool:
        """Whether the test ``module::cls::function`` exercises this operator (the counting rule)."""
        if module != self.module:
            return False
        if cls is not None:
            return self._class_rule.fullmatch(cls) is not None
        return self._function_rule in function


_AWS = "unit/amazon/aws/operators"
_AWS_OPS = "airflow.providers.amazon.aws.operators"
_OURS = "airflow_resumable.providers.amazon"

CASES: tuple[OperatorCase, ...] = (
    OperatorCase(f"{_OURS}.batch:ResumableBatchOperator", f"{_AWS_OPS}.batch:BatchOperator",
                 "amazon", f"{_AWS}/test_batch.py"),
    OperatorCase(f"{_OURS}.ecs:ResumableEcsRunTaskOperator", f"{_AWS_OPS}.ecs:EcsRunTaskOperator",
                 "amazon", f"{_AWS}/test_ecs.py"),
    OperatorCase(f"{_OURS}.emr:ResumableEmrAddStepsOperator", f"{_AWS_OPS}.emr:EmrAddStepsOperator",
                 "amazon", f"{_AWS}/test_emr_add_steps.py"),
    OperatorCase(f"{_OURS}.emr:ResumableEmrContainerOperator", f"{_AWS_OPS}.emr:EmrContainerOperator",
                 "amazon", f"{_AWS}/test_emr_containers.py"),
    OperatorCase(f"{_OURS}.emr:ResumableEmrServerlessStartJobOperator",
                 f"{_AWS_OPS}.emr:EmrServerlessStartJobOperator", "amazon", f"{_AWS}/test_emr_serverless.py"),
    OperatorCase(f"{_OURS}.glue:ResumableGlueJobOperator", f"{_AWS_OPS}.glue:GlueJobOperator",
                 "amazon", f"{_AWS}/test_glue.py"),
    OperatorCase(f"{_OURS}.sagemaker:ResumableSageMakerProcessingOperator",
                 f"{_AWS_OPS}.sagemaker:SageMakerProcessingOperator", "amazon",
                 f"{_AWS}/test_sagemaker_processing.py"),
    OperatorCase(f"{_OURS}.sagemaker:ResumableSageMakerTrainingOperator",
                 f"{_AWS_OPS}.sagemaker:SageMakerTrainingOperator", "amazon",
                 f"{_AWS}/test_sagemaker_training.py"),
    OperatorCase(f"{_OURS}.step_function:ResumableStepFunctionStartExecutionOperator",
                 f"{_AWS_OPS}.step_function:StepFunctionStartExecutionOperator", "amazon",
                 f"{_AWS}/test_step_function.py"),
    OperatorCase(f"{_OURS}.athena:ResumableAthenaOperator", f"{_AWS_OPS}.athena:AthenaOperator",
                 "amazon", f"{_AWS}/test_athena.py"),
    OperatorCase(f"{_OURS}.redshift_data:ResumableRedshiftDataOperator",
                 f"{_AWS_OPS}.redshift_data:RedshiftDataOperator", "amazon", f"{_AWS}/test_redshift_data.py"),
    OperatorCase("airflow_resumable.providers.databricks.operators:ResumableDatabricksSubmitRunOperator",
                 "airflow.providers.databricks.operators.databricks:DatabricksSubmitRunOperator",
                 "databricks", "unit/databricks/operators/test_databricks.py"),
    OperatorCase("airflow_resumable.providers.databricks.operators:ResumableDatabricksRunNowOperator",
                 "airflow.providers.databricks.operators.databricks:DatabricksRunNowOperator",
                 "databricks", "unit/databricks/operators/test_databricks.py"),
)  # fmt: skip


def load_class(path: str) -> type:
    """The class at ``module:Class``; ImportError or AttributeError when it does not exist (yet)."""
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not isinstance(cls, type):
        raise TypeError(f"{path} is not a class")
    return cls
