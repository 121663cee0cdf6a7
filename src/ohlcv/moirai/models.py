"""MOIRAI modules: loading checkpoints, counting parameters, forecasting samples (uni2ts's classes)."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ohlcv.errors import OhlcvError, debug_enabled

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


def _from_pretrained(source: str):
    from uni2ts.model.moirai import MoiraiModule

    with without_known_prints():
        return MoiraiModule.from_pretrained(source)


def load_module(spec: str):
    """A MoiraiModule from a local Hugging Face folder or a hub id (e.g. Salesforce/moirai-1.1-R-small)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise OhlcvError(f"{path}: no config.json here; point at a model folder such as RUN/model")
        return _from_pretrained(str(path))
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        raise OhlcvError(f"'{spec}': no such folder, and not a hub id of the form org/name")
    if Path(spec.split("/", 1)[0]).is_dir():  # runs/nope: a mistyped local path, not an organisation on the hub
        raise OhlcvError(f"{path}: no such folder (its parent {spec.split('/', 1)[0]}/ is here); "
                         "point at a model folder such as RUN/model")
    try:
        return _from_pretrained(spec)
    except Exception as exc:  # noqa: BLE001 - network, missing repo, wrong format: one clear line
        raise OhlcvError(
            f"cannot load '{spec}' from the Hugging Face hub ({type(exc).__name__}); "
            "download it where there is network, or pass a local model folder"
        ) from None


def count_parameters(kwargs: dict[str, Any]) -> int:
    from uni2ts.model.moirai import MoiraiModule

    return sum(p.numel() for p in MoiraiModule(**kwargs).parameters())


def forecaster(module, cfg, targets: int, covariates: int):
    """uni2ts's ``MoiraiForecast`` around ``module`` for this profile's context, horizon and patch size."""
    from uni2ts.model.moirai import MoiraiForecast

    model = MoiraiForecast(
        module=module,
        prediction_length=int(cfg.data.prediction_length),
        context_length=int(cfg.data.context_length),
        patch_size=int(cfg.finetune.patch_size),
        num_samples=int(cfg.evaluate.num_samples),
        target_dim=targets,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=covariates,
    )
    model.eval()
    return model


def forecast_samples(forecaster, context: np.ndarray, target_idx: list[int], cov_idx: list[int], seed: int) -> np.ndarray:
    """(windows, samples, horizon, targets) in the dataset's (normalized) units, sampled with ``seed``."""
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
    with torch.no_grad():
        samples = forecaster(**inputs).float().numpy()
    if samples.ndim == 3:
        samples = samples[..., None]
    return samples
