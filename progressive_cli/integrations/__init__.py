"""External APIs and databases: the hub (``hub.Integrations``), the http client (``http``), breakers
persisted in the state store (``breakers``) and one connector per database. Importing this package
imports no driver; each is imported when its integration is first used."""
