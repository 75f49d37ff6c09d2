"""The health monitor (``monitor``): checks grouped as in the seed, with history in the state store."""
