"""Metrics: plain functions over predictions and references, each equal to its reference implementation."""
