"""Typed schemas for conf/ (Hydra structured configs).

The YAML files under conf/ hold every default; these dataclasses only give the tree its shape and types, so a wrong
type (``model.generation.max_new_tokens=abc``), a misspelt key or an unknown enum value fails at composition with
Hydra's own message. Fields are ``MISSING`` where the YAML must supply a value (house rule: Python never repeats a YAML
default). Only dataclasses and omegaconf are imported here: this module is on the ``--help`` path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from lifecycle import console

SCHEMA_NAME = "schema"


class StorageKind(str, Enum):
    local = "local"
    s3 = "s3"


class BackendKind(str, Enum):
    sqlite = "sqlite"
    postgresql = "postgresql"


class ModelSource(str, Enum):
    gguf_package = "gguf_package"  # a GGUF file shipped inside an installed Python package (offline)
    hub = "hub"  # a Hugging Face hub id, read from the local cache or downloaded


class ChatFormat(str, Enum):
    chat_template = "chat_template"  # the tokenizer's own chat template (instruct models)
    plain = "plain"  # a plain text prompt (GPT-2 style base models: no chat template)
    eos_turns = "eos_turns"  # turns separated by the EOS token (DialoGPT)


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    int8 = "int8"  # float32 weights quantized to 8 bits on load (CPU; core.quantization)


class ServeDType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    int8 = "int8"


class ServeDevice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ServeBackend(str, Enum):
    local = "local"  # one process on this machine: python -m serving
    ray = "ray"  # a Ray Serve application on a running Ray cluster (serving.replicas)


class ExportDType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"  # half the size; the bundle's README reports the measured cost


@dataclass
class PathsConfig:
    root: str = MISSING
    backend_db: str = MISSING
    artifacts: str = MISSING
    staging: str = MISSING
    logs: str = MISSING
    model_cache: str = MISSING


@dataclass
class StorageConfig:
    kind: StorageKind = MISSING
    artifact_uri: str = MISSING
    endpoint_url: Optional[str] = None
    bucket: Optional[str] = None
    prefix: str = ""
    region: str = "us-east-1"  # the one default (conf/storage/s3.yaml names it only in a comment): local needs one too
    create_bucket: bool = False


@dataclass
class BackendConfig:
    kind: BackendKind = MISSING
    uri: str = MISSING  # never with a password: PostgreSQL's comes from PGPASSWORD
    host: Optional[str] = None
    port: Optional[int] = None
    database: Optional[str] = None
    user: Optional[str] = None


@dataclass
class GenerationConfig:
    max_new_tokens: int = MISSING
    temperature: float = MISSING  # 0 means greedy decoding
    top_p: float = MISSING
    repetition_penalty: float = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    source: ModelSource = MISSING
    hub_id: Optional[str] = None
    package: Optional[str] = None
    gguf_file: Optional[str] = None
    chat_format: ChatFormat = MISSING
    dtype: DType = MISSING
    threads: Optional[int] = None  # None leaves torch's default
    max_input_tokens: int = MISSING
    generation: GenerationConfig = field(default_factory=GenerationConfig)


@dataclass
class ModeConfig:
    name: str = MISSING
    description: str = MISSING
    stages: list[str] = MISSING


@dataclass
class PromptConfig:
    name: str = MISSING  # name in MLflow's prompt registry
    description: str = MISSING
    system: Optional[str] = None
    template: str = MISSING  # MLflow double-brace format: {{question}}


@dataclass
class EvalQuestion:
    question: str = MISSING
    expected_answer: Optional[str] = None
    expected_facts: list[str] = field(default_factory=list)


@dataclass
class Thresholds:
    min_non_empty_rate: float = MISSING
    max_answer_chars: int = MISSING
    min_fact_agreement: float = MISSING
    min_relevance: float = MISSING


@dataclass
class EvalConfig:
    name: str = MISSING
    questions: list[EvalQuestion] = MISSING
    dataset: Optional[str] = None  # an evaluation dataset already in MLflow, by name, instead of ``questions``
    guidelines: dict[str, str] = field(default_factory=dict)  # name -> a rule the Guidelines judge checks
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass
class JudgeSettings:
    model: Optional[str] = None  # the judge model's name on the endpoint; None: no judges, no network
    base_url: Optional[str] = None  # an OpenAI-compatible endpoint ending in /v1; None: OpenAI's (or OPENAI_API_BASE)
    key_env: Optional[str] = MISSING  # the variable holding the key (conf/config.yaml); None: the endpoint needs none


@dataclass
class ExperimentSettings:
    register_all_prompts: bool = MISSING
    prompt_alias: str = MISSING
    progress_bar: bool = MISSING
    judge: JudgeSettings = field(default_factory=JudgeSettings)


@dataclass
class SmokeSettings:
    question: str = MISSING
    max_new_tokens: int = MISSING
    min_answer_chars: int = MISSING


@dataclass
class DeploySettings:
    alias: str = MISSING
    artifact_name: str = MISSING
    smoke: SmokeSettings = field(default_factory=SmokeSettings)


@dataclass
class PromoteSettings:
    alias: str = MISSING  # the champion: what serve and export use
    default_margin: float = MISSING  # how far below the champion's mean score a challenger's may be...
    margins: dict[str, float] = field(default_factory=dict)  # ...per score (its scorer's name), where it differs


@dataclass
class MonitorSettings:
    since: Optional[str] = None  # ISO 8601 or epoch ms; None: where the last monitor run ended
    until: Optional[str] = None  # None: now
    max_traces: int = MISSING
    default_margin: float = MISSING
    margins: dict[str, float] = field(default_factory=dict)
    harvest: bool = MISSING


@dataclass
class TestSettings:
    compare_dtype: Optional[ServeDType] = None  # e.g. bfloat16: report its agreement with float32


@dataclass
class Autoscaling:
    min: int = 1
    max: int = MISSING
    target_ongoing: float = 16.0  # requests in flight per replica that Ray Serve aims at


@dataclass
class RaySettings:
    address: Optional[str] = None  # host:port of the cluster's head; None: RAY_ADDRESS
    app_name: str = MISSING
    cpus_per_replica: float = MISSING


@dataclass
class ServeSettings:
    run: bool = MISSING
    backend: ServeBackend = MISSING
    replicas: int = MISSING
    autoscaling: Optional[Autoscaling] = None  # None: serve.replicas, fixed
    ray: RaySettings = field(default_factory=RaySettings)
    host: str = MISSING
    port: int = MISSING
    dtype: Optional[ServeDType] = None  # None: the model's own
    device: ServeDevice = MISSING
    traces: bool = MISSING
    mlflow_port: int = MISSING
    tracking_port: int = MISSING


@dataclass
class ExportConfig:
    model_uri: str = MISSING
    output_dir: str = MISSING
    dtype: ExportDType = MISSING
    vendor_wheels: bool = MISSING
    wheelhouse: str = MISSING
    base_image: str = MISSING
    port: int = MISSING


@dataclass
class SweepSettings:
    rank_by: list[str] = MISSING  # metric names, the first is the main score; "-name": lower is better
    best_alias: str = MISSING


@dataclass
class Config:
    data_dir: str = MISSING
    experiment_name: str = MISSING
    registered_model_name: str = MISSING
    tracking_uri: str = MISSING
    verbose: bool = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mode: ModeConfig = field(default_factory=ModeConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: ExperimentSettings = field(default_factory=ExperimentSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    promote: PromoteSettings = field(default_factory=PromoteSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    test: TestSettings = field(default_factory=TestSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    export: ExportConfig = field(default_factory=ExportConfig)
    sweep: SweepSettings = field(default_factory=SweepSettings)


def url_as_local_folder(path: str) -> str | None:
    """Why ``path`` cannot be a local folder, with the command meant, when it is a URL: the original system took
    ``--data-dir s3://bucket/prefix`` to mean "artifacts in that bucket"."""
    scheme, separator, rest = str(path).partition("://")
    if not separator:
        return None
    bucket, _, prefix = rest.partition("/")
    storage = f"storage=s3 storage.bucket={bucket}" + (
        f" storage.prefix={prefix.strip('/')}" if prefix.strip("/") else ""
    )
    return (
        f"data_dir={path} is a URL, but data_dir is a local folder (the SQLite backend, logs, converted models); "
        f"nothing was written. For artifacts in {scheme}://{rest}, keep data_dir local and run:\n"
        f"  {console.command()} {storage}\n"
        "(with storage.endpoint_url=... for a store other than the default one; README: 'Artifacts in S3')"
    )


