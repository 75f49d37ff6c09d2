"""A project and a state store seeded with one of everything the dashboard shows, at a fixed clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from seeding import seed


@pytest.fixture
def project_files() -> dict[str, str]:
    return {
        "progressive.yaml": "dashboard: {refresh: 0.2}\n",
        "integrations.yaml": """
            integrations:
              - {id: payments, type: http, base_url: "http://127.0.0.1:9"}
              - {id: catalog, type: http, base_url: "http://127.0.0.1:9"}
        """,
        "workflows/orders.yaml": """
            name: orders
            steps:
              - {id: fetch, type: transform, value: 1}
              - {id: charge, type: transform, value: 2}
              - {id: notify, type: transform, value: 3}
        """,
    }


@pytest.fixture
def seeded(make_project, project_files) -> Path:
    """The project root, its store seeded."""
    root = make_project(project_files)
    asyncio.run(seed(root / ".progressive" / "state.db"))
    return root
