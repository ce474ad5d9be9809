"""A team's own tabular model, outside the Nightshift packages (see examples/byom/README.md)."""
