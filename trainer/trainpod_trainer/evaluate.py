"""Evaluate a finished output directory: test-split loss / perplexity, ROUGE-L and BLEU of generations.

The output directory is self-describing: the trainer writes ``run_spec.json`` (the RunSpec, which
holds no secret) beside the adapter, so this needs nothing but the directory (and the dataset, found
through the spec or ``data_dir``). Generations are greedy and deterministic: the same output
directory always gives the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

from trainpod.contract import ENV_DATA_DIR
from trainpod.errors import TrainpodError
from trainpod.spec import RunSpec
from trainpod_trainer.data import collate, load_split, pack, render
from trainpod_trainer.metrics import corpus_bleu, rouge_l

SPEC_FILE = "run_spec.json"


def _load_model(spec: RunSpec, output: Path, device: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from trainpod_trainer.model import resolve_base_model

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()

    tok = AutoTokenizer.from_pretrained(str(output))
    base = resolve_base_model(spec.config.expert.base_model)
    token = os.environ.get("HF_TOKEN") or None
    if (output / "adapter_config.json").is_file():
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, token=token)
        model = PeftModel.from_pretrained(model, str(output))
    elif (output / "model.safetensors").is_file() or (output / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(str(output), dtype=torch.float32)
    else:
        raise TrainpodError(f"{output}: no adapter_config.json or model weights",
                            "evaluate a finished run's output directory (it has a DONE file)")
    return model.to(device).eval(), tok


def evaluate_output(output_dir: str | os.PathLike[str], *, samples: int = 8, split: str = "test",
                    data_dir: str | None = None, max_new_tokens: int = 96, device: str | None = None) -> dict[str, Any]:
    """Compute the metrics for ``output_dir``; returns a JSON-able dict."""
    import torch

    out = Path(output_dir)
    spec_path = out / SPEC_FILE
    if not spec_path.is_file():
        raise TrainpodError(f"{out}: no {SPEC_FILE}; is this a trainpod output directory?",
                            "pass the directory a run wrote (it holds metadata.json and DONE)")
    spec = RunSpec.load(spec_path)
    cfg = spec.config
    ds = cfg.dataset
    split_file = {"test": ds.test, "val": ds.val, "train": ds.train}[split]
    if not split_file:
        raise TrainpodError(f"dataset '{cfg.dataset_name}' has no {split} split", "use --split val or train")
    root = Path(data_dir or os.environ.get(ENV_DATA_DIR) or spec.storage.dataset)
    if str(root).startswith("s3://"):
        raise TrainpodError(f"dataset {root} is in S3", "pull it first (`trainpod data pull`) and pass --data DIR")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.monotonic()
    model, tok = _load_model(spec, out, dev)
    data = load_split(root / split_file, ds.format, ds.on_bad_line, cfg.expert.prompt_template, tok,
                      cfg.sequence_length, keep_records=True)

    total, count = 0.0, 0
    rows = pack(data.docs, cfg.sequence_length)
    with torch.no_grad():
        for i in range(0, len(rows), cfg.batch_size):
            b = collate(rows[i : i + cfg.batch_size], tok.pad_token_id)
            logits = model(input_ids=b["input_ids"].to(dev), position_ids=b["position_ids"].to(dev),
                           use_cache=False).logits
            targets = b["targets"].to(dev)
            total += float(torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    loss = total / max(count, 1)

    recs = data.records
    picked = sorted(random.Random(cfg.hyperparameters.seed).sample(range(len(recs)), min(samples, len(recs))))
    cands, refs, examples = [], [], []
    with torch.no_grad():
        for i in picked:
            prompt, reference = render(recs[i], cfg.expert.prompt_template)
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(dev)
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            text = tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
            cands.append(text)
            refs.append(reference)
            examples.append({"instruction": recs[i].get("instruction", "")[:200], "generated": text[:400],
                             "reference": reference[:400]})
    rouge = sum(rouge_l(c, r) for c, r in zip(cands, refs, strict=True)) / max(len(cands), 1)
    return {
        "output_dir": str(out),
        "run_id": spec.run_id,
        "split": split,
        "records": len(recs),
        "target_tokens": count,
        "loss": round(loss, 6),
        "perplexity": round(math.exp(min(loss, 50.0)), 4),
        "samples": len(cands),
        "rouge_l": round(rouge, 6),
        "bleu": round(corpus_bleu(cands, refs), 6),
        "seconds": round(time.monotonic() - t0, 2),
        "examples": examples,
    }


def write_report(output_dir: Path, report: dict[str, Any]) -> Path:
    from trainpod.manifest import atomic_write_bytes

    return atomic_write_bytes(output_dir / "eval.json", json.dumps(report, indent=2).encode())
