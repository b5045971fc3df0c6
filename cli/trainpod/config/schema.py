"""The one schema of ``training.toml`` and of the resolved training configuration.

Every table kind is a pydantic model with ``extra="forbid"``; the loader turns pydantic's errors into
messages that name the file, the table and the key. Cross-checks between a preset and its hardware
profile live here too (``TrainingConfig._cross_checks``), so the launcher and the trainer (which
re-validates the RunSpec with these same models) agree on what is valid.
"""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Device = Literal["cpu", "cuda", "mps"]
Precision = Literal["fp32", "fp16", "bf16"]
Remote = Literal["local", "docker", "runpod"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_env_keys(env: dict[str, str]) -> None:
    for key in env:
        if not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ValueError(f"env key {key!r} is not a valid environment variable name")


DEFAULT_CUDA_VERSION = "13.0"  # torch 2.13 on PyPI (the CUDA image's torch) is built for CUDA 13.0


class Hardware(Strict):
    """``[hardware.NAME]``: what a machine (or cloud GPU shape) can do, and how to package for it.

    Profiles in the format users bring (``config-format.md``) name no GPU count or image: a ``cuda``
    profile then means one GPU in the CUDA image, an ``mps`` one runs outside containers (image "none").
    """

    name: str
    device: Device
    available_memory_gb: float = Field(gt=0)
    max_batch_size: int = Field(ge=1)
    max_sequence_length: int = Field(ge=16)
    supports_fp16: bool = False
    supports_bf16: bool = False
    supports_gradient_checkpointing: bool = True
    max_lora_rank: int = Field(default=64, ge=1)
    recommended_gradient_accumulation: int = Field(default=1, ge=1)
    gpu_count: int = Field(default=0, ge=0, le=64)
    nnodes: int = Field(default=1, ge=1, le=64)
    # training processes per node; defaults to one per GPU (or 1 on CPU). Set it on CPU to run
    # several gloo ranks on one machine.
    nproc_per_node: int | None = Field(default=None, ge=1, le=64)
    # memory guards: the trainer checkpoints and stops above these
    ram_percent: float = Field(default=90.0, gt=0, le=100)
    gpu_percent: float = Field(default=95.0, gt=0, le=100)
    # packaging
    image: Literal["cpu", "cuda", "none"] = "cpu"
    base_image: str | None = None
    cuda_version: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    cuda_arch_list: str | None = Field(default=None, pattern=r"^\d+\.\d+(\+PTX)?([ ;]\d+\.\d+(\+PTX)?)*$")
    torch_index_url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    # cloud
    runpod_gpu_type_id: str | None = None
    runpod_cloud_type: Literal["ALL", "SECURE", "COMMUNITY"] = "ALL"
    runpod_fallback_gpu_type_ids: list[str] = Field(default_factory=list)
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    # dense bf16 peak TFLOPS per GPU: the RunPod duration heuristic's hardware fact (None = no estimate from steps)
    peak_tflops: float | None = Field(default=None, gt=0)
    container_disk_gb: int = Field(default=30, ge=5)
    # multi-node: how long torchrun waits for every node to join (join_timeout); a node that never starts
    # fails the run after this, instead of the others waiting (and billing) without bound
    rendezvous_timeout_s: int = Field(default=600, ge=10, le=3600)
    # hardware that exists but cannot run (yet)
    supported: bool = True
    unsupported_reason: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _device_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        device = data.get("device")
        if "gpu_count" not in data:
            data["gpu_count"] = 1 if device == "cuda" else 0
        if "image" not in data and device in ("cuda", "mps"):
            data["image"] = "cuda" if device == "cuda" else "none"
            if device == "cuda":
                data.setdefault("cuda_version", DEFAULT_CUDA_VERSION)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Hardware:
        if self.device == "cuda":
            if self.gpu_count < 1:
                raise ValueError("device = 'cuda' needs gpu_count >= 1")
            if self.image == "cuda" and not self.cuda_version:
                raise ValueError("a CUDA image needs cuda_version (e.g. '12.4'): RunPod pods are matched on it")
        elif self.device == "cpu" and self.gpu_count:
            raise ValueError("device = 'cpu' must have gpu_count = 0")
        if self.image == "cuda" and self.device != "cuda":
            raise ValueError("image = 'cuda' only makes sense with device = 'cuda'")
        if self.device == "cuda" and self.nproc_per_node and self.nproc_per_node > self.gpu_count:
            raise ValueError(f"nproc_per_node {self.nproc_per_node} exceeds gpu_count {self.gpu_count}")
        if self.device == "mps" and self.procs_per_node > 1:
            raise ValueError("mps runs one process")
        if not self.supported and not self.unsupported_reason:
            raise ValueError("supported = false needs unsupported_reason saying why")
        _check_env_keys(self.env)
        return self

    @property
    def procs_per_node(self) -> int:
        return self.nproc_per_node or max(1, self.gpu_count)


_TEMPLATE_FIELDS = {"instruction", "input_section", "output", "context"}


class Expert(Strict):
    """``[experts.NAME]``: a specialised model: its base model and prompt format."""

    display_name: str
    role: str = ""
    group: str = ""
    base_model: str = Field(min_length=1)
    # the hub model is gated or private: a remote pod then receives HF_TOKEN (and only then)
    gated: bool = False
    context_window: int = Field(ge=16)
    specialization: str = ""
    prompt_template: str = "### Instruction:\n{instruction}\n{input_section}\n### Response:\n{output}"

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(f"prompt_template is not a valid format string: {exc}") from None
        unknown = names - _TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"prompt_template uses unknown placeholder(s) {sorted(unknown)}; "
                f"allowed: {sorted(_TEMPLATE_FIELDS)}"
            )
        if "output" not in names or "instruction" not in names:
            raise ValueError("prompt_template must contain {instruction} and {output}")
        if not v.rstrip().endswith("{output}"):
            raise ValueError("prompt_template must end with {output} (loss is taken on the response)")
        return v

    @model_validator(mode="after")
    def _gated(self) -> Expert:
        if self.gated and self.base_model.startswith("builtin:"):
            raise ValueError(f"gated = true is for a gated or private Hugging Face hub id; '{self.base_model}' ships "
                             "with trainpod and needs no HF_TOKEN (remove gated)")
        return self


