"""Connector plugins, one package per broker kind, registered by name."""
