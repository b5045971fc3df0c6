"""``trainpod evaluate OUTPUT_DIR|RUN_ID``: test-split loss/perplexity and ROUGE-L/BLEU of sampled generations."""

from __future__ import annotations

import click


@click.command()
@click.argument("output_dir", metavar="OUTPUT_DIR|RUN_ID")
@click.option("--samples", type=click.IntRange(min=0), default=8, show_default=True,
              help="How many test records to generate answers for (ROUGE-L / BLEU).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False),
              help="Dataset directory (default: the run's dataset location).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=96, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.pass_obj
def evaluate(obj: dict, output_dir: str, samples: int, split: str, data_dir: str | None, max_new_tokens: int,
             as_json: bool) -> None:
    """Evaluate a finished run, given its OUTPUT_DIR or its RUN_ID (unique prefixes work); also writes
    OUTPUT_DIR/eval.json."""
    from trainpod import deps
    from trainpod.console import emit_json, emit_table
    from trainpod.runs import RunRegistry, local_output

    deps.require("train", context="trainpod evaluate")
    from trainpod.settings import load_settings

    out = local_output(RunRegistry(load_settings(obj.get("profile")).state_path), output_dir)
    from trainpod_trainer.evaluate import evaluate_output, write_report

    report = evaluate_output(out, samples=samples, split=split, data_dir=data_dir, max_new_tokens=max_new_tokens)
    write_report(out, report)
    if as_json:
        emit_json(report)
        return
    keys = ("split", "records", "loss", "perplexity", "samples", "rouge_l", "bleu", "seconds")
    emit_table(f"evaluation of {report['run_id']}", ["metric", "value"], [[k, report[k]] for k in keys])
