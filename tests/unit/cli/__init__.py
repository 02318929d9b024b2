"""Tests of the Python client and the stagehub command line."""
