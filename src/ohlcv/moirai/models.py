"""MOIRAI modules of every family: loading, counting parameters, forecasting (uni2ts's own classes).

Where a model comes from and which family it is: :mod:`ohlcv.moirai.sources`. Each family
forecasts with its own uni2ts class (``MoiraiForecast``, ``MoiraiMoEForecast``,
``Moirai2Forecast``). Moirai 1.x and Moirai-MoE sample their predictive distribution; Moirai 2.0
predicts fixed quantile levels, which :func:`quantile_grid` turns into a grid of values that
every metric reads like samples (docs/evaluate.md says how, and what is extrapolated).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from typing import Any

import numpy as np

from ohlcv.errors import ConfigError, OhlcvError, debug_enabled
from ohlcv.moirai.compat import keep_ctrl_c
from ohlcv.moirai.sources import ModelSource, resolve_model

# Lines libraries print (``print``, not a logger) while loading a model that say nothing to a user:
# huggingface_hub's mixin announces every local load. OHLCV_DEBUG=1 shows them.
QUIET_PRINTS = ("Loading weights from local directory",)


@contextlib.contextmanager
def without_known_prints():
    """Hold back what is printed to stdout inside the block, then pass on every line but ``QUIET_PRINTS``."""
    if debug_enabled():
        yield
        return
    held = io.StringIO()
    try:
        with contextlib.redirect_stdout(held):
            yield
    finally:
        kept = [line for line in held.getvalue().splitlines(keepends=True) if line.strip() not in QUIET_PRINTS]
        sys.stdout.write("".join(kept))


GRID = 101  # quantile-grid points for a quantile forecast: levels 0, 0.01, ..., 1 (every level a metric reads)


def _class(source_or_family, which: str):
    family = getattr(source_or_family, "family", source_or_family)
    return getattr(importlib.import_module(family.package), getattr(family, which))


def load_module(spec: str | ModelSource, *, option: str = "--from"):
    """The uni2ts module of ``spec`` (a hub id, a model or run folder, a .ckpt; see :func:`resolve_model`)."""
    source = spec if isinstance(spec, ModelSource) else resolve_model(spec, option=option)
    cls = _class(source, "module_class")
    keep_ctrl_c()  # uni2ts is imported by now
    try:
        if source.folder is not None and (source.folder / "config.json").is_file():
            with without_known_prints():
                module = cls.from_pretrained(str(source.folder))
        else:  # a checkpoint whose hyper-parameters hold the module's arguments
            module = cls(**source.config)
    except Exception as exc:  # noqa: BLE001 - mismatched weights, a config of another uni2ts: one line
        raise OhlcvError(f"{source.spec}: uni2ts cannot load this {source.family.name} model "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if source.checkpoint is not None:
        _load_checkpoint_weights(module, source)
    module.ohlcv_source = source
    return module


def layer_names(source: ModelSource) -> list[str] | None:
    """The names of the layers of ``source``'s module, read from its weights file's header (no weights loaded);
    None when there is no such file (a Lightning checkpoint alone)."""
    path = source.folder / "model.safetensors" if source.folder is not None else None
    if path is None or not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as weights:
        keys = list(weights.keys())
    # every dotted prefix of a weight's name is a module of the model
    return sorted({key.rsplit(".", i)[0] for key in keys for i in range(1, key.count(".") + 1)})


def _load_checkpoint_weights(module, source: ModelSource) -> None:
    from ohlcv.moirai.sources import read_checkpoint

    state = read_checkpoint(source.checkpoint)["state_dict"]  # memory-mapped: no second copy in memory
    weights = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: the checkpoint is of another model
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), "size mismatch")
        raise ConfigError(f"{source.checkpoint}: its weights do not fit the {source.family.name} model it describes "
                          f"({first}); pass the run's model folder instead", key="--from") from None
    if missing or unexpected or not weights:
        raise OhlcvError(f"{source.checkpoint}: its weights do not fit the {source.family.name} model it describes "
                         f"({len(missing)} missing, {len(unexpected)} unexpected); pass the run's model folder instead")


def new_module(family: str, *, d_model: int, num_layers: int, patch_sizes=(16,), max_seq_len: int = 512,
               d_ff: int | None = None, distribution: tuple[str, ...] = ("student_t", "normal_fixed_scale",
                                                                             "negative_binomial", "log_normal"),
               **extra: Any):
    """A randomly initialised module of ``family`` ("moirai", "moirai_moe", "moirai2") with this shape.

    For a model of a released configuration without hub access (benchmarks, a GPU box) and for the
    tiny stand-ins of the tests. Moirai 2.0 reads the first of ``patch_sizes``; ``extra`` goes to
    uni2ts's constructor as it is (``num_predict_token``, ``quantile_levels``, ``scaling``).
    """
    from ohlcv.moirai.compat import distribution_output
    from ohlcv.moirai.sources import FAMILIES

    kind = FAMILIES[family]
    cls = _class(kind, "module_class")
    common = dict(d_model=d_model, num_layers=num_layers, max_seq_len=max_seq_len, attn_dropout_p=0.0, dropout_p=0.0)
    if family == "moirai2":
        return cls(d_ff=d_ff or 4 * d_model, patch_size=int(tuple(patch_sizes)[0]), **common, **extra)
    if family == "moirai_moe":
        common["d_ff"] = d_ff or 2 * d_model
    module = cls(distr_output=distribution_output(list(distribution)), patch_sizes=tuple(int(p) for p in patch_sizes),
                 **common, **extra)
    if family == "moirai_moe":
        # uni2ts allocates the experts' routing centroids with torch.empty (a released checkpoint brings its own):
        # left as they are, whatever the memory held routes the tokens, NaN forecasts included (seen on torch 2.4)
        for name, buffer in module.named_buffers():
            if name.endswith("centroid"):
                buffer.normal_()
    return module


def count_parameters(kwargs: dict[str, Any]) -> int:
    from uni2ts.model.moirai import MoiraiModule

    return sum(p.numel() for p in MoiraiModule(**kwargs).parameters())


def describe(module) -> dict[str, Any]:
    """Family, released size (or None) and parameter count of a loaded module, for reports and run.json."""
    source: ModelSource | None = getattr(module, "ohlcv_source", None)
    info = source.describe() if source is not None else {}
    return {**info, "parameters": int(sum(p.numel() for p in module.parameters()))}


def patch_sizes(module) -> list[int]:
    """The patch sizes a module reads: several for Moirai 1.x and Moirai-MoE, one for Moirai 2.0."""
    sizes = getattr(module, "patch_sizes", None)
    return [int(p) for p in (sizes if sizes is not None else [module.patch_size])]


def forecast_patch(module, cfg) -> int:
    """The patch size to forecast with: the profile's (finetune.patch_size), or the only one a model reads
    (Moirai 2.0, or a Moirai 1.x / Moirai-MoE with a single patch size, as the released Moirai-MoE's 16)."""
    sizes = patch_sizes(module)
    if len(sizes) == 1:
        return sizes[0]
    patch = int(cfg.finetune.patch_size)
    if patch not in sizes:
        spec = getattr(getattr(module, "ohlcv_source", None), "spec", None)
        raise ConfigError(f"{spec or 'the model'} has patch sizes {sizes}, not {patch}", key="finetune.patch_size")
    return patch


class Forecaster:
    """A family's uni2ts forecast module for this profile's context and horizon, called the same way for all."""

    def __init__(self, module, cfg, targets: int, covariates: int, *, one_by_one: bool | None = None):
        source: ModelSource | None = getattr(module, "ohlcv_source", None)
        self.family = source.family if source is not None else None
        self.quantiles = self.family is not None and self.family.output == "quantiles"
        self.horizon, self.context = int(cfg.data.prediction_length), int(cfg.data.context_length)
        self.targets, self.covariates = targets, covariates
        self.patch = forecast_patch(module, cfg)
        self.notes: list[str] = []  # (a patch size other than finetune.patch_size: evaluate.run.check_model_fits)
        cls = _class(self.family, "forecast_class") if self.family is not None else _class_default()
        common = dict(prediction_length=self.horizon, context_length=self.context, feat_dynamic_real_dim=0, module=module)
        if self.quantiles:
            # uni2ts 2.0.0's Moirai2Forecast fails (an einops shape error) for several targets when the horizon
            # needs more than one decoding step; each target is then forecast alone, the others as past covariates
            # (one_by_one=True forces it, to compare the two ways in the tests)
            needed = targets > 1 and self.horizon > int(module.num_predict_token) * int(module.patch_size)
            self.one_by_one = needed if one_by_one is None else bool(one_by_one) and targets > 1
            width = 1 if self.one_by_one else targets
            self.model = cls(target_dim=width, past_feat_dynamic_real_dim=covariates + targets - width, **common)
            self.levels = np.asarray(module.quantile_levels, dtype=np.float64)
            self.notes.append(f"{self.family.name} predicts the quantiles {self.levels.min():g}-{self.levels.max():g}, "
                              "not samples: its scores read the piecewise-linear quantile function through them; the "
                              f"95% interval, MSIS and the PIT outside {self.levels.min():g}-{self.levels.max():g} come "
                              "from extending its outermost segments (docs/evaluate.md)")
            if self.one_by_one:
                self.notes.append(f"{self.family.name}: each target forecast on its own, the other targets as past "
                                  f"covariates (the horizon {self.horizon} needs several decoding steps, which "
                                  "uni2ts 2.0.0's Moirai2Forecast cannot do for several targets at once)")
        else:
            self.one_by_one = False
            self.model = cls(target_dim=targets, past_feat_dynamic_real_dim=covariates, patch_size=self.patch,
                             num_samples=int(cfg.evaluate.num_samples), **common)
        self.model.eval()

    def __call__(self, inputs: dict[str, Any]) -> np.ndarray:
        """(windows, samples or grid points, horizon, targets)."""
        import torch

        with torch.no_grad():
            if not self.one_by_one:
                return self._run(inputs)
            parts = []
            for t in range(self.targets):
                others = [i for i in range(self.targets) if i != t]
                alone = {"past_target": inputs["past_target"][..., [t]],
                         "past_observed_target": inputs["past_observed_target"][..., [t]],
                         "past_is_pad": inputs["past_is_pad"]}
                cov = [inputs["past_target"][..., others]]
                seen = [inputs["past_observed_target"][..., others]]
                if "past_feat_dynamic_real" in inputs:
                    cov.append(inputs["past_feat_dynamic_real"])
                    seen.append(inputs["past_observed_feat_dynamic_real"])
                alone["past_feat_dynamic_real"] = torch.cat(cov, dim=-1)
                alone["past_observed_feat_dynamic_real"] = torch.cat(seen, dim=-1)
                parts.append(self._run(alone))
            return np.concatenate(parts, axis=-1)

    def _run(self, inputs: dict[str, Any]) -> np.ndarray:
        out = self.model(**inputs).float().numpy()
        if out.ndim == 3:
            out = out[..., None]
        return quantile_grid(out, self.levels) if self.quantiles else out


def _class_default():
    from uni2ts.model.moirai import MoiraiForecast

    return MoiraiForecast


def quantile_grid(quantiles: np.ndarray, levels: np.ndarray, points: int = GRID) -> np.ndarray:
    """(windows, levels, horizon, targets) quantiles -> (windows, points, horizon, targets) values of the
    quantile function at the levels 0, 1/(points-1), ..., 1.

    The predicted quantiles are sorted (a quantile head may cross), joined linearly, and extended
    below the lowest and above the highest level with the slope of the outermost pair. With the
    default 101 points, ``np.quantile`` of the grid at any level equals that piecewise-linear
    quantile function: exact at the predicted levels, interpolated between them, extrapolated
    in the tails (below 0.1 and above 0.9 for the released Moirai 2.0).
    """
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=1)
    levels = np.asarray(levels, dtype=np.float64)
    u = np.linspace(0.0, 1.0, points)
    low = np.clip(np.searchsorted(levels, u, side="right") - 1, 0, len(levels) - 2)
    weight = (u - levels[low]) / (levels[low + 1] - levels[low])
    lower, upper = q[:, low], q[:, low + 1]
    return lower + weight[None, :, None, None] * (upper - lower)


