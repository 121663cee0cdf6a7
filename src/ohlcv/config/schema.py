"""The typed schema every profile is validated against.

OmegaConf builds a structured config from these dataclasses: a key that is not
declared here is an error, a value of the wrong type is an error, and ``???``
(``MISSING``) marks a value the profile must supply. Defaults are neutral; the
numbers for market data live in the profiles (``profiles/hourly.yaml`` and those extending it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class SplitMethod(str, Enum):
    fraction = "fraction"
    date = "date"


class LoggerKind(str, Enum):
    tensorboard = "tensorboard"
    csv = "csv"
    mlflow = "mlflow"
    wandb = "wandb"
    none = "none"


class SessionAlignment(str, Enum):
    open = "open"
    clock = "clock"


class BarLabel(str, Enum):
    start = "start"
    end = "end"


class Scaler(str, Enum):
    none = "none"
    standard = "standard"
    robust = "robust"
    minmax = "minmax"


class ScalerScope(str, Enum):
    symbol = "symbol"
    asset_class = "asset_class"


class Layout(str, Enum):
    """How variates are laid out in the dataset.

    ``joint``: every variate is a target (multivariate forecasting).
    ``covariates``: ``data.targets`` are targets, every other variate is a
    past-only covariate (``past_feat_dynamic_real``).
    """

    joint = "joint"
    covariates = "covariates"


class ModelSize(str, Enum):
    small = "small"
    base = "base"
    large = "large"
    custom = "custom"


class FinetunePattern(str, Enum):
    full = "full"
    freeze_ffn = "freeze_ffn"
    head_only = "head_only"
    lora = "lora"  # low-rank adapters through peft (the ohlcv[lora] extra), merged into the exported model


class Calibration(str, Enum):
    none = "none"
    conformal = "conformal"  # split conformal per horizon step, fitted on the validation span


class Refit(str, Enum):
    none = "none"  # evaluate the same model at every fold
    finetune = "finetune"  # fine-tune it on the data before each fold (less an embargo) first


class Distribution(str, Enum):
    student_t = "student_t"
    normal_fixed_scale = "normal_fixed_scale"
    normal = "normal"
    negative_binomial = "negative_binomial"
    log_normal = "log_normal"
    laplace = "laplace"


# Sizes of the published MOIRAI models: (num_layers, d_model).
MODEL_SIZES: dict[str, tuple[int, int]] = {
    "small": (6, 384),
    "base": (12, 768),
    "large": (24, 1024),
}


@dataclass
class SplitConfig:
    # date: cut timestamps common to every series (train_end / validation_end, or, when they are null,
    # at train / validation shares of the selection's whole time span); fraction: each series at its
    # own share of its bars (leaks across symbols of different ages: warned)
    method: SplitMethod = SplitMethod.date
    train: float = 0.8
    validation: float = 0.1
    train_end: Optional[str] = None  # ISO timestamps, exclusive
    validation_end: Optional[str] = None


@dataclass
class WeekdaysConfig:
    """The ``weekdays`` calendar (the FX week): closed from Friday ``close`` to Sunday ``close``."""

    timezone: str = "America/New_York"
    close: str = "17:00"
    holidays: List[str] = field(default_factory=list)  # MM-DD days closed every year, e.g. 12-25


@dataclass
class CleaningConfig:
    max_ffill_gap: int = 3  # gaps up to this many bars: prices forward-filled, volume 0
    outlier_window: int = 200  # bars of history for the causal median/MAD filter
    outlier_threshold: float = 12.0  # robust z-score (MADs) above which a bar is dropped
    min_length: int = 500  # symbols with fewer clean bars are quarantined
    max_off_session: float = 0.05  # share of a symbol's bars outside its calendar's sessions that quarantines it


@dataclass
class NormalizationConfig:
    scaler: Scaler = Scaler.none
    scope: ScalerScope = ScalerScope.symbol


@dataclass
class DataConfig:
    lake: str = "data/lake"
    sample_if_missing: bool = False  # generate a sample lake at data.lake when there is none (demo)
    dataset: str = "data/datasets/${name}"
    freq: str = "1h"
    asset_classes: List[str] = field(default_factory=list)  # empty: all
    symbols: List[str] = field(default_factory=list)  # empty: all
    start: Optional[str] = None
    end: Optional[str] = None
    columns: List[str] = field(
        default_factory=lambda: ["open", "high", "low", "close", "volume"]
    )
    # asset class -> trading calendar: continuous (24/7), weekdays (24/5, see data.weekdays) or an
    # exchange code of exchange-calendars (XNYS, XLON, XTKS, CMES, ...); "default" for other classes
    calendars: Dict[str, str] = field(default_factory=lambda: {"default": "continuous"})
    weekdays: WeekdaysConfig = field(default_factory=WeekdaysConfig)
    # intraday bars of an exchange: open (9:30, 10:30, ... from each session's open) or clock (9:00, 10:00, ...)
    session_alignment: SessionAlignment = SessionAlignment.open
    # what a lake time stamp marks: the start of its bar, or its end (many vendors stamp the close: 10:00
    # for 9:00-10:00); end-stamped intraday bars are moved back one bar when read
    bar_label: BarLabel = BarLabel.start
    layout: Layout = Layout.joint
    targets: List[str] = field(default_factory=lambda: ["close"])
    context_length: int = MISSING
    prediction_length: int = MISSING
    batch_size: int = 10  # symbols per builder batch
    split: SplitConfig = field(default_factory=SplitConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)


@dataclass
class FeaturesConfig:
    enabled: List[str] = field(default_factory=list)  # registered feature names
    params: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # per feature


@dataclass
class ModelConfig:
    size: ModelSize = ModelSize.small
    d_model: Optional[int] = None  # required when size is custom
    num_layers: Optional[int] = None
    patch_sizes: List[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    max_seq_len: int = 512
    # [min, max] patch size allowed for this profile's frequency. null: uni2ts's
    # DefaultPatchSizeConstraints (hourly: 32-64 only).
    patch_size_constraint: Optional[List[int]] = None
    distribution: List[Distribution] = field(
        default_factory=lambda: [
            Distribution.student_t,
            Distribution.normal_fixed_scale,
            Distribution.negative_binomial,
            Distribution.log_normal,
        ]
    )
    dropout: float = 0.0
    attn_dropout: float = 0.0
    scaling: bool = True


@dataclass
class PretrainConfig:
    batch_size: int = 32
    max_steps: int = 10_000
    warmup_steps: int = 1_000
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.2
    max_dim: int = 128
    min_patches: int = 2
    allow_crop: bool = True  # let uni2ts crop samples that exceed max_seq_len
    num_batches_per_epoch: int = 100
    num_workers: int = 0
    checkpoint_every_n_steps: int = 500


# attention projections and feed-forward layers of every transformer layer (Moirai 1.x and 2.0; Moirai-MoE is
# not fine-tuned)
LORA_TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                "ffn.fc1", "ffn.fc2", "ffn.fc_gate"]


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0  # the adapters' update is scaled by alpha / rank
    dropout: float = 0.05
    # module names (suffixes, as in peft's target_modules) that get an adapter
    target_modules: List[str] = field(default_factory=lambda: list(LORA_TARGETS))


@dataclass
class FinetuneConfig:
    patch_size: int = 32
    pattern: FinetunePattern = FinetunePattern.full
    batch_size: int = 32
    max_steps: int = 2_000
    warmup_steps: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.1
    patience: int = 5  # validations without improvement before stopping
    val_every_n_steps: int = 100
    # validation windows at most: a fixed set spread evenly over every series' validation span (each series gets
    # at least one), the same for the starting model and every validation after
    val_windows: int = 2_000
    num_samples: int = 100  # samples drawn for sampled validation metrics
    lora: LoraConfig = field(default_factory=LoraConfig)  # used by pattern: lora


@dataclass
class EvaluateConfig:
    windows: int = 20
    stride: Optional[int] = None  # bars between origins; null: the prediction length
    num_samples: int = 100
    plot_assets: int = 4
    seasonality: Optional[int] = None  # null: from the frequency (24 for hourly)
    # Per variate kind (price, return, volatility, volume, oscillator, indicator): the baselines scored, the
    # first being the one to beat. A kind given here replaces its default list (ohlcv.evaluate.baselines).
    baselines: Dict[str, List[str]] = field(default_factory=dict)
    variates: List[str] = field(default_factory=list)  # target variates to score; empty: every target
    kinds: Dict[str, str] = field(default_factory=dict)  # variate -> kind, overriding the features' declarations
    calibrate: Calibration = Calibration.none
    calibration_windows: int = 20  # per series, on the validation span
    allow_mismatch: bool = False  # evaluate a model trained with other variates / context / patch anyway
    seed: int = 0  # every forecaster samples with its own seed derived from this one


@dataclass
class BacktestConfig:
    folds: int = 3  # the last fold is the profile's test span; earlier ones step back by windows x stride bars
    refit: Refit = Refit.none
    embargo: Optional[int] = None  # bars left out between fine-tuning data and the fold; null: the horizon


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    # auto: bf16-mixed on GPUs that support it, else 16-mixed; 32-true on CPU
    precision: str = "auto"
    gradient_clip_val: float = 1.0
    tf32: bool = True
    # torch.compile the MOIRAI module (its forward, in place: checkpoints keep their names); off by
    # default: the first steps pay the compilation (see docs/benchmarks.md for what it gains on a GPU)
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile's backend (e.g. aot_eager to tell a compiler bug apart)
    log_every_n_steps: int = 10
    seed: int = 0
    logger: LoggerKind = LoggerKind.tensorboard
    tracking_uri: Optional[str] = None  # mlflow: null -> MLFLOW_TRACKING_URI, else <output.runs_dir>/mlruns
    experiment: Optional[str] = None  # mlflow experiment / wandb project; null: the profile's name


class Executor(str, Enum):
    local = "local"  # worker threads on this machine
    ray = "ray"  # Ray tasks on a cluster (RAY_ADDRESS) or a local Ray runtime: pip install 'ohlcv[ray]'


@dataclass
class BuildConfig:
    """How ``ohlcv build`` runs its batches (not what it builds: the dataset is the same either way)."""

    executor: Executor = Executor.local
    cpus: Optional[int] = None  # CPUs of a local Ray runtime started by the build; null: every core


@dataclass
class OutputConfig:
    runs_dir: str = "runs"


@dataclass
class Profile:
    name: str = MISSING
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    backtest: BacktestConfig = field(default_factory=BacktestConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
