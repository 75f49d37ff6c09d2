"""A canary secret never reaches stdout, stderr or files written by a command."""

from __future__ import annotations

from pathlib import Path

import pytest

from progressive_cli.config.secrets import REDACTOR, MissingSecretError, env_refs, resolve

CANARY = "canary-7f3a9c1e-d0not-leak"


@pytest.fixture(autouse=True)
def _fresh_redactor():
    REDACTOR.clear()
    yield
    REDACTOR.clear()


def test_resolve_registers_and_redacts() -> None:
    text = resolve("Bearer ${env:TOKEN}", {"TOKEN": CANARY})
    assert text == f"Bearer {CANARY}"
    assert REDACTOR.redact(f"header was {text}") == "header was Bearer ***"
    assert REDACTOR.redact_data({"k": [f"x{CANARY}x"], CANARY: 1}) == {"k": ["x***x"], "***": 1}


def test_resolve_missing_names_the_variable() -> None:
    with pytest.raises(MissingSecretError, match="environment variable NOPE is not set"):
        resolve("${env:NOPE}", {})


def test_short_values_are_not_registered() -> None:
    resolve("${env:A}", {"A": "1"})
    assert REDACTOR.redact("v1.2") == "v1.2"


def test_env_refs_walks_nested_data() -> None:
    assert sorted(env_refs({"a": ["${env:X}", {"b": "p${env:Y}q${env:X}"}], "c": 3})) == ["X", "X", "Y"]


def test_url_passwords_are_masked_without_registration() -> None:
    assert REDACTOR.redact("postgresql://u:hunter22@db/x") == "postgresql://u:***@db/x"


def _all_output(cli, root: Path, env: dict[str, str]) -> str:
    commands = [
        ["validate"], ["validate", "--strict"], ["validate", "-o", "json"],
        ["config", "show", "--sources"], ["config", "show", "-o", "json"], ["config", "show", "-o", "yaml"],
        ["integrations", "list"], ["integrations", "list", "-o", "json"],
        ["integrations", "show", "vault"], ["integrations", "show", "vault", "-o", "yaml"],
        ["agents", "list", "-o", "json"], ["agents", "show", "remote", "-o", "json"],
        ["workflows", "show", "w", "-o", "json"],
    ]
    out = []
    for args in commands:
        r = cli("-p", str(root), *args, env=env)
        out.append(r.stdout + r.stderr)
    r = cli("-p", str(root), "--set", f"state.url=postgresql://app:{CANARY}@db/x", "config", "show", env=env)
    out.append(r.stdout + r.stderr)
    return "\n".join(out)


def test_canary_never_printed(cli, make_project) -> None:
    root = make_project({
        "agents.yaml": """
            agents:
              - id: remote
                kind: http
                endpoints: [{url: "http://127.0.0.1:9"}]
                headers: {Authorization: "Bearer ${env:AGENT_TOKEN}"}
        """,
        "integrations.yaml": """
            integrations:
              - id: vault
                type: http
                base_url: http://127.0.0.1:9
                auth: {type: bearer, token: "${env:CANARY_TOKEN}"}
              - id: db
                type: postgres
                dsn: "postgresql://app:${env:CANARY_TOKEN}@127.0.0.1/x"
        """,
        "progressive.yaml": "state:\n  url: ${env:CANARY_STATE}\n",
        "workflows/w.yaml": "name: w\nsteps: [{id: s, type: transform, value: 1}]\n",
    })
    env = {"CANARY_TOKEN": CANARY, "AGENT_TOKEN": CANARY, "PROGRESSIVE_DAEMON__LOGFILE": "x.log",
           "CANARY_STATE": f"sqlite:///{CANARY}.db"}
    # a connector resolving the secret at run time registers it; printing must still not leak it
    resolve("${env:CANARY_TOKEN}", env)
    text = _all_output(cli, root, env)
    assert CANARY not in text
    assert "${env:CANARY_TOKEN}" in text  # the reference is shown, so operators know where it comes from
    assert not (root / ".progressive").exists()
