"""The printed report: one table of figures for both paths, then the issue's targets, met or missed."""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

ITEM_DIM = 192  # name_bert_64 + main_pic_embeddings_resnet_v1
BIG_SECONDS, BIG_SLACK_MB = 60.0, 1024.0


def med(values: list[float]) -> float:
    return statistics.median(values)


def rate(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def count(n: int) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def sec(x: float) -> str:
    return f"{x:.1f} s" if x < 100 else f"{x:.0f} s"


def mb(x: float) -> str:
    return f"{x:,.0f} MB"


def times(x: float) -> str:
    return f"{x:.1f}x"


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
        with open("/proc/meminfo") as f:
            ram = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        ram = float("nan")
    return f"{model}, {os.cpu_count()} cores, {ram:.1f} GiB RAM"


def header(r: dict, device: str) -> list[str]:
    g, b = r["generate"], r["baseline"]
    a = r["args"]
    threads = a["threads"] or f"{b['default_threads']} (torch default)"
    return [
        f"matching benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine: {_machine()}; device: {device} ({b['device_name']})",
        f"torch {torch.__version__}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"pyarrow {pa.__version__}, python {platform.python_version()}",
        f"data: matching_cli.synthetic.generate(seed={a['seed']}): {g['pairs']:,} pairs, "
        f"{g['listings']:,} listings (written in {sec(g['seconds'])}); torch threads: {threads}; "
        f"repeats: {a['repeats']} (medians)",
    ]


def _features_stage(r: dict) -> list[tuple[str, ...]]:
    """Prepare without and with the features stage (older result files lack the first)."""
    if "prepare_embeddings" not in r:
        return []
    without, with_ = r["prepare_embeddings"], r["prepare"]
    both = with_["peak_mb"] + with_.get("worker_peak_mb", 0)
    return [
        (
            "Prepare without / with the features stage, s",
            sec(without["seconds"]),
            sec(with_["seconds"]),
            "",
            f"{with_['seconds'] / without['seconds']:.1f}x the time",
        ),
        (
            "Prepare without / with it, peak memory (+ its worker)",
            mb(without["peak_mb"]),
            f"{mb(with_['peak_mb'])} (+{mb(with_.get('worker_peak_mb', 0))})",
            "",
            f"{both / without['peak_mb']:.1f}x at most",
        ),
    ]


def rows(r: dict) -> list[tuple[str, ...]]:
    # The original had no features stage: it is compared with the embedding path alone.
    c, prep, base = r["compare"], r.get("prepare_embeddings", r["prepare"]), r["baseline"]
    load = c["original_load"]
    out = [
        (
            "Process after imports (floor of each peak)",
            mb(base["peak_mb"]),
            mb(base["peak_mb"]),
            "",
            "",
        ),
        (
            "Load (original) / prepare (embeddings only), s",
            sec(load["seconds"]),
            sec(prep["seconds"]),
            times(load["seconds"] / prep["seconds"]),
            "",
        ),
        (
            "Load / prepare, peak memory",
            mb(load["peak_mb"]),
            mb(prep["peak_mb"]),
            times(load["peak_mb"] / prep["peak_mb"]),
            "",
        ),
        *_features_stage(r),
        (
            "Load before every later command, s",
            sec(load["seconds"]),
            sec(c["project_load_seconds"]),
            times(load["seconds"] / c["project_load_seconds"]),
            "",
        ),
    ]
    for label, t in c["threads"].items():
        limit = {k: med(v) for k, v in t["limit"].items()}
        for key, values in t["train"].items():
            f, batch = key.split("@")
            p, orig = med(values), med(t["orig_train"][key])
            same = key == "concat@256"
            out.append(
                (
                    f"Train pairs/s, {f}, batch {batch} [{label} thr]",
                    rate(orig) + " *" if same else "",
                    rate(p),
                    times(p / orig),
                    (f"{pct(orig / limit['concat@256'])} / " if same else "") + pct(p / limit[key]),
                )
            )
        for key, value in limit.items():
            name = key.replace("@", ", batch ")
            out.append((f"  compute limit, {name} [{label} thr]", "", rate(value), "", ""))
        out.append(
            (
                f"Original DataLoader alone, no model [{label} thr]",
                rate(med(t["orig_loader"])),
                "",
                "",
                "",
            )
        )
        orig_eval = med(t["orig_eval"])
        for f, values in t["eval"].items():
            p, lim = med(values), med(t["eval_limit"][f])
            same = f == "concat"
            out.append(
                (
                    f"Eval pairs/s, {f} [{label} thr]",
                    rate(orig_eval) + " +" if same else "",
                    rate(p),
                    times(p / orig_eval),
                    (f"{pct(orig_eval / lim)} / " if same else "") + pct(p / lim),
                )
            )
        for f, values in t["eval_limit"].items():
            batch = c["sizes"].get("eval_batch", 65536)
            name = f"  compute limit, forward, {f}, batch {batch} [{label} thr]"
            out.append((name, "", rate(med(values)), "", ""))
    po, pp = r["predict_original"], r["predict"]
    n = count(po["pairs"])
    out += [
        (
            f"Predict {n} pairs -> CSV, pairs/s, concat",
            rate(po["pairs_per_s"]),
            rate(pp["concat"]["pairs_per_s"]),
            times(pp["concat"]["pairs_per_s"] / po["pairs_per_s"]),
            "",
        ),
        (
            f"Predict {n} pairs -> CSV, pairs/s, symmetric",
            "",
            rate(pp["symmetric"]["pairs_per_s"]),
            times(pp["symmetric"]["pairs_per_s"] / po["pairs_per_s"]),
            "",
        ),
        (
            "Predict, peak memory (process, items loaded)",
            mb(po["peak_mb"]),
            mb(pp["peak_mb"]),
            times(po["peak_mb"] / pp["peak_mb"]),
            "",
        ),
    ]
    if "gpu_peak_mb" in pp:
        gpu = (mb(po.get("gpu_peak_mb", 0)), mb(pp["gpu_peak_mb"]))
        out.append(("Predict, peak GPU memory (allocated)", *gpu, "", ""))
    if "predict_big" in r:
        big = r["predict_big"]
        m = count(big["symmetric"]["pairs"])
        out += [
            (
                f"Predict {m} pairs -> CSV, symmetric, s",
                "",
                sec(big["symmetric"]["seconds"]),
                "",
                "",
            ),
            (f"Predict {m} pairs -> CSV, peak memory", "", mb(big["peak_mb"]), "", ""),
        ]
    for batch, f in r.get("fit", {}).items():
        if isinstance(f, dict):
            out.append(
                (
                    f"fit {f['epochs']} epochs, batch {batch}, lr {f['lr']:g}: loop s / best val PR-AUC",
                    "",
                    f"{sec(f['loop_seconds'])} / {f['best_val_ap']:.4f}",
                    "",
                    "",
                )
            )
    return out


def notes(r: dict) -> list[str]:
    c, sizes = r["compare"], r["compare"]["sizes"]
    first = next(iter(c["threads"].values()))
    orig_train = med(first["orig_train"]["concat@256"])
    timed = first["orig_batches"].get("concat@256") or [int(r["args"]["orig_batches"])]
    how = (
        "timed between the project's batches (same minutes)"
        if sizes["interleaved"]
        else "timed after 3 warm-up batches"
    )
    return [
        f"* original training: {int(med(timed))} batches of 256 {how}, extrapolated; its epoch "
        f"({sizes['original_train']:,} pairs) would take {sec(sizes['original_train'] / orig_train)}. "
        f"matching: whole epochs ({sizes['project_train']:,} pairs).",
        f"+ original evaluation over its first {sizes['original_eval_pairs']:,} validation pairs; "
        f"matching over its whole validation split ({sizes['project_val']:,} pairs), 4 rounds alternating.",
        "ratio: matching / original for pairs/s, original / matching for seconds and memory (above 1: "
        "matching is better); each training row against the original measured in the same minutes "
        "(concat, batch 256); rows of another model or batch are still compared with that original.",
        "share: pairs/s over the compute limit of the same model, batch and threads (original / matching); "
        "the limit is the loop's forward+backward+AdamW step (forward only for eval) on random batches "
        "already in memory, run between the project's batches.",
        "Predict: matching's time includes reading the item table (warm page cache); the original's "
        "excludes its load (the load row). Peak memory includes both.",
        "Peak memory: ru_maxrss of a fresh process per stage (the imports included).",
    ]


def targets(r: dict, device: str) -> list[str]:
    c, out = r["compare"], []
    default = str(r["configs"][1][1])

    def line(ok: bool, text: str) -> None:
        out.append(f"{'MET   ' if ok else 'MISSED'} {text}")

    for label, t in c["threads"].items():
        lim = {k: med(v) for k, v in t["limit"].items()}
        for key in (f"concat@{default}", f"symmetric@{default}"):
            p, orig = med(t["train"][key]), med(t["orig_train"][key])
            if key.startswith("concat"):
                line(
                    p / orig >= 3,
                    f"[{label} thr] training >= 3x the original, same model (concat, batch {default}): {times(p / orig)}",
                )
            line(
                p / lim[key] >= 0.75,
                f"[{label} thr] training >= 75% of the compute limit ({key}): {pct(p / lim[key])}",
            )
        e = med(t["eval"]["concat"]) / med(t["orig_eval"])
        line(e >= 5, f"[{label} thr] evaluation >= 5x the original (concat): {times(e)}")
        if device.startswith("cuda"):
            s = med(t["train"][f"symmetric@{default}"])
            line(
                s >= 5e6, f"[GPU] training >= 5M pairs/s at the default batch {default}: {rate(s)}"
            )
            ev = med(t["eval"]["symmetric"])
            line(ev >= 20e6, f"[GPU] evaluation >= 20M pairs/s: {rate(ev)}")
    po, pp = r["predict_original"], r["predict"]
    x = pp["concat"]["pairs_per_s"] / po["pairs_per_s"]
    line(x >= 5, f"predict >= 5x the original (concat): {times(x)}")
    load, prep = c["original_load"], r.get("prepare_embeddings", r["prepare"])
    real = "" if r["generate"]["pairs"] >= 1_168_516 else " (not at the real size)"
    x = load["seconds"] / prep["seconds"]
    line(x >= 5, f"prepare >= 5x faster than the original load{real}: {times(x)}")
    x = prep["peak_mb"] / load["peak_mb"]
    line(x <= 0.5, f"prepare peak memory <= half the original load's{real}: {pct(x)}")
    if "predict_big" in r:
        big = r["predict_big"]
        items_mb = r["generate"]["listings"] * ITEM_DIM * 4 / 2**20
        beyond = big["peak_mb"] - r["baseline"]["peak_mb"] - items_mb
        s = big["symmetric"]["seconds"]
        line(
            s <= BIG_SECONDS,
            f"predict {big['symmetric']['pairs']:,} pairs to CSV in <= 60 s: {sec(s)}",
        )
        line(
            beyond <= BIG_SLACK_MB,
            f"predict memory = floor + item table ({mb(items_mb)}) + a chunk "
            f"(<= {mb(BIG_SLACK_MB)}): {mb(beyond)} beyond the item table",
        )
    fits = {b: f for b, f in r.get("fit", {}).items() if isinstance(f, dict)}
    if fits and device.startswith("cuda"):
        first = next(iter(fits.values()))
        line(
            first["loop_seconds"] < 10,
            f"[GPU] fit {first['epochs']} epochs: training loop < 10 s: {sec(first['loop_seconds'])}",
        )
    if len(fits) > 1:
        aucs = [f["best_val_ap"] for f in fits.values()]
        line(
            max(aucs) - min(aucs) <= 0.005,
            "larger batch reaches the same validation PR-AUC (within 0.005): "
            + ", ".join(f"batch {b}: {f['best_val_ap']:.4f}" for b, f in fits.items()),
        )
    return out


def render(r: dict, device: str) -> str:
    head = ("figure", "original", "matching", "ratio", "share of compute limit")
    body = rows(r)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def fmt(row: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths))
        + "|"
    )
    lines = [*header(r, device), "", fmt(head), rule, *(fmt(row) for row in body), ""]
    return "\n".join([*lines, *notes(r), "", "Targets:", *targets(r, device)])
