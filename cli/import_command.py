"""`nightshift import` (being built on the `import` branch; this placeholder keeps the CLI whole)."""


def add_parser(sub) -> None:
    pass
