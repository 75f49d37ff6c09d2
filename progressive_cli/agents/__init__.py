"""Agent runtime. The MCA (routing, load balancing, the five built-in agents) arrives in its own issue."""
