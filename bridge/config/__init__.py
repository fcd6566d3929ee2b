"""The config file: model (version 1), loading with precise errors, and JSON Schema."""

from natsbridge.bridge.config.loader import Config, Route, load_config

__all__ = ["Config", "Route", "load_config"]
