#!/usr/bin/env python3
"""Training throughput: trainpod's trainer vs a plain HF Trainer with per-batch padding.

CPU mode (default)::

    python benchmarks/train_throughput.py [--steps 40] [--threads N]

Both sides train the shipped tiny Qwen2 (``builtin:tiny-qwen2``) with the smoke preset's LoRA table
on the sample dataset (varied lengths: ~30 to ~300 tokens per example), batch 8, sequence length
256, fp32, the same number of optimizer steps, in this one process one after the other. Reported:
*real* (non-padding) tokens per second of the training loop (model loading excluded on both sides)
and the ratio. trainpod runs its real entrypoint (``trainpod_trainer.run.train``) with packing;
HF Trainer gets ``DataCollatorForSeq2Seq`` (pads each batch to its longest example).

CUDA mode (when a GPU is available)::

    python benchmarks/train_throughput.py --model-size 0.5b [--finetune lora|full] [--seq 2048]

A random-weight Qwen2 with the 0.5B (or 1.5B) shape in bf16, trained with trainpod's packed step
(the same ``loss_sum`` as the trainer) on random tokens. Prints tokens/s and MFU:

    MFU = tokens/s × F / peak,   F = 6·N (full) or 4·N (LoRA: forward 2N + input-gradient 2N, no
    weight gradients for frozen weights),   N = parameters that take part in matmuls (all of them,
    minus the input embedding table unless it is tied to the lm_head).

The attention score/value matmuls (~12·L·d·s per token for full) are not in F, so the MFU printed is
a slight underestimate at long sequence lengths.

``peak`` is the dense bf16 tensor-core peak of the detected GPU (H100/H200 SXM 989 TFLOP/s, A100
312, RTX 4090 165); override with ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "4090": 165.0, "L40S": 362.0, "A6000": 155.0}
SHAPES = {
    # Qwen2.5-0.5B / 1.5B shapes (vocab 151936, tied embeddings)
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True),  # to test this script
}


# ---------------------------------------------------------------------------- CPU: trainpod vs HF


def run_trainpod(steps: int, workdir: Path) -> dict:
    from trainpod.config.loader import load_catalog
    from trainpod.spec import RunSpec, StorageURIs, utcnow_iso
    from trainpod_trainer.run import train

    cfg = load_catalog(use_cwd=False).resolve(
        "smoke", {"max_steps": steps, "save_steps": steps + 1, "eval_steps": steps + 1, "logging_steps": steps})
    out = workdir / "trainpod"
    spec = RunSpec(run_id="bench-trainpod", created=utcnow_iso(), remote="local", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)))
    code = train(spec)
    if code != 0:
        raise SystemExit(f"trainpod trainer exited {code}; see {out}/logs/train.log")
    meta = json.loads((out / "metadata.json").read_text())
    return {"tokens_per_s": meta["tokens_per_second"], "steps": meta["training"]["steps"]}


def run_hf(steps: int, workdir: Path) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from trainpod.config.loader import load_catalog
    from trainpod_trainer.data import IGNORE, SplitStats, read_jsonl, render
    from trainpod_trainer.model import load_tokenizer, resolve_base_model

    cfg = load_catalog(use_cwd=False).resolve("smoke")
    tok = load_tokenizer(cfg.expert.base_model)
    recs = read_jsonl(Path(cfg.dataset.path) / "train.jsonl", "instruction", "error", SplitStats("train"))
    examples = []
    for r in recs:  # the usual HF SFT preprocessing: prompt labels masked, truncated, unpacked
        prompt, response = render(r, cfg.expert.prompt_template)
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = (p + tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[: cfg.sequence_length]
        labels = ([IGNORE] * len(p) + ids[len(p):])[: len(ids)]
        examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})

    real_tokens = 0
    collate = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE)

    def counting_collate(batch: list[dict]) -> dict:
        nonlocal real_tokens
        out = collate(batch)
        real_tokens += int(out["attention_mask"].sum())
        return out

    torch.manual_seed(cfg.hyperparameters.seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(cfg.expert.base_model), dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.lora_alpha,
                                             lora_dropout=cfg.lora.dropout,
                                             target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM"))
    hp = cfg.hyperparameters
    args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=cfg.batch_size, max_steps=steps,
        learning_rate=hp.learning_rate, warmup_steps=hp.warmup_steps, lr_scheduler_type=hp.lr_scheduler,
        max_grad_norm=hp.max_grad_norm, logging_steps=steps, save_strategy="no", report_to=[],
        use_cpu=True, dataloader_num_workers=0, seed=hp.seed, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=counting_collate)
    t0 = time.monotonic()
    trainer.train()
    elapsed = time.monotonic() - t0
    return {"tokens_per_s": real_tokens / elapsed, "steps": trainer.state.global_step}


def cpu_mode(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        hf = run_hf(args.steps, Path(tmp))
        tp = run_trainpod(args.steps, Path(tmp))
    ratio = tp["tokens_per_s"] / hf["tokens_per_s"]
    print(f"threads: {torch.get_num_threads()}, steps: {args.steps} each, batch 8, seq 256, tiny Qwen2 + LoRA r=4")
    print(f"HF Trainer (per-batch padding): {hf['tokens_per_s']:10.0f} real tokens/s")
    print(f"trainpod (packed):              {tp['tokens_per_s']:10.0f} real tokens/s")
    print(f"ratio: {ratio:.2f}x (target >= 1.3x)")
    print(json.dumps({"hf_tokens_per_s": round(hf["tokens_per_s"], 1),
                      "trainpod_tokens_per_s": round(tp["tokens_per_s"], 1), "ratio": round(ratio, 3)}))


# ---------------------------------------------------------------------------- CUDA: tokens/s and MFU


def gpu_mode(args: argparse.Namespace) -> None:
    import contextlib

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trainpod_trainer.data import Document, collate, pack
    from trainpod_trainer.run import loss_sum

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    conf = Qwen2Config(**SHAPES[args.model_size], max_position_embeddings=max(4096, args.seq),
                       rope_theta=1e6, use_cache=False)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    conf._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(conf).to(dtype=dtype if args.finetune == "lora" else torch.float32).to(device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.finetune == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    n_total = sum(p.numel() for p in model.parameters())
    # the input embedding is a lookup, not a matmul; with tied embeddings the table is the lm_head
    n = n_total - (0 if conf.tie_word_embeddings else conf.vocab_size * conf.hidden_size)
    flops_per_token = (6 if args.finetune == "full" else 4) * n

    # varied document lengths (as in real data), packed into rows of --seq
    g = torch.Generator().manual_seed(0)
    lengths = (torch.randint(64, args.seq, (args.batch * args.steps * 4,), generator=g)).tolist()
    docs = [Document(torch.randint(3, conf.vocab_size, (n_,), generator=g).tolist(), [1] * (n_ - 1) + [-100])
            for n_ in lengths]
    rows = pack(docs, args.seq)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def step(i: int) -> int:
        batch = collate(rows[(i * args.batch) % len(rows):][: args.batch], 0)
        s, n_t = loss_sum(model, batch, device, amp)
        (s / max(n_t, 1)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return batch["real_tokens"]

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0, tokens = time.monotonic(), 0
    for i in range(args.steps):
        tokens += step(args.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.monotonic() - t0
    tps = tokens / dt
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    mfu = tps * flops_per_token / (peak * 1e12) if peak else None
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    print(f"device: {name}; model {args.model_size} ({n_total / 1e6:.0f}M params, N = {n / 1e6:.0f}M), "
          f"{args.finetune}, bf16={device.type == 'cuda'}, batch {args.batch} x seq {args.seq}, {args.steps} steps")
    print(f"tokens/s: {tps:,.0f}   FLOPs/token: {flops_per_token / 1e9:.2f} G "
          f"({'6N' if args.finetune == 'full' else '4N'})   peak memory: {mem:.1f} GiB")
    print(f"MFU: {mfu * 100:.1f}% of {peak:g} TFLOP/s" if mfu is not None else "MFU: unknown peak (pass --peak-tflops)")
    print(json.dumps({"device": name, "model_size": args.model_size, "finetune": args.finetune,
                      "tokens_per_s": round(tps, 1), "mfu": round(mfu, 4) if mfu else None, "peak_mem_gib": round(mem, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--model-size", choices=sorted(SHAPES), help="GPU mode: random-weight Qwen2 of this shape")
    ap.add_argument("--finetune", choices=["lora", "full"], default="lora")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", help="force a device (default: cuda if available)")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.model_size:
        gpu_mode(args)
    else:
        cpu_mode(args)


if __name__ == "__main__":
    main()
