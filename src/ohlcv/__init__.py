"""ohlcv: MOIRAI foundation models for multivariate OHLCV market data."""

__version__ = "0.1.0"
