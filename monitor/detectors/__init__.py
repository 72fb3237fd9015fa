"""Detectors: one module per rule family."""
