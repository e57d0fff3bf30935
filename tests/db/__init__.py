"""Tests against a real PostgreSQL (the tests.pg plugin provides it)."""
