"""progressive: an operator's control plane for the Progressive-Framework-v5 multi-agent system."""

__version__ = "0.1.0"
