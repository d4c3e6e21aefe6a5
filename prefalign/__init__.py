"""prefalign: multi-agent traffic simulation with preference alignment."""

__version__ = '0.1.0'
