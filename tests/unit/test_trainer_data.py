"""The trainer's data path: jsonl validation with file:line errors, prompt rendering, response-only
targets, packing, the attention isolation packing relies on, and deterministic batch order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainpod_trainer.data import (
    IGNORE,
    Batches,
    DataError,
    Position,
    SplitStats,
    load_split,
    pack,
    read_jsonl,
    render,
)
from trainpod_trainer.model import load_tokenizer, resolve_base_model

TEMPLATE = "{context}### Instruction:\n{instruction}\n{input_section}### Response:\n{output}"
REC = {"instruction": "Explain xor.", "input": "", "output": "xor clears bits."}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("builtin:tiny-qwen2")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_malformed_json_names_file_and_line(tmp_path):
    p = _write(tmp_path / "train.jsonl", [json.dumps(REC), "", json.dumps(REC), '{"instruction": "x", '])
    with pytest.raises(DataError) as err:
        read_jsonl(p, "instruction", "error", SplitStats(str(p)))
    assert err.value.message.startswith(f"{p}:4: ")
    assert "on_bad_line" in err.value.hint


def test_missing_field_names_file_line_and_field(tmp_path):
    p = _write(tmp_path / "train.jsonl", [json.dumps(REC), json.dumps({"instruction": "no output"})])
    with pytest.raises(DataError, match=r"train\.jsonl:2: missing string field 'output'"):
        read_jsonl(p, "instruction", "error", SplitStats(str(p)))


def test_skip_mode_counts_bad_lines(tmp_path):
    p = _write(tmp_path / "train.jsonl", [json.dumps(REC), "[1, 2]", "nope", json.dumps(REC)])
    stats = SplitStats(str(p))
    assert len(read_jsonl(p, "instruction", "skip", stats)) == 2
    assert stats.skipped_bad_lines == 2 and stats.records == 2


def test_empty_split_is_an_error_naming_the_file(tmp_path):
    p = _write(tmp_path / "val.jsonl", ["", "  "])
    with pytest.raises(DataError, match=r"val\.jsonl: split is empty"):
        read_jsonl(p, "auto", "error", SplitStats(str(p)))
    with pytest.raises(DataError, match=r"missing\.jsonl: dataset split not found"):
        read_jsonl(tmp_path / "missing.jsonl", "auto", "error", SplitStats("x"))


def test_auto_format_accepts_text_and_instruction(tmp_path):
    p = _write(tmp_path / "t.jsonl", [json.dumps({"text": "mov rax, 1"}), json.dumps(REC)])
    recs = read_jsonl(p, "auto", "error", SplitStats(str(p)))
    assert recs[0] == {"text": "mov rax, 1"} and recs[1]["output"] == "xor clears bits."
    with pytest.raises(DataError, match="'text'"):
        read_jsonl(_write(tmp_path / "u.jsonl", [json.dumps(REC)]), "text", "error", SplitStats("u"))


def test_render_input_section_and_context():
    prompt, out = render({**REC, "input": "", "context": ""}, TEMPLATE)
    assert prompt == "### Instruction:\nExplain xor.\n### Response:\n" and out == "xor clears bits."
    prompt, _ = render({**REC, "input": "xor eax, eax", "context": "Linux.\n"}, TEMPLATE)
    assert prompt == "Linux.\n### Instruction:\nExplain xor.\n### Input:\nxor eax, eax\n### Response:\n"
    assert render({"text": "plain"}, TEMPLATE) == ("", "plain")


def test_loss_targets_cover_only_the_response(tmp_path, tok):
    p = _write(tmp_path / "train.jsonl", [json.dumps({**REC, "context": ""})])
    doc = load_split(p, "instruction", "error", TEMPLATE, tok, 256).docs[0]
    prompt, response = render({**REC, "context": ""}, TEMPLATE)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    n_resp = len(tok(response, add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert len(doc.ids) == n_prompt + n_resp
    labelled = [i for i, t in enumerate(doc.targets) if t != IGNORE]
    # position i predicts token i+1: from the last prompt token through the token before eos
    assert labelled == list(range(n_prompt - 1, len(doc.ids) - 1))
    assert [doc.targets[i] for i in labelled] == doc.ids[n_prompt:]
    assert doc.ids[-1] == tok.eos_token_id


def test_truncation_and_dropping(tmp_path, tok):
    long = {**REC, "output": "mov rax, rbx " * 200}
    only_prompt = {**REC, "instruction": "explain " * 200}
    p = _write(tmp_path / "train.jsonl", [json.dumps(long), json.dumps(only_prompt), json.dumps(REC)])
    split = load_split(p, "instruction", "error", TEMPLATE, tok, 64)
    assert len(split.docs) == 2 and all(len(d.ids) <= 64 for d in split.docs)
    assert split.stats.truncated == 2 and split.stats.dropped_no_target == 1


def test_pack_keeps_every_document_and_respects_length(tok):
    from trainpod_trainer.data import Document

    docs = [Document(list(range(n)), list(range(1, n)) + [IGNORE]) for n in (50, 10, 30, 64, 5, 40, 20)]
    rows = pack(docs, 64)
    assert all(len(r.ids) <= 64 for r in rows)
    assert rows == pack(docs, 64)  # deterministic
    assert len(rows) == 4  # 219 tokens: best-fit decreasing needs ceil(219/64) = 4 rows
    # positions restart at 0 at every document start and count up within it
    segments = []
    for r in rows:
        starts = [i for i, p in enumerate(r.positions) if p == 0] + [len(r.ids)]
        for a, b in zip(starts, starts[1:], strict=False):
            assert r.positions[a:b] == list(range(b - a))
            assert r.targets[b - 1] == IGNORE  # no target across the boundary
            segments.append(b - a)
    assert sorted(segments) == sorted(len(d.ids) for d in docs)


def test_packed_documents_do_not_attend_to_each_other(tok):
    """A document's logits are the same alone and packed after another one (block-diagonal mask)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_base_model("builtin:tiny-qwen2")).eval()
    a = tok("mov rax, rbx\nret", add_special_tokens=False)["input_ids"]
    b = tok("ldr x0, [x1]\nadd x0, x0, #1\nret", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits[0]
        ids = torch.tensor([a + b])
        pos = torch.tensor([list(range(len(a))) + list(range(len(b)))])
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, len(a):]
        leaky = model(input_ids=ids, position_ids=torch.arange(len(a) + len(b))[None], use_cache=False).logits[0, len(a):]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)  # without the reset, attention would cross


def test_batches_are_deterministic_and_resumable(tok):
    from trainpod_trainer.data import Row

    rows = [Row([i] * 3, [IGNORE] * 3, [0, 1, 2]) for i in range(10)]
    b = Batches(rows, batch_size=3, seed=7, pad_id=0)
    assert b.batches_per_epoch == 4
    it = b.iterate(Position())
    seq = [next(it) for _ in range(10)]
    # restarting at a saved position yields exactly the continuation
    pos_after_5 = seq[4][0]
    again = b.iterate(pos_after_5)
    for (_, want), (_, got) in zip(seq[5:], (next(again) for _ in range(5)), strict=True):
        assert want["input_ids"].equal(got["input_ids"])
    assert b.epoch_order(0) != b.epoch_order(1)  # reshuffled per epoch
    # two ranks see disjoint halves of an epoch
    r0, r1 = (Batches(rows, 3, 7, 0, rank=r, world=2).epoch_order(0) for r in (0, 1))
    assert not set(r0) & set(r1) and len(r0) == len(r1) == 5
