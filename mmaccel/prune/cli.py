"""``mmaccel bench prune``: placeholder registration until the prune bench lands."""


def register(commands, generate, bench) -> None:
    pass
