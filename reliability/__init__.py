"""Reliability runs of aicm: chaos, real deployment shapes and bad input (not shipped).

``python -m reliability --long`` runs the long form and prints the figures that
``docs/reliability.md`` reports; ``tests/reliability`` runs the quick forms in CI.
"""
