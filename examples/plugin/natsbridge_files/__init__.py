"""natsbridge connector for a directory of files."""