def _abspath(path: str, _root_: Any = None) -> str:
    """A local folder as an absolute path, relative to the folder the command ran in (``hydra.runtime.cwd``, which
    a Ray worker, started elsewhere, also knows); a URL is refused (lifecycle.checks says so before Hydra writes)."""
    if problem := url_as_local_folder(path):
        raise ValueError(problem)
    launched = OmegaConf.select(_root_, "hydra.runtime.cwd", default=None) if _root_ is not None else None
    return str((Path(launched or ".") / Path(path).expanduser()).resolve())


def _server_default(name: str) -> Any:
    """``${server_default:port}``: a default the standalone server owns (``python -m serving`` runs without Hydra,
    in an exported image too), read from its settings (or, for its replicas on Ray, its fleet) so that it is said
    once."""
    import dataclasses

    from serving.http.settings import Settings
    from serving.replicas import Fleet

    if name in Settings.model_fields:
        return Settings.model_fields[name].default
    return {f.name: f.default for f in dataclasses.fields(Fleet)}[name]


def _export_default(name: str) -> Any:
    """``${export_default:base_image}``: a default the standalone exporter (``python -m export``) owns."""
    import dataclasses

    from export.bundle import ExportSettings

    value = {f.name: f.default for f in dataclasses.fields(ExportSettings)}[name]
    return str(value) if isinstance(value, Path) else value


