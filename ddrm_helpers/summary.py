"""The summary of an evaluation: each metric's mean and its 95% interval, beside the paper's figures.

>>> mean_interval([1.0, 2.0, 3.0, 4.0])            # mean, low, high
(2.5, 0.4457..., 4.5542...)

The interval is Student's t interval of the mean: ``mean +- t(0.975, n - 1) * s / sqrt(n)``, with
``s`` the sample standard deviation of the per-image values; it says how far the mean of these
images may be from the mean over all images like them, not how much the images vary. KID and FID
are figures of the whole set: KID is reported as torchmetrics gives it, the mean and standard
deviation over random subsets, times 1e3 as in the paper.

The paper's figures (DDRM, Kawar et al. 2022, ImageNet 1K table, 20 network evaluations) are shown
beside ours only when the setting is the paper's: config ``imagenet_256``, task ``sr4`` or
``deblur_uni``, sigma_y 0 or 0.05, 20 steps, eta 0.85, eta_b 1. They were computed on the 1,000
images of ``imagenet_val_1k.txt`` (docs/evaluation.md).

Images that could not be read have a record with their ``error`` and no figures: the summary
counts them (``unreadable``) and names the first few, and no figure includes them.
"""

from __future__ import annotations

import csv
import io
import json
import math

from .results import json_safe

# (task, sigma_y) -> (PSNR in dB, KID x 1e3): the DDRM paper's ImageNet 1K table, 20 NFE
PAPER = {
    ("sr4", 0.0): (26.55, 7.22),
    ("deblur_uni", 0.0): (35.64, 0.71),
    ("sr4", 0.05): (25.21, 12.43),
    ("deblur_uni", 0.05): (25.45, 15.24),
}
PAPER_SOURCE = "DDRM paper (Kawar et al. 2022), ImageNet 1K, 20 NFE"

# The per-image metrics of a record, in the order of the table, with how each is shown
METRICS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "psnr_degraded": "PSNR of the degraded image (dB)",
    "ssim_degraded": "SSIM of the degraded image",
    "consistency": "consistency ‖H x_hat - y‖ ([0, 1] pixel units)",
    "consistency_rel": "consistency ‖H x_hat - y‖ / ‖y‖",
    "seconds": "seconds per image",
}


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``p`` in (0.5, 1)) of Student's t distribution with ``df`` >= 1 degrees of
    freedom, found by bisection on its distribution function (exact for integer ``df``)."""
    low, high = 0.0, 1.0
    while _t_central_mass(high, df) < 2 * p - 1:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if _t_central_mass(middle, df) < 2 * p - 1:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return (low + high) / 2


def _t_central_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz and Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return math.sin(theta) * total


def mean_interval(values, level: float = 0.95) -> tuple[float, float | None, float | None]:
    """The mean of ``values`` and its ``level`` t interval (None for fewer than two values)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def paper_figures(config: str, task: str, sigma_y: float, steps: int, eta: float, eta_b: float) -> dict | None:
    """The paper's PSNR and KID x 1e3 for this setting, or None when the setting is not the paper's."""
    if config != "imagenet_256" or steps != 20 or not math.isclose(eta, 0.85) or not math.isclose(eta_b, 1.0):
        return None
    for (paper_task, paper_sigma), (psnr, kid) in PAPER.items():
        if task == paper_task and math.isclose(sigma_y, paper_sigma, abs_tol=1e-9):
            return {"psnr": psnr, "kid_x1e3": kid, "source": PAPER_SOURCE}
    return None


