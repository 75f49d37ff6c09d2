"""External APIs and databases: the hub (``hub.Integrations``), the http client (``http``), breakers
persisted in the state store (``breakers``) and one connector per database. Importing this package
imports no driver; each is imported when its integration is first used."""

FOREVER = 100 * 365 * 86400.0
"""How far ahead a breaker forced open "until reset" puts its half-open time."""


def breaker_name(integration: str) -> str:
    """An integration's row in the store's ``breakers`` table (here, not in ``breakers``: importing
    pybreaker also imports redis when it is installed, a fifth of a second that reading a state need not
    pay)."""
    return f"integration:{integration}"