SETTINGS_GROUP = "genai_lifecycle.settings"  # entry points: name -> the settings dataclass a plugin stage reads


def plugin_settings() -> dict[str, type]:
    """The settings third-party stages bring, by entry point (``genai_lifecycle.settings``): each a dataclass whose
    fields have defaults, composed as ``cfg.<name>`` and overridden as ``<name>.<field>=...`` like the built-in ones."""
    import dataclasses
    from importlib.metadata import entry_points

    found = {}
    for entry in entry_points(group=SETTINGS_GROUP):
        settings = entry.load()
        if not dataclasses.is_dataclass(settings):
            raise TypeError(f"entry point {entry.name} = {entry.value} ({SETTINGS_GROUP}) is not a dataclass")
        found[entry.name] = settings
    return found


def schema() -> type:
    """``Config``, with a key for each plugin's settings (``plugin_settings``); a plugin may not take a built-in key."""
    import dataclasses

    extra = plugin_settings()
    if taken := sorted(set(extra) & {f.name for f in dataclasses.fields(Config)}):
        raise ValueError(
            f"plugin settings {taken} ({SETTINGS_GROUP}) would replace this project's own config keys: give the "
            "entry point another name"
        )
    if not extra:
        return Config
    fields = [(name, cls, field(default_factory=cls)) for name, cls in sorted(extra.items())]
    return dataclasses.make_dataclass("Config", fields, bases=(Config,))


def register_configs() -> None:
    """Store the schema (with the plugins' settings) and register resolvers; safe to call more than once."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("abspath"):
        OmegaConf.register_new_resolver("abspath", _abspath)
        OmegaConf.register_new_resolver("server_default", _server_default)
        OmegaConf.register_new_resolver("export_default", _export_default)
    ConfigStore.instance().store(name=SCHEMA_NAME, node=schema())


def to_container(cfg: Any) -> dict:
    """Resolved plain-dict view of a config (enums as their names)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
