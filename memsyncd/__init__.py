"""memsyncd: keeps local OpenMemory memories and mem0 cloud memories in sync, safely."""

__version__ = "0.1.0"
