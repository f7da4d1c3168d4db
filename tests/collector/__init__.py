"""Tests of the local collector (aicm.collector)."""
