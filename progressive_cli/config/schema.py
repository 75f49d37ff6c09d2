"""JSON Schema for each config file, for editors and CI (`progressive schema`)."""

from __future__ import annotations

from typing import Any

SCHEMA_NAMES = ("agents", "integrations", "workflow", "settings")
FILE_FOR = {
    "agents": "agents.yaml",
    "integrations": "integrations.yaml",
    "workflow": "workflows/*.yaml",
    "settings": "progressive.yaml",
}


def json_schema(name: str) -> dict[str, Any]:
    from pydantic import BaseModel

    from progressive_cli.config.agents import AgentsFile
    from progressive_cli.config.integrations import IntegrationsFile
    from progressive_cli.config.settings import Settings
    from progressive_cli.config.workflows import WorkflowFile

    models: dict[str, type[BaseModel]] = {
        "agents": AgentsFile, "integrations": IntegrationsFile, "workflow": WorkflowFile, "settings": Settings,
    }
    schema = models[name].model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://progressive.dev/schema/{name}.json",
        "title": f"progressive {FILE_FOR[name]}",
        **schema,
    }
