"""The one typed configuration of the project, loaded from ``params.yaml``.

Every stage (command line, DVC, Prefect, Ray workers) builds a :class:`UnitConfig`
from the same file and passes the object on; nothing downstream reads raw dicts.
Unknown keys and bad values are errors that name the key.

The ``ingest`` section holds the typed settings of one ingest kind
(``unit_core.ingest_settings``, told apart by ``kind``), e.g.
``ingest: {kind: demo-street, train: 500, test: 16, size: 64}``; a preset whose ingest
kind differs from the file below it replaces that section instead of merging into it.

Deprecated: the old form ``ingest: {kind: K, args: ["--flag", "value", ...]}`` (the
strings of ``unit ingest K ...``). Presets, params.yaml files and the configurations
stored in checkpoints written before the typed settings still load: the list is
translated by the flag table of the kind's settings model (:func:`_legacy_ingest`; the
CLI's parser is not used, as this layer sits below it) and a ``FutureWarning`` shows the
new form to write instead. A flag the table does not know is a configuration error
naming it. Settings written as keys beside ``args`` win over it.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from unit_core.ingest_settings import (
    INGEST_ADAPTER,
    INGEST_KINDS,
    DemoStreetIngest,
    IngestSettings,
    legacy_args,
    settings_yaml,
)


class ConfigError(ValueError):
    """A configuration file or override is wrong; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Architecture of the two VAE-GANs (paper, appendix Table 4; NIPS code defaults)."""

    channels_a: Literal[1, 3] = 3
    channels_b: Literal[1, 3] = 3
    generator: Literal["resnet", "conv32"] = Field(
        "resnet", description="resnet: the paper's translation networks (res_blocks, n_shared); conv32: the NIPS-era "
                              "code's 32x32 digits networks, a 1x1 latent code of 8*width channels, all but each "
                              "domain's outermost layer shared (data.image_size 32, norm batch)")
    width: int = Field(64, ge=1, description="channels of the first encoder conv; doubled by each of the 2 downsamplings")
    res_blocks: int = Field(4, ge=1, description="residual blocks in each encoder and in each generator, shared ones included")
    n_shared: int = Field(1, ge=0, description="innermost residual blocks shared by E1/E2 and by G1/G2; 0 = no weight sharing")
    leaky_slope: float = Field(0.2, ge=0.0, lt=1.0)
    padding: Literal["zeros", "reflect"] = "zeros"
    norm: Literal["instance", "batch"] = Field("instance", description="normalisation in residual blocks (the paper's digit networks used batch)")
    dis_width: int = Field(64, ge=1)
    dis_layers: int = Field(5, ge=1, description="stride-2 conv layers of each discriminator (paper: 5)")
    dis_max_width: int = Field(1024, ge=1)
    dis_scales: int = Field(1, ge=1, description=">1: multi-scale discriminator on average-pooled copies")
    dis_norm: Literal["none", "spectral"] = Field(
        "none", description="none: the paper's discriminators; spectral: spectral normalisation of every discriminator "
                            "conv and of the classifier (not in the paper), which bounds how far a small change of "
                            "the image can move the logits")
    dis_shared_layers: int = Field(0, ge=0, description="last discriminator layers tied between D1 and D2 (domain adaptation)")
    num_classes: int = Field(0, ge=0, description=">0: domain-adaptation variant, a classifier on the tied D features")
    dis_dropout: list[float] = Field(
        default_factory=list,
        description="dropout rates of the tied discriminator layers while training, one for the input of each tied "
                    "layer and one for the tied features (dis_shared_layers + 1 rates; NIPS-era digits code: 0.1, 0.3, "
                    "0.5, 0.5); the real/fake and class logits read the dropped-out pass, the feature-L1 term a clean one",
    )
    domain_channels: dict[str, Literal[1, 3]] = Field(
        default_factory=dict, description="N-domain models (data.domains): channels of a domain when not 3; "
                                          "two-domain models use channels_a and channels_b")

    @model_validator(mode="after")
    def _shared_fits(self) -> "ModelConfig":
        if self.generator == "conv32" and (self.n_shared == 0 or self.norm != "batch"):
            raise ValueError("generator conv32 shares its fixed middle layers and uses batch norm: n_shared 0 "
                             f"(got {self.n_shared}) and norm {self.norm!r} apply to generator resnet only")
        if self.n_shared > self.res_blocks:
            raise ValueError(f"n_shared ({self.n_shared}) cannot exceed res_blocks ({self.res_blocks})")
        if self.dis_shared_layers >= self.dis_layers:
            raise ValueError(
                f"dis_shared_layers ({self.dis_shared_layers}) must be below dis_layers ({self.dis_layers}): "
                f"each domain keeps at least its first layer"
            )
        if self.dis_dropout:
            if not self.dis_shared_layers:
                raise ValueError("dis_dropout applies to the tied discriminator layers: set dis_shared_layers > 0")
            if len(self.dis_dropout) != self.dis_shared_layers + 1:
                raise ValueError(f"dis_dropout needs {self.dis_shared_layers + 1} rates (dis_shared_layers + 1: the input "
                                 f"of each tied layer and the tied features), got {len(self.dis_dropout)}")
            if any(not 0.0 <= rate < 1.0 for rate in self.dis_dropout):
                raise ValueError(f"dis_dropout rates must lie in [0, 1), got {self.dis_dropout}")
        return self


class LossConfig(_Section):
    """Loss weights by name: lambda0..lambda4 of the paper's eq. (2)-(8)."""

    gan_mode: Literal["bce", "lsgan", "hinge"] = "bce"
    gan: float = Field(10.0, ge=0.0, description="lambda0, GAN terms on translated images")
    gan_recon: float = Field(0.0, ge=0.0, description="GAN terms on reconstructed images too, as the NIPS-era code "
                                                      "has them (paper: 0, translations only)")
    kl: float = Field(0.1, ge=0.0, description="lambda1, KL of the reconstruction streams")
    recon: float = Field(100.0, ge=0.0, description="lambda2, L1 of the reconstruction streams")
    kl_cycle: float = Field(0.1, ge=0.0, description="lambda3, KL of the cycle streams")
    cycle: float = Field(100.0, ge=0.0, description="lambda4, L1 of the cycle streams; 0 with kl_cycle 0 = no cycle")
    classifier: float = Field(10.0, ge=0.0, description="domain adaptation: cross-entropy of the classifier on D1 features")
    feature: float = Field(0.1, ge=0.0, description="domain adaptation: L1 between D features of generated pairs")
    classifier_translated: float = Field(0.0, ge=0.0, description="domain adaptation: cross-entropy of the classifier "
                                         "on the source images translated into the target domain, with the source "
                                         "labels (not in the paper: 0 unless set)")


