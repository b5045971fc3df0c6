"""``trainpod runs report RUN``: one self-contained HTML file about a run, to look at rather than read.

Plots (matplotlib, Agg, PNG inlined as base64) of training and validation loss, learning rate, tokens/s, memory
and, for runs on a paid backend, the cost over time; then the resolved config, hardware, image, evaluation
metrics and the checkpoint list. Nothing in the file loads anything from the network. The plotted series are
also embedded as a JSON data island (``<script type="application/json" id="trainpod-data">``), so a test or a
script can check them against ``logs/metrics.jsonl``.

matplotlib is imported only by :func:`render_plots` (the ``report`` extra): the CLI's other commands never load it.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainpod.backends.base import RunHandle
from trainpod.errors import TrainpodError
from trainpod.manifest import atomic_write_bytes
from trainpod.settings import Settings

DATA_ID = "trainpod-data"


@dataclass
class RunFiles:
    """What the report reads from a run's output (local, downloaded, or in S3)."""

    handle: RunHandle
    source: str  # where it was read from
    metrics: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    checkpoints: list[str] = field(default_factory=list)


def _json(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_metrics(text: str) -> list[dict[str, Any]]:
    """``logs/metrics.jsonl`` as one record per step, sorted; a resumed run's repeated steps: the last wins."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def load_run(handle: RunHandle, settings: Settings) -> RunFiles:
    """Read the run's files: the local output (or where a remote run was downloaded), else its S3 output."""
    local = handle.extra.get("downloaded") if isinstance(handle.extra.get("downloaded"), str) else None
    root = local if local and Path(local).is_dir() else handle.output

    if not root.startswith("s3://"):
        base = Path(root)
        if not base.is_dir():
            raise TrainpodError(f"run {handle.run_id}: its output directory {base} does not exist (any more)")

        def read(rel: str) -> bytes | None:
            p = base / rel
            return p.read_bytes() if p.is_file() else None

        checkpoints = sorted(p.name for p in (base / "checkpoints").glob("step-*") if (p / "manifest.json").is_file())
    else:
        from trainpod import storage

        def read(rel: str) -> bytes | None:
            return storage.read_bytes(root.rstrip("/") + "/" + rel, settings)

        listing = storage.open_store(root.rstrip("/") + "/checkpoints", settings).list()
        checkpoints = sorted({k.split("/", 1)[0] for k in listing if k.endswith("/manifest.json")})
    metrics_raw = read("logs/metrics.jsonl")
    files = RunFiles(handle=handle, source=root,
                     metrics=parse_metrics(metrics_raw.decode("utf-8", "replace")) if metrics_raw else [],
                     metadata=_json(read("metadata.json")), status=_json(read("status.json")),
                     spec=_json(read("run_spec.json")), evaluation=_json(read("eval.json")), checkpoints=checkpoints)
    if not files.metrics and files.status is None:
        raise TrainpodError(f"run {handle.run_id}: no logs/metrics.jsonl or status.json in {root}",
                            "the run has not written a step yet; try again once it has")
    return files


def series(files: RunFiles) -> dict[str, Any]:
    """The plotted data, exactly: each series is a list of [x, y] pairs (x = step, or hours for cost)."""
    m = files.metrics
    out: dict[str, Any] = {
        "loss": [[r["step"], r["loss"]] for r in m if r.get("loss") is not None],
        "val_loss": [[r["step"], r["val_loss"]] for r in m if r.get("val_loss") is not None],
        "lr": [[r["step"], r["lr"]] for r in m if r.get("lr") is not None],
        "mem_mb": [[r["step"], r["mem_mb"]] for r in m if r.get("mem_mb") is not None],
        "tokens_per_s": [],
        "cost_usd": [],
    }
    for prev, cur in zip(m, m[1:], strict=False):
        dt = (cur.get("elapsed_s") or 0) - (prev.get("elapsed_s") or 0)
        if cur.get("tokens") is not None and dt > 0 and cur["step"] == prev["step"] + 1:
            out["tokens_per_s"].append([cur["step"], round(cur["tokens"] / dt, 3)])
    per_hr = files.handle.extra.get("cost_per_hr")
    if per_hr:
        out["cost_usd"] = [[r["step"], round(float(per_hr) * r["elapsed_s"] / 3600, 6)]
                           for r in m if r.get("elapsed_s") is not None]
    return out


PLOTS = (  # (series keys, title, y label)
    (("loss", "val_loss"), "Loss", "loss"),
    (("lr",), "Learning rate", "lr"),
    (("tokens_per_s",), "Throughput", "tokens/s"),
    (("mem_mb",), "Peak memory", "MB"),
    (("cost_usd",), "Cost", "USD"),
)


def render_plots(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for every plot that has data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs = []
    for keys, title, ylabel in PLOTS:
        if not any(data.get(k) for k in keys):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
        for key in keys:
            pts = data.get(key) or []
            if pts:
                xs, ys = zip(*pts, strict=False)
                ax.plot(xs, ys, marker="o" if len(pts) < 40 else None, markersize=3,
                        label={"loss": "train", "val_loss": "validation"}.get(key, key))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        pngs.append((title, base64.b64encode(buf.getvalue()).decode("ascii")))
    return pngs


def _cell(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    """Key/value rows; rows without a value are left out."""
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_cell(v))}</td></tr>"
                   for k, v in rows if v is not None and v != "")
    return f"<table>{body}</table>"


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; } .plots figure { margin: 0; }
.plots img { width: 520px; border: 1px solid #eee; }
table { border-collapse: collapse; } th, td { text-align: left; padding: 2px 12px 2px 0; vertical-align: top; }
th { color: #555; font-weight: 600; } pre { background: #f6f6f6; padding: 1em; overflow: auto; font-size: 12px; }
.state-succeeded { color: #17692b; } .state-failed, .state-cancelled { color: #a11; }
"""


def build_html(files: RunFiles, data: dict[str, Any], pngs: list[tuple[str, str]]) -> str:
    h, meta, status, spec = files.handle, files.metadata or {}, files.status or {}, files.spec or {}
    work = spec.get("workload") or {}
    cfg = spec.get("config") or work.get("config") or work  # a trainer's resolved config, or a job's workload
    hw = cfg.get("hardware") or {}
    state = "succeeded" if meta else status.get("state", "unknown")
    training = meta.get("training", {})
    extra = h.extra
    overview = [
        ("run", h.run_id), ("preset", h.preset), ("backend", h.backend), ("state", state),
        ("steps", training.get("steps") or status.get("step")),
        ("final val loss", meta.get("final_val_loss")), ("best val loss", meta.get("best_val_loss")),
        ("best step", meta.get("best_step")), ("duration (s)", training.get("duration_seconds")),
        ("tokens/s", meta.get("tokens_per_second")), ("peak memory (MB)", meta.get("peak_memory_mb")),
        ("created", h.created), ("outputs", h.output), ("read from", files.source),
    ]
    if extra.get("cost_per_hr") or extra.get("estimated_cost_usd") is not None:
        overview += [("estimated cost (USD)", extra.get("estimated_cost_usd")),
                     ("price per hour (USD)", extra.get("cost_per_hr")),
                     ("final cost (USD)", data["cost_usd"][-1][1] if data["cost_usd"] else None)]
    hardware = [("profile", cfg.get("hardware_name")), ("name", hw.get("name")), ("device", hw.get("device")),
                ("GPUs", hw.get("gpu_count")), ("GPU type", extra.get("gpu_type_id") or hw.get("runpod_gpu_type_id")),
                ("cloud", extra.get("cloud_type")), ("CUDA", hw.get("cuda_version")),
                ("image", spec.get("image") or meta.get("image")), ("git commit", spec.get("git_commit"))]
    figures = "".join(f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b64}"></figure>'
                      for t, b64 in pngs) or "<p>No steps recorded yet.</p>"
    evaluation = (_table([(k, v) for k, v in files.evaluation.items() if not isinstance(v, (list, dict))])
                  if files.evaluation else "<p>Not evaluated yet: <code>trainpod evaluate "
                  f"{html.escape(h.run_id)}</code></p>")
    ckpts = ("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in files.checkpoints) + "</ul>"
             if files.checkpoints else "<p>None kept.</p>")
    island = json.dumps({"run_id": h.run_id, "series": data}, separators=(",", ":")).replace("</", "<\\/")
    config = html.escape(json.dumps(cfg, indent=2)) if cfg else "(run_spec.json not found)"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>trainpod run {html.escape(h.run_id)}</title><style>{STYLE}</style></head>
<body>
<h1>Run {html.escape(h.run_id)} <span class="state-{html.escape(state)}">{html.escape(state)}</span></h1>
{_table(overview)}
<h2>Training</h2>
<div class="plots">{figures}</div>
<h2>Hardware and image</h2>
{_table(hardware)}
<h2>Evaluation</h2>
{evaluation}
<h2>Checkpoints</h2>
{ckpts}
<h2>Resolved config</h2>
<pre>{config}</pre>
<script type="application/json" id="{DATA_ID}">{island}</script>
</body></html>
"""


def write_report(handle: RunHandle, settings: Settings, output: str | Path | None = None) -> Path:
    """Render the run's report and write it atomically; returns its path. Default place: the run's local
    output directory (``report.html``), else ``./RUN_ID-report.html``."""
    files = load_run(handle, settings)
    data = series(files)
    text = build_html(files, data, render_plots(data))
    if output is None:
        output = (Path(files.source) / "report.html" if not files.source.startswith("s3://")
                  else Path(f"{handle.run_id}-report.html"))
    path = Path(output).expanduser().resolve()
    return atomic_write_bytes(path, text.encode("utf-8"))
