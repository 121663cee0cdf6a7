"""What each variate of a built dataset is, read from the feature registry at evaluation time."""

from __future__ import annotations

from pathlib import Path

from ohlcv.features import OHLCV_KINDS, Kind

UNITS = {
    Kind.price: "price (quote currency)",
    Kind.return_: "return (fraction per bar, as the feature defines it)",
    Kind.volatility: "volatility (as the feature defines it)",
    Kind.volume: "volume (units traded)",
    Kind.oscillator: "the oscillator's bounded scale",
    Kind.indicator: "the indicator's own units",
}


def variate_kinds(cfg, dataset: Path, variates: list[str]) -> tuple[dict[str, Kind], list[str]]:
    """Each variate's :class:`Kind` and notes on any that had to be guessed.

    The lake's columns are prices and volume; feature outputs take the kinds
    their features declare, read from the registry with the parameters of the
    profile the dataset was built with (``DATASET/profile.yaml``, else the
    current one); ``evaluate.kinds.<variate>`` overrides both.
    """
    from omegaconf import OmegaConf

    from ohlcv.errors import OhlcvError
    from ohlcv.plugins import enabled_features, load_plugins

    kinds: dict[str, Kind] = {name: kind for name, kind in OHLCV_KINDS.items() if name in variates}
    notes: list[str] = []
    built = Path(dataset) / "profile.yaml"
    sources = ([OmegaConf.load(built)] if built.is_file() else []) + [cfg]
    registry = load_plugins().features
    for source in sources:
        try:
            for feature, params, _outputs in enabled_features(source, registry):
                kinds.update(feature.output_kinds(params))
            break
        except (OhlcvError, KeyError, AttributeError):
            continue
    for variate, kind in cfg.evaluate.kinds.items():
        kinds[str(variate)] = Kind(str(kind))
    unknown = [v for v in variates if v not in kinds]
    for variate in unknown:
        kinds[variate] = Kind.indicator
    if unknown:
        notes.append(f"no registered feature declares the kind of {unknown}: scored as indicators "
                     "(set evaluate.kinds.<variate> to say what they are)")
    return {v: kinds[v] for v in variates}, notes
