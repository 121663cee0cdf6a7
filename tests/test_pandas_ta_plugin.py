"""The separately installable pandas-ta plugin (installed by .ci/run on the modern stack)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "ohlcv_pandas_ta",
    reason="plugins/ohlcv-pandas-ta is not installed: it needs numpy 2 (the modern stack); "
    "`pip install -e plugins/ohlcv-pandas-ta`",
)

from ohlcv.lookahead import check_feature, check_warmup  # noqa: E402
from ohlcv.plugins import load_plugins  # noqa: E402

NAMES = ["pta_kama", "pta_hma", "pta_supertrend"]


def test_registered_through_its_own_distribution():
    plugins = load_plugins()
    for name in NAMES:
        assert name in plugins.features
        info = plugins.features.plugin_of(name)
        assert info.distribution == "ohlcv-pandas-ta" and info.version == "0.1.0"


@pytest.mark.parametrize("name", NAMES)
def test_pandas_ta_features_are_causal(name):
    feature = load_plugins().features.get(name)
    result = check_feature(feature)
    assert result.ok, result.detail
    assert check_warmup(feature) is None


def test_usable_in_a_build(tmp_path):
    from ohlcv.builder.builder import IterativeFinancialDatasetBuilder
    from ohlcv.config import load_profile
    from ohlcv.lake.sample import generate_sample_lake

    lake = generate_sample_lake(tmp_path / "lake", symbols_per_class=1, asset_classes=["fx"], bars=900)
    cfg = load_profile("hourly", [f"data.lake={lake.root}", f"data.dataset={tmp_path / 'ds'}",
                                  "features.enabled=[pta_kama,pta_supertrend]"]).cfg
    result = IterativeFinancialDatasetBuilder(cfg).run()
    assert result.manifest["variates"][5:] == ["pta_kama_10", "pta_supertrend_dist", "pta_supertrend_dir"]
