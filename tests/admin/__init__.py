"""Tests of bridge/admin: the admin HTTP server against hostile clients."""