class OptimConfig(_Section):
    lr: float = Field(1e-4, gt=0.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_policy: Literal["constant", "step", "linear"] = "constant"
    lr_step_size: int = Field(100_000, ge=1, description="step policy: multiply lr by lr_gamma every this many steps")
    lr_gamma: float = Field(0.5, gt=0.0, le=1.0)
    lr_decay_start: int = Field(0, ge=0, description="linear policy: lr decays linearly to 0 from this step to max_steps")
    fused: bool = Field(False, description="fused Adam kernels (CUDA)")


DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class DataConfig(_Section):
    root: str = Field("data/demo/street", description="data set folder: <root>/<domain>/<split>/ or the CycleGAN layout <root>/trainA/")
    domain_a: str = Field("day", min_length=1, description="domain folder name of x1 (CycleGAN layout: the letter A)")
    domain_b: str = Field("night", min_length=1, description="domain folder name of x2 (CycleGAN layout: the letter B)")
    domains: list[str] = Field(
        default_factory=list, description="N-domain model: the domain folder names, any number from 2, one shared "
                                          "latent space; empty = the two domains domain_a and domain_b")
    image_size: int = Field(128, ge=4, description="side of the square training crop; a multiple of 4")
    load_size: int = Field(0, ge=0, description="resize the shorter side to this before cropping; 0 = image_size")
    flip: bool = True
    loader_workers: int = Field(0, ge=0)
    in_memory: bool = Field(False, description="keep each decoded training image in memory after its first use "
                            "(small data sets such as digits: no decoding per step)")

    @model_validator(mode="after")
    def _domain_names(self) -> "DataConfig":
        if not self.domains:
            return self
        if len(self.domains) < 2:
            raise ValueError(f"domains lists {len(self.domains)} domain; a translation needs at least 2")
        repeated = sorted({name for name in self.domains if self.domains.count(name) > 1})
        if repeated:
            raise ValueError(f"domains lists {', '.join(repeated)} more than once")
        for name in self.domains:
            # Domain names key the networks' weights: no dots (module paths), no path separators.
            if not DOMAIN_NAME.fullmatch(name):
                raise ValueError(f"domain name {name!r}: use letters, digits, '_' and '-' (starting with a letter or digit)")
        return self

    @model_validator(mode="after")
    def _sizes(self) -> "DataConfig":
        if self.image_size % 4:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of 4 (two stride-2 layers)")
        if self.load_size and self.load_size < self.image_size:
            raise ValueError(f"load_size ({self.load_size}) must be 0 or at least image_size ({self.image_size})")
        return self


class TrainConfig(_Section):
    out_dir: str = "runs/street-scenes"
    max_steps: int = Field(100_000, ge=1)
    batch_size: int = Field(1, ge=1, description="images per domain per step (per worker when distributed)")
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(3, ge=1, description="numbered checkpoints kept besides latest.pt")
    sample_count: int = Field(4, ge=1, description="images per domain in the sample grid saved with each checkpoint")
    log_every: int = Field(50, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    deterministic: bool = False
    compile: bool = Field(False, description="torch.compile the networks (falls back to eager if compilation fails)")
    threads: int = Field(0, ge=0, description="CPU threads for PyTorch's operators; 0 = PyTorch's default (all cores). "
                         "Runs sharing a machine: one each (more oversubscribes the cores)")
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="keep an exponential moving average of the generator's "
                             "and discriminators' weights with this decay per step (e.g. 0.999); translation, evaluation "
                             "and the adaptation classifier then use the averaged weights. 0 = off")


class DistributedConfig(_Section):
    """Ray Train settings (``unit train --workers N`` and the pipeline); docs: infra/cluster/README.md.

    Each worker is one DDP rank training on its own interleaved share of the sample stream,
    so one step consumes ``workers x train.batch_size`` pairs per domain (the global batch)
    and DDP averages the gradients over it: N workers with batch b make the same updates
    as one process with batch N*b. ``optim.lr`` is used as given, never rescaled
    automatically; the paper's 1e-4 was tuned at global batch 1. For Adam the usual rule
    is square-root scaling (lr x sqrt(global batch)); GAN balance is fragile, so check the
    sample grids when changing it, and divide ``train.max_steps`` by the global batch to
    see the same number of images.
    """

    workers: int = Field(1, ge=1, description="training workers (DDP ranks); 1 = single process, no Ray")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL; false = CPU workers, gloo. "
                                             "Workers use the device Ray assigns (train.device is for 1 worker)")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(1.0, ge=0.0, description="only with use_gpu")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of the workers: PACK fills a node first, SPREAD uses many nodes")
    storage_path: str = Field("runs/ray", description="Ray Train storage: a folder (shared by all nodes) or s3://bucket/prefix")
    storage_endpoint_url: str = Field("", description="S3-compatible endpoint for an s3:// storage_path; empty = AWS")
    run_name: str = Field("", pattern=r"^[A-Za-z0-9._-]*$",
                          description="run folder under storage_path; empty = the name of train.out_dir")
    max_failures: int = Field(2, ge=-1, description="restarts from the latest checkpoint after a worker dies; -1 = unlimited")
    object_store_memory_mb: int = Field(512, ge=80, description="object store of a Ray instance started here "
                                                                  "(not used when RAY_ADDRESS names a cluster)")

    @model_validator(mode="after")
    def _endpoint_needs_s3(self) -> "DistributedConfig":
        if self.storage_endpoint_url:
            if not self.storage_path.startswith("s3://"):
                raise ValueError(f"storage_endpoint_url is set but storage_path ({self.storage_path!r}) is not s3://bucket/prefix")
            if not self.storage_endpoint_url.startswith(("http://", "https://")):
                raise ValueError(f"storage_endpoint_url ({self.storage_endpoint_url!r}) must start with http:// or https://")
        return self


