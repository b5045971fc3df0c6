"""Load the base model and tokenizer, and wrap the model for LoRA or full fine-tuning.

One code path for every base model: ``builtin:NAME`` resolves to the package's ``assets/NAME/``
directory (the shipped tiny Qwen2), anything else is a hub id or a local/mounted directory handed to
``AutoModelForCausalLM`` / ``AutoTokenizer`` unchanged (``HF_TOKEN`` from the environment for gated
repos). So the smoke test exercises exactly the loading code that loads Qwen2.5-Coder-1.5B.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainpod.config.schema import TrainingConfig
from trainpod.errors import TrainpodError

ASSETS = Path(__file__).resolve().parent / "assets"
BUILTIN = "builtin:"


def resolve_base_model(ref: str) -> str:
    """``builtin:NAME`` → the shipped asset directory; other references pass through."""
    if ref.startswith(BUILTIN):
        name = ref[len(BUILTIN):]
        path = ASSETS / name
        if not (path / "config.json").is_file():
            known = sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file()) if ASSETS.is_dir() else []
            raise TrainpodError(f"unknown builtin model '{name}' (base_model = {ref!r})",
                                f"builtin models: {', '.join(known) or '(none)'}")
        return str(path)
    return ref


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def load_tokenizer(ref: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_base_model(ref)
    try:
        tok = AutoTokenizer.from_pretrained(path, token=os.environ.get("HF_TOKEN") or None)
    except OSError as exc:
        raise TrainpodError(f"cannot load tokenizer for base_model {ref!r}: {exc}",
                            "use a hub id, a local directory with tokenizer files, or builtin:tiny-qwen2") from None
    if tok.eos_token_id is None:
        raise TrainpodError(f"tokenizer of {ref!r} has no eos token", "set eos_token in tokenizer_config.json")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(config: TrainingConfig, device: Any, init_from: Path | None = None) -> Any:
    """The base model on ``device``, wrapped with LoRA adapters unless ``finetune = "full"``.

    LoRA: frozen base weights in the run's precision (halves memory on GPU), adapters in fp32
    (peft's default), compute under autocast. Full: fp32 master weights, compute under autocast.
    ``init_from``: a previous run's output directory (a pipeline's earlier stage) whose adapter or full
    weights training starts from instead of a fresh adapter / the base weights.
    """
    import torch
    from transformers import AutoModelForCausalLM

    ref = config.expert.base_model
    lora = config.finetune == "lora"
    dtype = torch_dtype(config.precision) if lora else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_base_model(ref), dtype=dtype, token=os.environ.get("HF_TOKEN") or None,
        )
    except OSError as exc:
        raise TrainpodError(f"cannot load base_model {ref!r}: {exc}",
                            "use a hub id (with HF_TOKEN for gated models), a local directory, or builtin:NAME") from None
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if init_from is not None:
        check_previous(config, init_from)
        if lora:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                raise TrainpodError(f"init_from {init_from}: cannot load its adapter into {ref!r}: {exc}",
                                    "the previous stage must train a LoRA adapter of the same base model") from None
        else:
            load_weights(model, init_from)
        return model.to(device)
    if lora:
        from peft import LoraConfig, get_peft_model

        present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [m for m in config.lora.target_modules if m not in present]
        if missing:
            raise TrainpodError(
                f"lora '{config.lora_name}': target_modules {missing} do not exist in {ref!r}",
                "Qwen2/Llama-style models have q_proj k_proj v_proj o_proj gate_proj up_proj down_proj",
            )
        model = get_peft_model(model, LoraConfig(
            r=config.lora.r, lora_alpha=config.lora.lora_alpha, lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules), task_type="CAUSAL_LM",
        ))
    return model.to(device)


def save_weights(model: Any, directory: Path) -> None:
    """peft's adapter files, or ``model.safetensors`` + config for a full fine-tune."""
    model.save_pretrained(str(directory), safe_serialization=True)


def load_weights(model: Any, directory: Path) -> None:
    """Load weights written by :func:`save_weights` back into ``model`` (exact, for resume)."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        state = load_file(str(directory / "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise TrainpodError(f"{directory}: adapter does not match the model (unexpected {unexpected[:3]})")
        return
    state = load_file(str(directory / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise TrainpodError(f"{directory}: weights do not match the model "
                            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_FILES = ("config.json", "model.safetensors")
PREVIOUS_FILES = (*ADAPTER_FILES, *FULL_FILES, "metadata.json")  # what init_from needs from an output root


def check_previous(config: TrainingConfig, directory: Path) -> None:
    """Refuse a previous output this run cannot start from, naming the path and what is wrong.

    Why before loading: peft and transformers load a mismatched adapter or checkpoint with warnings (or
    silently ignore keys), and a stage that quietly starts from scratch is worse than one that fails.
    """
    import json

    lora = config.finetune == "lora"
    need = ADAPTER_FILES if lora else FULL_FILES
    missing = [n for n in need if not (directory / n).is_file()]
    if missing:
        kind = "LoRA adapter" if lora else "full weights"
        raise TrainpodError(f"init_from {directory}: no {kind} there (missing {', '.join(missing)})",
                            "init_from must be the output root of a finished run of the same finetune kind "
                            f"(finetune = {config.finetune!r}); did the previous stage succeed?")
    unreadable = [n for n in need if not os.access(directory / n, os.R_OK)]
    if unreadable:  # safetensors reports an unreadable file as "No such file or directory"
        raise TrainpodError(f"init_from {directory}: {', '.join(unreadable)} not readable by uid {os.getuid()}",
                            "run every stage as the same user (safetensors writes its files with mode 0600), "
                            "or make the previous output readable (chmod -R a+r)")
    meta_path = directory / "metadata.json"
    if meta_path.is_file():
        try:
            base = json.loads(meta_path.read_text(encoding="utf-8")).get("model", {}).get("base")
        except (ValueError, AttributeError):
            base = None
        if base and base != config.expert.base_model:
            raise TrainpodError(f"init_from {directory}: trained on base model {base!r}, "
                                f"this run uses {config.expert.base_model!r}",
                                "pipeline stages that pass an adapter on must share the expert's base_model")
    if not lora:
        return
    try:
        adapter = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TrainpodError(f"init_from {directory}/adapter_config.json: not valid JSON ({exc})") from None
    ours = {"target_modules": sorted(config.lora.target_modules), "r": config.lora.r,
            "lora_alpha": config.lora.lora_alpha}
    theirs = {"target_modules": sorted(adapter.get("target_modules") or []), "r": adapter.get("r"),
              "lora_alpha": adapter.get("lora_alpha")}
    differ = [f"{k} {theirs[k]} vs {ours[k]}" for k in ours if theirs[k] != ours[k]]
    if differ:
        raise TrainpodError(f"init_from {directory}: the adapter does not match lora '{config.lora_name}' "
                            f"({'; '.join(differ)})",
                            "give both stages the same [lora.*] table (a resumed run must rebuild the same adapter)")
