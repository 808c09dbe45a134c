"""Cost of verifying an index at MVK scale: checksum throughput, opening an index with full checksums, with
checksums of the small files only and with sizes only, and the full check (`mvk check`, and the check
every `mvk index` makes of an up-to-date site). Random vectors and random thumbnail bytes of a realistic
size (incompressible, so parquet stores them as they are).

    python3 benchmarks/bench_store.py [--frames 43797 --objects-per-frame 3 --sites 10 --dim 512
        --thumbnail-bytes 10000 --repeats 3]

Files are read from the page cache (just written); the machine's disk speed is not part of the numbers.
Prints one line per measurement: median over --repeats of the wall time.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_kis import median_time  # noqa: E402
from search import store  # noqa: E402
from search.testing import encoder_identity, frame_rows, object_rows, random_unit  # noqa: E402


def build(root: Path, n_frames: int, per_frame: int, dim: int, sites: int, thumb: int) -> None:
    store.init_index(root, {"encoder": encoder_identity(dim)})
    rng = np.random.default_rng(0)
    per_site = -(-n_frames // sites)
    for s in range(sites):
        n = min(per_site, n_frames - s * per_site)
        site = f"Site{s}_Jan2022"
        frames = frame_rows(site, n, videos=max(1, n // 30), fps=1.0)
        frames["thumbnail"] = [rng.bytes(thumb) for _ in range(n)]
        objects = object_rows(np.repeat(np.arange(n), per_frame))
        store.write_shard(root, site, frames, random_unit(n, dim, seed=s),
                          objects, random_unit(len(objects), dim, seed=1000 + s), {})


def hash_rate(path: Path, algorithm: str, repeats: int) -> float:
    size = path.stat().st_size

    def run() -> None:
        with open(path, "rb") as fh:
            hashlib.file_digest(fh, algorithm)
    return size / median_time(run, repeats) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=43797)
    p.add_argument("--objects-per-frame", type=int, default=3)
    p.add_argument("--sites", type=int, default=10)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--thumbnail-bytes", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        t = time.perf_counter()
        build(root, args.frames, args.objects_per_frame, args.dim, args.sites, args.thumbnail_bytes)
        files = sorted((root / "sites").rglob("*.*"))
        total = sum(f.stat().st_size for f in files if f.name in store.SHARD_FILES)
        by_name = {n: sum(f.stat().st_size for f in files if f.name == n) for n in store.SHARD_FILES}
        print(f"built {args.frames} frames, {args.frames * args.objects_per_frame} objects in {args.sites} sites "
              f"in {time.perf_counter() - t:.1f} s; shard files {total / 1e6:.0f} MB: "
              + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in by_name.items()))
        biggest = max((f for f in files if f.name == "frames.parquet"), key=lambda f: f.stat().st_size)
        for algorithm in ("sha256", "blake2b", "md5"):
            print(f"hash {algorithm}: {hash_rate(biggest, algorithm, args.repeats):.0f} MB/s "
                  f"({biggest.stat().st_size / 1e6:.0f} MB file)")
        sized = store.SIZE_ONLY_WHEN_QUICK

        def open_with(mode: str) -> None:
            store.SIZE_ONLY_WHEN_QUICK = store.DATA_FILES if mode == "sizes" else sized
            store.open_index(root, verify="full" if mode == "full" else "quick")
            store.SIZE_ONLY_WHEN_QUICK = sized
        times: dict[str, list[float]] = {"sizes": [], "quick": [], "full": []}
        modes = list(times)
        for r in range(args.repeats):                 # interleaved, order rotated: a drifting load hits all alike
            for mode in modes[r % 3:] + modes[:r % 3]:
                t = time.perf_counter()
                open_with(mode)
                times[mode].append(time.perf_counter() - t)
        med = {mode: statistics.median(got) for mode, got in times.items()}
        print(f"open_index, sizes only: {med['sizes']:.2f} s")
        print(f"open_index, verify=quick (checksums of all but {', '.join(sized)}): {med['quick']:.2f} s "
              f"({med['quick'] / med['sizes']:.2f}x)")
        print(f"open_index, verify=full (every file checksummed): {med['full']:.2f} s "
              f"({med['full'] / med['sizes']:.2f}x)")
        from search.rowgroups import group_digests, read_verified
        lazy = ("thumbnail",)
        digests = group_digests(biggest, lazy)
        t_plain = median_time(lambda: read_verified(biggest, lazy, None), args.repeats)
        t_rows = median_time(lambda: read_verified(biggest, lazy, digests), args.repeats)
        print(f"frame rows of the biggest frames.parquet read at open: {t_plain * 1000:.0f} ms unchecked, "
              f"{t_rows * 1000:.0f} ms with every row group's metadata checked ({t_rows / t_plain:.2f}x)")
        t_check = median_time(lambda: store.check_index(root), args.repeats)
        print(f"check_index (mvk check, full): {t_check:.2f} s, {total / 1e6 / t_check:.0f} MB/s")
        sites = store.list_sites(root)
        t_site = median_time(lambda: [store.verify_shard(root, s) for s in sites], args.repeats)
        print(f"verify_shard of every site (the mvk index up-to-date check): {t_site:.2f} s in all, "
              f"{t_site / len(sites) * 1000:.0f} ms per site")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
