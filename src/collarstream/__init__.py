"""collarstream: satellite-collar GPS fixes in; steps, home ranges and geofence alerts out."""

__version__ = "0.1.0"
