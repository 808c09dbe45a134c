"""Several embedding spaces in one index: query latency per space and fused (``search.service.QueryService``,
``search.spacefusion``) at MVK scale, and what each space adds on disk and in memory. Not a test: results go to
BENCHMARKS.md.

    python3 benchmarks/bench_spaces.py [--frames 43797 --sites 36 --objects-per-frame 8 --queries 40 --threads 1
        --dims 512,768[,1152]] [--root DIR] [--json out.json]

The index is written at the store level (``search.store.write_shard`` for the first space,
``search.writer.add_space`` + ``write_spaces`` for the others), flat tables, clustered random unit vectors (2000
topics plus noise, as ``bench_query.py``), one seed of topics per space. Queries are more-like-this queries
(``LikeQuery`` of a random frame): each space ranks by its own stored vector of that frame, so no text is
encoded and the figures are ranking only (text encoding per model: the text-encoding rows of BENCHMARKS.md).
Spaces are named ``bench-d<DIM>``: 512 is ViT-B-32's size, 768 ViT-B-16-SigLIP's, 1152 ViT-SO400M-14-SigLIP-384's
(ranking cost depends on the dimension and the counts, not on the model). The service loads each further space's
encoder on its first query (timed apart), so each name is registered with open_clip as a tiny random text/image
model of that embedding size: the real SigLIP tokenizers are not available offline, and like-queries encode
nothing. The configurations run interleaved (order rotated per query) so that each ratio compares queries made at
the same moment. ``fuse_scores`` is timed over full-length score arrays, one per space, as ``mvk kis`` fuses every
frame's scores per query.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search import store
from search.testing import encoder_identity, frame_rows, object_rows


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors near random topic centres (``bench_query.clustered``'s recipe, per call)."""
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def parse_dims(text: str) -> list[tuple[str, int]]:
    """(space name, dimension) per comma-separated dimension."""
    return [(f"bench-d{int(d)}", int(d)) for d in text.split(",")]