class EvaluationConfig(_Section):
    """``unit evaluate``: which test data and which metrics."""

    split: str = Field("test_paired", min_length=1, description="split of data.root to evaluate on")
    pixel_tolerance: int = Field(16, ge=0, le=255, description="paired pixel accuracy: |colour - truth| <= this, every channel")
    report_images: int = Field(8, ge=0, description="images per direction in the visual report")
    adaptation_classifier: Literal["target", "translated", "ensemble"] = Field(
        "target", description="domain adaptation: read a target image through the target discriminator's path (the "
        "paper), translated into the source domain through the source path, or the mean of both readings' probabilities")
    inception_weights: str = Field("", description="local pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth) for FID/KID; empty = skip those metrics")


class TrackingConfig(_Section):
    """MLflow experiment tracking and model registry."""

    tracking_uri: str = Field("", description="MLflow tracking URI; empty = MLFLOW_TRACKING_URI, else MLflow's local default (sqlite:///mlflow.db)")
    experiment: str = Field("street-scenes", min_length=1)
    registered_model: str = Field("unit-street-scenes", min_length=1)
    primary_metric: str = Field("a2b/pixel_accuracy", min_length=1, description="evaluation metric deciding the champion alias")
    higher_is_better: bool = True


def _legacy_ingest(value: Any) -> Any:
    """The deprecated ``{kind, args: [...]}`` form as typed settings (see the module docstring)."""
    if not isinstance(value, dict) or "args" not in value:
        return value
    kind, argv = value.get("kind", "demo-street"), value["args"]
    if not isinstance(argv, list):
        raise ValueError(f"args (deprecated) must be a list of command-line strings, got {type(argv).__name__}")
    try:
        settings = legacy_args(kind, argv)
    except ValueError as exc:
        raise ValueError(f"args (deprecated form of the ingest settings): {exc}") from None
    converted = {"kind": kind, **settings, **{key: item for key, item in value.items() if key not in ("kind", "args")}}
    try:  # the new form as it would be written: typed values, defaults left out
        typed = INGEST_ADAPTER.validate_python(converted).model_dump(mode="json", exclude_defaults=True)
    except ValidationError:  # shown by the validation that follows, naming the key
        typed = converted
    shown = {"kind": kind, **{key: item for key, item in typed.items() if key not in ("kind", "requires")}}
    warnings.warn(f"ingest.args (a list of command-line strings) is deprecated: in params.yaml and presets, write "
                  f"the settings as keys instead, e.g. ingest: {settings_yaml(shown)} (configurations stored in "
                  f"older checkpoints are translated the same way)", FutureWarning, stacklevel=2)
    return converted


