"""callgate: admission control and capacity planning for AI phone agents."""

__version__ = "0.1.0"