class Lora(Strict):
    """``[lora.NAME]``: adapter shape."""

    r: int = Field(ge=1, le=1024)
    lora_alpha: int = Field(ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


class Hyperparameters(Strict):
    """``[hyperparameters.NAME]``: optimisation settings."""

    num_epochs: float = Field(default=1, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # transformers' scheduler names that need no extra arguments (what the users' format passes on to it)
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"] = "cosine"
    max_grad_norm: float = Field(default=1.0, gt=0)
    eval_steps: int = Field(default=50, ge=1)
    save_steps: int = Field(default=100, ge=1)
    # also checkpoint on a clock: a preempted spot pod (SIGTERM, SIGKILL ~5 s later) loses at most this much
    # work, however long a step or save_steps is. 0 = steps only.
    checkpoint_every_minutes: float = Field(default=10.0, ge=0)
    logging_steps: int = Field(default=10, ge=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    seed: int = 42


# the users' format (config-format.md) names the split files train_split/val_split/test_split
_SPLIT_ALIASES = {"train_split": "train", "val_split": "val", "test_split": "test"}


class Dataset(Strict):
    """``[datasets.NAME]``: where the data is and how to read it.

    ``train_split`` / ``val_split`` / ``test_split`` (the users' format) are accepted for ``train`` / ``val`` /
    ``test``; a split named without an extension (``"train"``) is the file ``train.jsonl``.
    """

    path: str = Field(min_length=1, description="directory: local path (relative to the TOML file) or s3://bucket/prefix")
    description: str = ""
    train: str = "train.jsonl"
    val: str | None = "val.jsonl"
    test: str | None = "test.jsonl"
    format: Literal["auto", "instruction", "text"] = "auto"
    on_bad_line: Literal["error", "skip"] = "error"
    quality_threshold: float | None = Field(default=None, ge=0, le=1)
    domains: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _split_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for alias, key in _SPLIT_ALIASES.items():
            if alias not in data:
                continue
            value = data.pop(alias)
            if key in data and data[key] != value:
                raise ValueError(f"{alias} = {value!r} and {key} = {data[key]!r} name the same split: keep one")
            data[key] = value
        return data

    @field_validator("train", "val", "test")
    @classmethod
    def _split_file(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip() or v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"{v!r}: a split is a file name inside the dataset's path, e.g. 'train.jsonl'")
        return v if "." in v.rsplit("/", 1)[-1] else f"{v}.jsonl"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if v.startswith("s3://"):
            bucket = v[5:].split("/", 1)[0]
            if not bucket:
                raise ValueError(f"{v!r} has no bucket: write s3://BUCKET/prefix")
        elif "://" in v:
            raise ValueError(f"{v!r}: only local paths and s3://bucket/prefix URIs are supported")
        return v

    @property
    def is_remote(self) -> bool:
        return self.path.startswith("s3://")


class Preset(Strict):
    """``[presets.NAME]``: one runnable combination of the tables above."""

    description: str = ""
    expert: str
    hardware: str
    dataset: str
    hyperparameters: str = "default"
    lora: str = "standard"
    finetune: Literal["lora", "full"] = "lora"
    sequence_length: int = Field(ge=16)
    batch_size: int = Field(ge=1)
    gradient_accumulation: int | None = Field(default=None, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    packing: bool = True
    deepspeed: str | None = None
    remote: Remote = "local"
    max_runtime_minutes: float | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    spot: bool = False
    overrides: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(Strict):
    """A preset with every reference resolved and every cross-check passed.

    This is what the RunSpec carries and what the trainer re-validates inside the container.
    """

    preset: str
    expert_name: str
    expert: Expert
    hardware_name: str
    hardware: Hardware
    dataset_name: str
    dataset: Dataset
    hyperparameters: Hyperparameters
    lora_name: str
    lora: Lora
    finetune: Literal["lora", "full"]
    sequence_length: int = Field(ge=16)
    batch_size: int = Field(ge=1)
    gradient_accumulation: int = Field(ge=1)
    precision: Precision
    gradient_checkpointing: bool
    packing: bool
    deepspeed: str | None = None
    max_runtime_minutes: float | None = None
    max_cost_usd: float | None = None
    spot: bool = False

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainingConfig:
        hw, where = self.hardware, f"hardware '{self.hardware_name}'"
        if not hw.supported:
            raise ValueError(f"{where} is not supported: {hw.unsupported_reason}")
        if self.batch_size > hw.max_batch_size:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds {where} max_batch_size {hw.max_batch_size}; "
                f"lower batch_size and raise gradient_accumulation to keep the effective batch"
            )
        if self.sequence_length > hw.max_sequence_length:
            raise ValueError(
                f"sequence_length {self.sequence_length} exceeds {where} max_sequence_length "
                f"{hw.max_sequence_length}"
            )
        if self.sequence_length > self.expert.context_window:
            raise ValueError(
                f"sequence_length {self.sequence_length} exceeds expert '{self.expert_name}' "
                f"context_window {self.expert.context_window}"
            )
        if self.finetune == "lora" and self.lora.r > hw.max_lora_rank:
            raise ValueError(
                f"lora '{self.lora_name}' r={self.lora.r} exceeds {where} max_lora_rank {hw.max_lora_rank}; "
                f"pick a smaller lora table"
            )
        if self.precision == "bf16" and not hw.supports_bf16:
            raise ValueError(f"precision 'bf16' is not supported by {where}; use 'auto', 'fp16' or 'fp32'")
        if self.precision == "fp16" and not hw.supports_fp16:
            raise ValueError(f"precision 'fp16' is not supported by {where}; use 'auto' or 'fp32'")
        if self.gradient_checkpointing and not hw.supports_gradient_checkpointing:
            raise ValueError(f"gradient_checkpointing is not supported by {where}; set it to false")
        if self.deepspeed and hw.device == "mps":
            raise ValueError("deepspeed does not run on mps")
        return self

    @property
    def world_size(self) -> int:
        return self.hardware.procs_per_node * self.hardware.nnodes

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.gradient_accumulation * self.world_size


class Job(Strict):
    """``[jobs.NAME]``: the user's own training command, run with trainpod's images, storage and guards.

    ``project_dir`` (relative to the TOML file) is copied into a project image layer on top of the
    hardware image; ``command`` runs there under ``launcher``. Custom code gets the container contract
    through ``TRAINPOD_DATA_DIR`` / ``TRAINPOD_OUTPUT_DIR`` / ``TRAINPOD_RESUME_DIR`` /
    ``TRAINPOD_STOP_GRACE_SECONDS`` (see ``trainpod.pod.contrib``).
    """

    description: str = ""
    hardware: str
    project_dir: str = Field(min_length=1)
    command: list[str] = Field(min_length=1, description="argv run in project_dir, e.g. ['python', 'train.py']")
    requirements: str | None = Field(default=None, description="requirements file, relative to project_dir")
    launcher: Literal["python", "torchrun", "deepspeed"] = "python"
    nproc_per_node: int = Field(default=1, ge=1, le=64)
    data: str | None = Field(default=None, description="local directory or s3://bucket/prefix")
    env: dict[str, str] = Field(default_factory=dict)
    remote: Remote = "local"
    max_runtime_minutes: float | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    spot: bool = Field(default=False, description="RunPod: an interruptible pod, relaunched on preemption "
                                                  "(the command resumes from its latest complete checkpoint)")
    stop_grace_seconds: float = Field(default=60.0, gt=0)
    sync_interval_seconds: float = Field(default=60.0, gt=0, description="how often the output dir is mirrored")
    log_sync_interval_seconds: float = Field(default=10.0, gt=0, description="how often the log and status.json go up")

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("command[0] is empty: give the program, e.g. ['python', 'train.py']")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Job:
        if self.launcher == "python" and self.nproc_per_node > 1:
            raise ValueError("nproc_per_node > 1 needs launcher = 'torchrun' or 'deepspeed'")
        if self.data is not None:
            Dataset._path(self.data)
        _check_env_keys(self.env)
        for key in self.env:
            if key.startswith("TRAINPOD_"):
                raise ValueError(f"env key {key!r}: TRAINPOD_* variables are set by trainpod itself")
        return self


class Pipeline(Strict):
    """``[pipelines.NAME]``: presets and/or jobs run in order on one backend, each reading the previous output."""

    description: str = ""
    stages: list[Name] = Field(min_length=1)
    remote: Remote | None = None

    @field_validator("stages")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({s for s in v if v.count(s) > 1})
        if dupes:
            raise ValueError(f"stage(s) {dupes} appear twice: --from STAGE must name one stage")
        return v


def resolve_precision(requested: str, hw: Hardware) -> Precision:
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if hw.device == "cpu":
        return "fp32"
    if hw.supports_bf16:
        return "bf16"
    if hw.supports_fp16:
        return "fp16"
    return "fp32"


TABLE_MODELS: dict[str, type[Strict]] = {
    "hardware": Hardware,
    "experts": Expert,
    "lora": Lora,
    "hyperparameters": Hyperparameters,
    "datasets": Dataset,
    "presets": Preset,
    "jobs": Job,
    "pipelines": Pipeline,
}
