"""tether: drive the AI coding agents on your own machines from your phone."""

__version__ = "0.1.0"