def forecaster(module, cfg, targets: int, covariates: int) -> Forecaster:
    """The family's uni2ts forecast class around ``module`` for this profile's context, horizon and patch size."""
    return Forecaster(module, cfg, targets, covariates)


def forecast_samples(forecaster: Forecaster, context: np.ndarray, target_idx: list[int], cov_idx: list[int],
                     seed: int) -> np.ndarray:
    """(windows, samples, horizon, targets) in the dataset's (normalized) units, sampled with ``seed``
    (a quantile forecast: its quantile grid, the same whatever the seed)."""
    import torch

    past = np.transpose(context[:, target_idx, :], (0, 2, 1))  # (windows, context, targets)
    observed = np.isfinite(past)
    inputs = {
        "past_target": torch.as_tensor(np.where(observed, past, 0.0), dtype=torch.float32),
        "past_observed_target": torch.as_tensor(observed),
        "past_is_pad": torch.zeros(past.shape[:2], dtype=torch.bool),
    }
    if cov_idx:
        cov = np.transpose(context[:, cov_idx, :], (0, 2, 1))
        seen = np.isfinite(cov)
        inputs["past_feat_dynamic_real"] = torch.as_tensor(np.where(seen, cov, 0.0), dtype=torch.float32)
        inputs["past_observed_feat_dynamic_real"] = torch.as_tensor(seen)
    torch.manual_seed(seed)
    return forecaster(inputs)

