"""Deterministic synthetic market (being built)."""


class Market:
    def __init__(self, *, seed: int, sessions, clock):
        self.seed = seed
        self.sessions = sessions
        self.clock = clock
