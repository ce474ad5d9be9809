"""The `nightshift` command: one thin front door over every package."""