#: The pipeline's ingest stage: ``unit ingest <kind> ... --out <data.root>`` with these settings.
IngestConfig = Annotated[IngestSettings, BeforeValidator(_legacy_ingest)]


class UnitConfig(_Section):
    name: str = Field("street-scenes", pattern=r"^[A-Za-z0-9._-]+$", description="the preset's name")
    seed: int = 0
    ingest: IngestConfig = DemoStreetIngest(train=500, test=16, size=(64, 64))
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _domains_fit_model(self) -> "UnitConfig":
        unknown = sorted(set(self.model.domain_channels) - set(self.data.domains))
        if unknown:
            listed = ", ".join(self.data.domains) or "none: a two-domain model uses channels_a and channels_b"
            raise ValueError(f"model.domain_channels names {', '.join(unknown)}, not in data.domains ({listed})")
        if self.model.generator == "conv32" and self.data.image_size != 32:
            raise ValueError(f"model.generator conv32 takes 32x32 images (its 8x8 conv makes a 1x1 code): "
                             f"data.image_size is {self.data.image_size}")
        if self.model.num_classes and len(self.domains()) != 2:
            raise ValueError("model.num_classes > 0 (domain adaptation) needs exactly two domains: source and target")
        return self

    def domains(self) -> dict[str, str]:
        """Each domain's key in the networks (its slot) and its folder name under data.root, in order.

        Two-domain models (data.domains empty) keep the slots ``a`` and ``b`` of x1 and x2
        (``a2b`` metrics, ``--direction``, checkpoints written before N-domain models);
        N-domain models are keyed by the domain names themselves.
        """
        if self.data.domains:
            return {name: name for name in self.data.domains}
        return {"a": self.data.domain_a, "b": self.data.domain_b}

    def channels(self) -> dict[str, int]:
        """Image channels (1 gray, 3 RGB) of each domain slot."""
        if self.data.domains:
            return {name: self.model.domain_channels.get(name, 3) for name in self.data.domains}
        return {"a": self.model.channels_a, "b": self.model.channels_b}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """``{"model.width": 64, ...}``: for experiment trackers and ``dvc params``."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, item in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, item)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


def format_errors(source: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = list(item["loc"])
        if loc[:1] == ["ingest"] and len(loc) > 1 and loc[1] in INGEST_KINDS:
            del loc[1]  # the tag of the ingest kind's settings model: ingest.size, not ingest.demo-street.size
        if item["type"] == "union_tag_invalid":
            loc.append("kind")
        key = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.max_steps=100")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {yaml_problem(exc)}") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw config dict."""
    for text in overrides:
        parts, value = _parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def config_from_dict(data: dict[str, Any], source: str = "configuration") -> UnitConfig:
    try:
        return UnitConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML parse error: where (1-based line and column) and what, without the parser's context dump."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Sections merge key by key; any other value (lists included) replaces the base's.

    A section whose ``kind`` changes (``ingest``) replaces the base's: the settings of one
    kind mean nothing to another.
    """
    merged = dict(base)
    for key, value in update.items():
        below = merged.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and value.get("kind", below.get("kind")) == below.get("kind"):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_folder(params_path: str | Path) -> Path:
    return Path(params_path).parent / "presets"


def preset_names(params_path: str | Path) -> list[str]:
    return sorted(p.stem for p in preset_folder(params_path).glob("*.yaml"))


#: The paper's ablations (section 4, Fig. 2) by name, as the settings each one changes. Loss terms of each:
#:   full: GAN + KL + L1 reconstruction + KL + L1 cycle, the innermost blocks shared (model.n_shared);
#:   no-sharing: the paper's "no weight sharing", which also drops the reconstruction streams (their
#:     KL and L1) and the cycle streams' KL: GAN + L1 cycle, no shared blocks: CycleGAN's objective;
#:   no-sharing-keep-vae: the shared blocks alone removed, every loss term kept (not in the paper);
#:   no-cycle: GAN + KL + L1 reconstruction, the cycle streams off, sharing kept.
VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (),
    "no-sharing": ("model.n_shared=0", "loss.recon=0", "loss.kl=0", "loss.kl_cycle=0"),
    "no-sharing-keep-vae": ("model.n_shared=0",),
    "no-cycle": ("loss.cycle=0", "loss.kl_cycle=0"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, preset: str | None = None,
                variant: str | None = None) -> UnitConfig:
    """Load and validate ``params.yaml`` (or the defaults when ``path`` is None).

    ``preset``: ``presets/<preset>.yaml`` beside ``path``, merged over it section by
    section; ``variant``: one of :data:`VARIANTS`, applied over the preset; ``overrides``
    (``section.key=value``) apply last.
    """
    if variant is not None and variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    overrides = [*VARIANTS.get(variant or "full", ()), *(overrides or [])]
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data = read_mapping(Path(path))
        source = str(path)
    if preset:
        if path is None:
            raise ConfigError(f"preset {preset!r} needs a params file beside a presets/ folder")
        preset_path = preset_folder(path) / f"{preset}.yaml"
        if not preset_path.is_file():
            known = ", ".join(preset_names(path)) or "none"
            raise ConfigError(f"{preset_path}: no such preset (presets: {known})")
        data = _merge(data, read_mapping(preset_path))
        source = f"{preset_path} over {source}"
    if overrides:
        data = apply_overrides(data, overrides)
        source += f" (variant {variant}, with --set overrides)" if variant else " (with --set overrides)"
    return config_from_dict(data, source)
