"""chemohost: the host response to chemotherapy, as a simulator and in-silico trial platform."""

__version__ = "0.1.0"
