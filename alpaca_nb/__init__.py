"""alpaca_nb: the Alpaca brokerage API as typed pandas frames, notebook widgets, live streams and
Excel formulas, with a local sandbox that needs no keys and no network."""

__version__ = "0.1.0"
