"""(being built)"""


def setup(app) -> None:
    pass
