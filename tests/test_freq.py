import pytest

from ohlcv.errors import ConfigError
from ohlcv.freq import parse_freq


@pytest.mark.parametrize(
    "spelling, canonical, code",
    [
        ("1h", "1h", "H"), ("h", "1h", "H"), ("H", "1h", "H"), ("60min", "1h", "H"), ("1hour", "1h", "H"),
        ("1d", "1D", "D"), ("D", "1D", "D"), ("24h", "1D", "D"), ("1440min", "1D", "D"),
        ("1min", "1min", "T"), ("T", "1min", "T"), ("5min", "5min", "T"), ("5T", "5min", "T"),
        ("4h", "4h", "H"), ("30s", "30s", "S"), ("60s", "1min", "T"), ("B", "1B", "B"), ("1W", "1W", "W"),
    ],
)
def test_usual_spellings_map_to_one_canonical_form(spelling, canonical, code):
    freq = parse_freq(spelling)
    assert freq.canonical == canonical
    assert freq.uni2ts_code == code


def test_season_lengths():
    assert parse_freq("1h").season_length == 24
    assert parse_freq("15min").season_length == 96
    assert parse_freq("1D").season_length == 7
    assert parse_freq("B").season_length == 5


@pytest.mark.parametrize("bad", ["", "fortnight", "0h", "h1", "1.5h"])
def test_bad_frequencies_are_config_errors(bad):
    with pytest.raises(ConfigError):
        parse_freq(bad)
