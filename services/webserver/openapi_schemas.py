"""The component schemas of the OpenAPI document (``openapi.py``): the shapes of
the API's JSON bodies, with Kestra's field names."""

from __future__ import annotations

from typing import Any

from runtime.flow.states import StateType

STATES = [s.value for s in StateType]


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": kind, "nullable": True}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["message", "status"],
        "properties": {
            "message": {"type": "string"},
            "status": {"type": "integer"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    },
    "State": {
        "type": "object",
        "required": ["current", "histories"],
        "properties": {
            "current": {"type": "string", "enum": STATES},
            "histories": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["state", "date"],
                    "properties": {
                        "state": {"type": "string", "enum": STATES},
                        "date": {"type": "string", "format": "date-time"},
                    },
                },
            },
        },
    },
    "Execution": {
        "type": "object",
        "required": ["id", "namespace", "flowId", "state", "taskRunList", "inputs"],
        "properties": {
            "id": {"type": "string"},
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
            "flowRevision": _nullable("integer"),
            "state": ref("State"),
            "taskRunList": {"type": "array", "items": {"type": "object"}},
            "inputs": {"type": "object"},
            "outputs": _nullable("object"),
            "labels": {"type": "array", "items": ref("Label")},
            "trigger": _nullable("object"),
        },
    },
    "Label": {
        "type": "object",
        "required": ["key", "value"],
        "properties": {"key": {"type": "string", "minLength": 1}, "value": {"type": "string"}},
    },
    "ReplayResult": {
        "type": "object",
        "required": ["id", "namespace", "flowId", "originalId"],
        "properties": {
            "id": {"type": "string"},
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
            "originalId": {"type": "string"},
        },
    },
    "Flow": {
        "type": "object",
        "required": ["id", "namespace", "revision", "deleted", "disabled"],
        "properties": {
            "id": {"type": "string"},
            "namespace": {"type": "string"},
            "revision": {"type": "integer"},
            "deleted": {"type": "boolean"},
            "disabled": {"type": "boolean"},
            "source": {"type": "string"},
            "tasks": {"type": "array"},
        },
    },
    "FlowRef": {
        "type": "object",
        "required": ["namespace", "id"],
        "properties": {"namespace": {"type": "string"}, "id": {"type": "string"}},
    },
    "Count": {
        "type": "object",
        "required": ["count"],
        "properties": {"count": {"type": "integer"}},
    },
    "Validation": {
        "type": "object",
        "required": ["index", "problems"],
        "properties": {
            "index": {"type": "integer"},
            "flow": _nullable("string"),
            "namespace": _nullable("string"),
            "constraints": _nullable("string"),
            "problems": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["path", "message", "line", "column"],
                    "properties": {
                        "path": {"type": "string"},
                        "message": {"type": "string"},
                        "hint": _nullable("string"),
                        "line": {"type": "integer"},
                        "column": {"type": "integer"},
                    },
                },
            },
        },
    },
    "LogEntry": {
        "type": "object",
        "required": ["executionId", "namespace", "flowId", "timestamp", "level", "message"],
        "properties": {
            "executionId": {"type": "string"},
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
            "taskId": _nullable("string"),
            "taskRunId": _nullable("string"),
            "attemptNumber": _nullable("integer"),
            "timestamp": {"type": "string", "format": "date-time"},
            "level": {"type": "string"},
            "message": {"type": "string"},
            "index": {"type": "integer"},
        },
    },
    "Trigger": {
        "type": "object",
        "required": ["abstractTrigger", "triggerContext"],
        "properties": {
            "abstractTrigger": {"type": "object"},
            "triggerContext": {
                "type": "object",
                "required": ["namespace", "flowId", "triggerId", "disabled"],
                "properties": {
                    "namespace": {"type": "string"},
                    "flowId": {"type": "string"},
                    "triggerId": {"type": "string"},
                    "date": {"type": "string", "nullable": True, "format": "date-time"},
                    "nextExecutionDate": {
                        "type": "string",
                        "nullable": True,
                        "format": "date-time",
                    },
                    "disabled": {"type": "boolean"},
                },
            },
            "backfill": {"type": "object"},
        },
    },
    "TriggerUpdate": {
        "type": "object",
        "required": ["namespace", "flowId", "triggerId"],
        "properties": {
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
            "triggerId": {"type": "string"},
            "disabled": {"type": "boolean"},
            "backfill": {
                "type": "object",
                "required": ["start"],
                "properties": {
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                    "inputs": {"type": "object"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
    },
    "SetDisabled": {
        "type": "object",
        "required": ["triggers", "disabled"],
        "properties": {
            "disabled": {"type": "boolean"},
            "triggers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["namespace", "flowId", "triggerId"],
                    "properties": {
                        "namespace": {"type": "string"},
                        "flowId": {"type": "string"},
                        "triggerId": {"type": "string"},
                    },
                },
            },
        },
    },
    "Namespace": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "string"}, "disabled": {"type": "boolean"}},
    },
    "KVEntry": {
        "type": "object",
        "required": ["key", "updateDate"],
        "properties": {
            "key": {"type": "string"},
            "updateDate": {"type": "string", "format": "date-time"},
            "expirationDate": {"type": "string", "nullable": True, "format": "date-time"},
        },
    },
    "KVValue": {
        "type": "object",
        "required": ["type", "value"],
        "properties": {
            "type": {
                "type": "string",
                "enum": ["STRING", "NUMBER", "BOOLEAN", "DATETIME", "DATE", "JSON"],
            },
            "value": {},
        },
    },
    "StatisticRequest": {
        "type": "object",
        "properties": {
            "startDate": {"type": "string", "format": "date-time"},
            "endDate": {"type": "string", "format": "date-time"},
            "namespace": {"type": "string"},
            "flowId": {"type": "string"},
        },
    },
    "DailyStatistics": {
        "type": "object",
        "required": ["startDate", "executionCounts"],
        "properties": {
            "startDate": {"type": "string", "format": "date"},
            "executionCounts": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["UP", "DOWN"]}},
    },
}
