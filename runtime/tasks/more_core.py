"""The core tasks added for Kestra compatibility, round two (issue 17), one module
per family; :func:`runtime.flow.registry.default_registry` registers them."""

from __future__ import annotations

from runtime.flow.for_each_item import ForEachItem
from runtime.flow.loop_until import LoopUntil
from runtime.flow.model import Task
from runtime.tasks.execution_tasks import EXECUTION_TASKS
from runtime.tasks.misc_tasks import MISC_TASKS
from runtime.tasks.namespace_files import NAMESPACE_TASKS
from runtime.tasks.storage_tasks import STORAGE_TASKS

MORE_CORE_TASKS: tuple[type[Task], ...] = (
    *STORAGE_TASKS,
    *EXECUTION_TASKS,
    *MISC_TASKS,
    *NAMESPACE_TASKS,
    ForEachItem,
    LoopUntil,
)
