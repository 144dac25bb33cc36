"""Acceptance tests of the installed CLI."""