def register_models(spaces: list[tuple[str, int]], folder: Path) -> None:
    """An open_clip config per space: a tiny ViT CLIP whose embedding size is the space's, so that the service
    can load an encoder for every space of the index (random weights, in well under a second)."""
    import open_clip
    for name, dim in spaces:
        cfg = {"embed_dim": dim,
               "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def build(root: Path, spaces: list[tuple[str, int]], n_frames: int, per_frame: int, n_sites: int) -> dict:
    """The index at ``root``; returns the seconds taken per stage."""
    from search.spaces import Space
    from search.writer import add_space, write_spaces

    (first, d0), *others = spaces
    store.init_index(root, {"encoder": encoder_identity(d0, model=first)})
    for name, dim in others:
        add_space(root, Space(name, encoder_identity(dim, model=name), "pool", None))
    centres = {name: np.random.default_rng(100 + i).standard_normal((2000, dim), dtype=np.float32)
               for i, (name, dim) in enumerate(spaces)}
    per_site = -(-n_frames // n_sites)
    took = {"first space": 0.0, "further spaces": 0.0}
    for s in range(n_sites):
        n = min(per_site, n_frames - s * per_site)
        site = f"Site{s:02d}_Jan2022"
        rng = np.random.default_rng(s)
        frames = frame_rows(site, n, videos=max(1, n // 30), fps=1.0)
        objects = object_rows(np.repeat(np.arange(n), per_frame))
        t = time.perf_counter()
        store.write_shard(root, site, frames, clustered(rng, centres[first], n), objects,
                          clustered(rng, centres[first], len(objects)), {})
        took["first space"] += time.perf_counter() - t
        if others:
            t = time.perf_counter()
            vectors = {name: (clustered(rng, centres[name], n), clustered(rng, centres[name], len(objects)))
                       for name, _ in others}
            write_spaces(root, site, vectors, based_on=store.shard_folder(root, site).name)
            took["further spaces"] += time.perf_counter() - t
    return took


def disk_bytes(root: Path, spaces: list[tuple[str, int]]) -> dict[str, int]:
    """Bytes of each space's FAISS files over all current shard versions."""
    from search.spaces import table_files
    out = {}
    for i, (name, _) in enumerate(spaces):
        files = table_files(name, primary=i == 0)
        out[name] = sum((store.shard_folder(root, site) / f).stat().st_size
                        for site in store.list_sites(root) for f in files)
    return out


def resident_mib() -> dict[str, float]:
    """RssAnon (memory the process owns) and RssFile (pages of mapped files, the FAISS tables) in MiB."""
    got = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            got[key] = round(int(value.split()[0]) / 1024)
    return got


def stats(times: list[float]) -> dict:
    a = np.array(times) * 1000
    return {"p50_ms": round(float(np.median(a)), 1), "p90_ms": round(float(np.percentile(a, 90)), 1), "n": len(a)}


SEQUENTIAL = "rrf, one space after another"


def run_config(service, query, config: str):
    """One query under a configuration: a space's name, rrf, zscore, or rrf with the spaces searched one after
    another (the service searches them side by side where it has more than one core)."""
    from search import service as S
    from search.queries import Options
    if config != SEQUENTIAL:
        return service.run(query, Options(k=20, space_fusion=config))
    cores = S.usable_cores
    S.usable_cores = lambda: 1
    try:
        return service.run(query, Options(k=20, space_fusion="rrf"))
    finally:
        S.usable_cores = cores


def time_queries(root: Path, spaces: list[tuple[str, int]], n_queries: int, threads: int | None) -> dict:
    """Median and p90 per configuration (each space alone, rrf, zscore), interleaved, one query at a time;
    also each space alone at the fusion depth, and ``fuse_ranked`` on those lists."""
    from search.queries import ItemRef, LikeQuery, Options
    from search.service import FUSION_DEPTH, QueryService
    from search.spacefusion import fuse_ranked

    service = QueryService(root, threads=threads)
    index = service.index()
    names = [name for name, _ in spaces]
    configs = [*names, *(["rrf", "zscore", SEQUENTIAL] if len(names) > 1 else [])]
    rng = np.random.default_rng(7)
    picks = index.frames.iloc[rng.choice(len(index.frames), n_queries + 1, replace=False)]
    refs = [ItemRef(str(r.site), str(r.video_id), int(r.frame_index)) for r in picks.itertuples()]
    first: dict[str, float] = {}
    resident = {"opened": resident_mib()}
    for c in configs:           # first query per configuration: loads the further spaces' encoders
        t = time.perf_counter()
        run_config(service, LikeQuery(refs[0]), c)
        first[c] = round(time.perf_counter() - t, 2)
        resident[f"after the first query in {c}"] = resident_mib()
    deep = [f"{n} @{FUSION_DEPTH}" for n in names]
    times: dict[str, list[float]] = {c: [] for c in [*configs, *deep, "fuse_ranked rrf", "fuse_ranked zscore"]}
    for i, ref in enumerate(refs[1:]):
        order = configs[i % len(configs):] + configs[:i % len(configs)]
        for c in order:
            t = time.perf_counter()
            page = run_config(service, LikeQuery(ref), c)
            times[c].append(time.perf_counter() - t)
            assert len(page.rows) == 20
        if len(names) > 1:
            lists = []
            for n, label in zip(names, deep):
                t = time.perf_counter()
                page = service.run(LikeQuery(ref), Options(k=FUSION_DEPTH - 1, space_fusion=n))
                times[label].append(time.perf_counter() - t)
                lists.append(page.rows)
            for method in ("rrf", "zscore"):
                t = time.perf_counter()
                fuse_ranked(lists, names, method)
                times[f"fuse_ranked {method}"].append(time.perf_counter() - t)
    return {"first_query_s": first, "resident_mib": resident, "queries": {c: stats(v) for c, v in times.items() if v}}


def time_fuse_scores(n: int, n_spaces: int, repeats: int) -> dict:
    """``fuse_scores`` over ``n_spaces`` aligned arrays of ``n`` scores (``mvk kis``'s per-query fusion)."""
    from search.spacefusion import fuse_scores
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(n).astype(np.float32) * (0.1 + 0.1 * i) for i in range(n_spaces)]
    out = {}
    for method in ("rrf", "zscore"):
        fuse_scores(arrays, method)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fuse_scores(arrays, method)
            times.append(time.perf_counter() - t)
        out[method] = stats(times)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=43797)
    ap.add_argument("--sites", type=int, default=36)
    ap.add_argument("--objects-per-frame", type=int, default=8)
    ap.add_argument("--dims", dest="spaces", type=parse_dims, default=parse_dims("512,768"),
                    help="embedding size of each space, the index's own first (default 512,768: ViT-B-32's and "
                         "ViT-B-16-SigLIP's; add 1152 for ViT-SO400M-14-SigLIP-384's)")
    ap.add_argument("--queries", type=int, default=40, help="timed queries per configuration (default 40)")
    ap.add_argument("--threads", type=int, default=1, help="threads per query (default 1, the service's policy "
                                                           "for one query)")
    ap.add_argument("--fuse-repeats", type=int, default=50)
    ap.add_argument("--root", default=None, help="build (or reuse, when it exists) the index here, not in a temp dir")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "idx"
        (Path(tmp) / "models").mkdir()
        register_models(args.spaces, Path(tmp) / "models")
        out: dict = {"args": vars(args)}
        if not (root / "manifest.json").exists():
            t = time.perf_counter()
            out["build_s"] = {k: round(v, 1) for k, v in build(root, args.spaces, args.frames,
                                                                args.objects_per_frame, args.sites).items()}
            out["build_s"]["total"] = round(time.perf_counter() - t, 1)
            print(json.dumps({"build_s": out["build_s"]}), flush=True)
        out["disk_bytes"] = disk_bytes(root, args.spaces)
        print(json.dumps({"disk_bytes": out["disk_bytes"]}), flush=True)
        out["fuse_scores"] = {f"{k} spaces": time_fuse_scores(args.frames, k, args.fuse_repeats)
                              for k in range(2, max(3, len(args.spaces)) + 1)}
        print(json.dumps({"fuse_scores": out["fuse_scores"]}), flush=True)
        got = time_queries(root, args.spaces, args.queries, args.threads)
        out.update(got)
        for c, s in got["queries"].items():
            print(json.dumps({c: s}), flush=True)
        q = got["queries"]
        single = q[args.spaces[0][0]]["p50_ms"]
        out["ratios_to_first_space"] = {c: round(s["p50_ms"] / single, 2) for c, s in q.items()}
        print(json.dumps({"resident_mib": got["resident_mib"]}), flush=True)
        print(json.dumps({"first_query_s": got["first_query_s"],
                          "ratios_to_first_space": out["ratios_to_first_space"]}), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
