#!/usr/bin/env python3
"""Regenerate ``trainer/trainpod_trainer/assets/tiny-qwen2/`` byte-identically.

The tiny model is what ``builtin:tiny-qwen2`` (the ``tiny`` expert) resolves to: a real
Qwen2-architecture checkpoint small enough to ship in the package, so the same
``AutoModelForCausalLM`` / ``AutoTokenizer`` code that loads ``Qwen/Qwen2.5-Coder-1.5B`` runs offline
in tests and in the ``smoke`` preset.

- tokenizer: byte-level BPE (like Qwen2's) trained with the ``tokenizers`` library on the sample
  dataset, with Qwen2's special tokens (``<|endoftext|>`` is pad and eos);
- config: Qwen2 with hidden 64, 2 layers, 4 heads / 2 KV heads (GQA, as in the real model);
- weights: drawn tensor by tensor, in sorted name order, from one seeded ``torch.Generator`` (normal
  with std 0.02, RMSNorm weights 1, biases 0), so they do not depend on transformers' init order;
  then a short single-threaded pre-training on the train split's raw text (no prompt template).

Everything is written with sorted keys and no timestamps; running the script twice gives the same
bytes on the same CPU/torch build (float rounding of the pre-training may differ across CPU
instruction sets). ``--check`` regenerates into a temporary directory and compares.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSET = ROOT / "trainer" / "trainpod_trainer" / "assets" / "tiny-qwen2"
DATA = ROOT / "profiles" / "data" / "sample"
SEED = 1234
VOCAB = 1024
PRETRAIN_STEPS = 150
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def _corpus() -> list[str]:
    texts = []
    for split in ("train", "val", "test"):
        for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            texts.append("\n".join(rec.get(k, "") for k in ("context", "instruction", "input", "output")))
    # the prompt scaffolding of the experts' templates, so headers are single tokens
    texts += ["### Instruction:\n### Input:\n### Response:\n"] * 50
    return texts


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "bos_token": None,
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    return tok.get_vocab_size()


def build_model(out: Path, vocab_size: int) -> None:
    import torch
    from safetensors.torch import save_file

    cfg = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "use_cache": True,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": None,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = {"eos_token_id": 0, "pad_token_id": 0, "do_sample": False, "max_new_tokens": 128}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")

    h, inter, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"] * cfg["head_dim"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        })
    g = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            t = torch.ones(shape)
        elif name.endswith(".bias"):
            t = torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g) * cfg["initializer_range"]
        tensors[name] = t.contiguous()
    tensors = pretrain(out, cfg, tensors)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def pretrain(out: Path, cfg: dict, tensors: dict) -> dict:
    """A short, single-threaded, deterministic pre-training on the *train* split's raw text.

    A random-weight model gives fine-tuning almost nothing to work with; after this it knows the
    vocabulary of the domain but not the prompt format, which is what the smoke fine-tune then
    learns (so its loss falls clearly). val/test are not seen here.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids: list[int] = []
    for line in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        ids += tok.encode(" ".join(rec[k] for k in ("instruction", "input", "output") if rec.get(k))).ids + [0]
    seq, batch = 64, 16
    rows = torch.tensor(ids[: len(ids) // seq * seq]).view(-1, seq)
    conf = Qwen2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")})
    model = Qwen2ForCausalLM(conf)
    model.load_state_dict(tensors, strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(PRETRAIN_STEPS):
        x = rows[torch.randint(len(rows), (batch,), generator=g)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    state = model.state_dict()
    return {k: state[k].detach().clone().contiguous() for k in sorted(tensors)}


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(out)
    build_model(out, vocab)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ASSET)
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir and compare with --out")
    args = ap.parse_args()
    if not args.check:
        generate(args.out)
        print(f"wrote {args.out}: " + ", ".join(f"{f} {(args.out / f).stat().st_size} B" for f in FILES))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        _, mismatch, errors = filecmp.cmpfiles(args.out, tmp, FILES, shallow=False)
    if mismatch or errors:
        print(f"differs from a fresh build: {mismatch + errors}", file=sys.stderr)
        return 1
    print(f"{args.out}: identical to a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
