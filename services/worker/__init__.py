"""The worker component, by idea: the receive/run loop and one record per running job
(``worker``), the report group-commit (``reports``), and what a task sees while it
runs (``context``)."""

from services.worker.context import WorkerRunContext, secrets_from_env
from services.worker.reports import Report, ReportWriter
from services.worker.worker import RunningJob, Worker

__all__ = ["Report", "ReportWriter", "RunningJob", "Worker", "WorkerRunContext", "secrets_from_env"]