def summarize(records: list[dict], run: dict, distribution: dict) -> dict:
    """The summary of ``records`` (one dict per image), ``run`` (the settings) and ``distribution``
    (``kid_x1e3``, ``kid_std_x1e3``, ``fid`` and a ``note`` saying why they are missing, if so)."""
    metrics = {}
    for key in METRICS:
        values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if not values:
            continue
        mean, low, high = mean_interval(values)
        metrics[key] = {"mean": mean, "low": low, "high": high, "n": len(values)}
    not_finite = sum(1 for r in records if not r.get("finite", True))
    unreadable = [r["name"] for r in records if "error" in r]
    return {
        **run,
        "images": len(records),
        "not_finite": not_finite,
        "unreadable": len(unreadable),
        "unreadable_names": unreadable,
        "metrics": metrics,
        "distribution": distribution,
        "paper": paper_figures(run["config"], run["task"], run["sigma_y"], run["steps"], run["eta"], run["eta_b"]),
    }


def _number(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_rows(summary: dict) -> list[dict]:
    """The rows of the table: metric, mean, low, high, n, paper (strings; empty where none)."""
    paper = summary.get("paper") or {}
    rows = []
    for key, label in METRICS.items():
        m = summary["metrics"].get(key)
        if m is None:
            continue
        digits = 4 if key.startswith(("ssim", "consistency")) else 2
        rows.append({"metric": label, "mean": _number(m["mean"], digits), "low": _number(m["low"], digits),
                     "high": _number(m["high"], digits), "n": str(m["n"]),
                     "paper": _number(paper.get(key), 2) if key == "psnr" else ""})
    distribution = summary["distribution"]
    if distribution.get("kid_x1e3") is not None:
        rows.append({"metric": "KID x 1e3 (mean over subsets; low/high: +- one std)",
                     "mean": _number(distribution["kid_x1e3"], 2),
                     "low": _number(distribution["kid_x1e3"] - distribution["kid_std_x1e3"], 2),
                     "high": _number(distribution["kid_x1e3"] + distribution["kid_std_x1e3"], 2),
                     "n": str(distribution["images"]), "paper": _number(paper.get("kid_x1e3"), 2)})
    if distribution.get("fid") is not None:
        rows.append({"metric": "FID", "mean": _number(distribution["fid"], 2), "low": "", "high": "",
                     "n": str(distribution["images"]), "paper": ""})
    return rows


def markdown(summary: dict) -> str:
    """The summary as a markdown table, with a title line and the notes under it."""
    s = summary
    lines = [f"**{s['config']}**: {s['task']}, sigma_y {s['sigma_y']:g}, {s['steps']} steps, eta {s['eta']:g}, "
             f"eta_b {s['eta_b']:g}, seed {s['seed']}; {s['images']} image(s) of {s['data']}", "",
             "| metric | mean | 95% low | 95% high | n | paper |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {r['mean']} | {r['low']} | {r['high']} | {r['n']} | {r['paper']} |"
              for r in table_rows(s)]
    lines.append("")
    if s["paper"]:
        lines.append(f"Paper: {s['paper']['source']}, over the 1,000 images of imagenet_val_1k.txt.")
    else:
        lines.append("Paper: no figure for this setting (the paper's table is imagenet_256, sr4 or deblur_uni, "
                     "sigma_y 0 or 0.05, 20 steps, eta 0.85, eta_b 1).")
    if s["distribution"].get("note"):
        lines.append(s["distribution"]["note"])
    if s["not_finite"]:
        lines.append(f"FAILED: {s['not_finite']} restoration(s) are not finite (NaN or infinity).")
    if s.get("unreadable"):
        names = s["unreadable_names"]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        lines.append(f"NOT EVALUATED: {s['unreadable']} of {s['images']} image(s) could not be read ({shown}); their "
                     "records (records.jsonl) say why.")
    return "\n".join(lines) + "\n"


def csv_text(summary: dict) -> str:
    """The table as CSV: metric, mean, low, high, n, paper."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["metric", "mean", "low", "high", "n", "paper"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows(summary))
    return out.getvalue()


def summary_files(summary: dict) -> dict[str, str]:
    """The texts of ``summary.md``, ``summary.csv`` and ``summary.json``, by file name."""
    return {"summary.md": markdown(summary), "summary.csv": csv_text(summary),
            "summary.json": json.dumps(json_safe(summary)[0], indent=1, allow_nan=False) + "\n"}
