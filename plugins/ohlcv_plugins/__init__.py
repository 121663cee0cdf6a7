"""ohlcv's built-in feature plugins.

Each module here is an ordinary plugin, registered through the ``ohlcv``
entry-point group in ohlcv's own ``pyproject.toml`` — exactly the way a
third-party plugin registers.
"""
