"""The per-clip score table that `mvk segment --eval` prints (unsupervised and `--semi` alike)."""
from __future__ import annotations

from collections.abc import Sequence


def score_table(result: dict, metrics: Sequence[str], *, first: str, count: str, width_of_score: int = 8) -> str:
    """One line per clip (``result["clips"]``: name -> its counts and metrics, or ``{"error": ...}``), then the
    mean (``result["mean"]``); ``first`` heads the name column, ``count`` names the per-clip count column."""
    names = list(result["clips"])
    width = max([len(n) for n in names] + [8])
    cw, sw = max(6, len(count)), width_of_score
    head = f"{first:<{width}}  {'frames':>6}  {count:>{cw}}  " + "  ".join(f"{m:>{sw}}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, r in result["clips"].items():
        if "error" in r:
            lines.append(f"{name:<{width}}  error: {r['error']}")
            continue
        lines.append(f"{name:<{width}}  {r['frames']:>6}  {r[count]:>{cw}}  "
                     + "  ".join(f"{r[m]:>{sw}.3f}" for m in metrics))
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}  {'':>6}  {'':>{cw}}  " + "  ".join(f"{result['mean'][m]:>{sw}.3f}" for m in metrics))
    return "\n".join(lines)
