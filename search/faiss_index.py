"""Building, tuning, reading back and moving the FAISS indexes of a shard.

Every index type stores vectors as float16 where FAISS allows, so one file per table is both the
search structure and the exact vectors (for exact fused scoring):

=========  ==========================================  ===============================  ===========
type       FAISS class                                 bytes per vector (d = 512)       exact?
=========  ==========================================  ===============================  ===========
flat       IndexScalarQuantizer(QT_fp16, IP)           2d = 1024                        yes (fp16)
ivf-flat   IndexIVFScalarQuantizer(QT_fp16, IP)        2d + 8 (id) = 1032               candidates
ivf-pq     IndexIVFPQ(m = d/8 sub-quantizers, IP)      d/8 + 8 = 72                     approximate
hnsw       IndexHNSWSQ(QT_fp16, M, IP)                 2d + ~2M*4 graph links           candidates
=========  ==========================================  ===============================  ===========

IVF types need training data: with fewer vectors than ``MIN_TRAIN_PER_LIST`` per list for at least
``MIN_LISTS`` lists, the table falls back to flat (exact) and a note says so. IVF indexes are written with
their direct map (id -> list and offset, 8 bytes per vector), so reconstructing a few vectors by id reads
only their codes: without it FAISS builds the map by walking every inverted list, which pages a
memory-mapped file in whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from search.errors import InputError

IndexType = Literal["flat", "ivf-flat", "ivf-pq", "hnsw"]
INDEX_TYPES: tuple[str, ...] = ("flat", "ivf-flat", "ivf-pq", "hnsw")

MIN_TRAIN_PER_LIST = 39          # FAISS's own lower bound for k-means without a warning
MIN_LISTS = 8
MAX_TRAIN = 100_000              # k-means runs on a random sample this large at most
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 128


@dataclass
class Built:
    """A built index, the type actually used (after fallback) and its parameters."""
    index: Any
    index_type: str
    params: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def default_nlist(n: int) -> int:
    """About 4 sqrt(N) lists, clamped so each list gets at least MIN_TRAIN_PER_LIST training vectors."""
    return int(min(4 * math.sqrt(max(n, 1)), n // MIN_TRAIN_PER_LIST))


def default_nprobe(nlist: int) -> int:
    return int(max(1, min(nlist, math.ceil(nlist / 8))))


def _pq_m(d: int) -> int:
    """Number of PQ sub-quantizers: the largest divisor of d not above d/8 (one byte each)."""
    target = max(1, d // 8)
    return max(m for m in range(1, target + 1) if d % m == 0)


def build(vectors: np.ndarray, index_type: str = "flat", *, nlist: int | None = None,
          nprobe: int | None = None, hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION,
          ef_search: int = HNSW_EF_SEARCH, seed: int = 0) -> Built:
    """An index over float32 (n, d) L2-normalised ``vectors`` (inner product = cosine), ids 0..n-1:
    ``index_type`` one of INDEX_TYPES (float16 storage; their FAISS factory strings are ``SQfp16``,
    ``IVF<n>,SQfp16``, ``IVF<n>,PQ<m>x<bits>`` and ``HNSW<M>,SQfp16``) or any FAISS factory string
    (``"IVF4096,PQ32x4fs"``, ``"OPQ16,IVF1024,PQ16"``, ...: ``build_factory``). ``params["factory"]`` records the
    built index as ``faiss.contrib.factory_tools.reverse_index_factory`` writes it."""
    import faiss
    if index_type not in INDEX_TYPES:
        return build_factory(vectors, index_type, nprobe=nprobe, seed=seed)
    built = _build_named(vectors, index_type, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                         ef_construction=ef_construction, ef_search=ef_search, seed=seed)
    built.params["factory"] = reverse_factory(built.index)
    return built


def reverse_factory(index: Any) -> str:
    """The FAISS factory string of a built index (empty where FAISS cannot name it)."""
    try:
        from faiss.contrib.factory_tools import reverse_index_factory
        return str(reverse_index_factory(index))
    except Exception:
        return ""


def check_factory(spec: str, d: int = 64) -> None:
    """InputError unless ``spec`` is one of INDEX_TYPES or a factory string FAISS accepts."""
    import faiss
    if spec in INDEX_TYPES:
        return
    try:
        faiss.index_factory(int(d), str(spec), faiss.METRIC_INNER_PRODUCT)
    except Exception as exc:
        import re
        why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        why = re.sub(r"^Error in .* at \S+:\d+: ", "", why)[:200]
        raise InputError(f"unknown index type {spec!r}: neither one of {', '.join(INDEX_TYPES)} nor a FAISS factory "
                         f"string (e.g. \"IVF1024,Flat\", \"HNSW32\", \"IVF4096,PQ32x4fs\"): {why}") from None


def build_factory(vectors: np.ndarray, spec: str, *, nprobe: int | None = None, seed: int = 0) -> Built:
    """An index built by ``faiss.index_factory(d, spec, METRIC_INNER_PRODUCT)``; a table too small to train it
    (fewer vectors than its IVF lists need, or than its PQ codebooks) is stored flat with a note, as the named
    types are. IVF indexes get their direct map (candidate re-scoring reconstructs vectors by id)."""
    import faiss
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    check_factory(spec, d)
    index = faiss.index_factory(d, spec, faiss.METRIC_INNER_PRODUCT)
    ivf = _ivf(index)
    need = ivf.nlist * MIN_TRAIN_PER_LIST if ivf is not None else 0
    if "PQ" in spec.upper():               # 2^bits centroids per sub-quantizer, as many points each as a list
        need = max(need, (16 if "x4" in spec else 256) * MIN_TRAIN_PER_LIST)
    if not index.is_trained and n < max(need, 1):
        flat = _build_named(x, "flat", seed=seed)
        flat.notes.append(f"{spec} needs more vectors to train than the {n} of this table: stored as flat (exact)")
        flat.params["factory"] = reverse_factory(flat.index)
        return flat
    if ivf is not None:
        ivf.cp.seed = seed
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = x if n <= MAX_TRAIN else x[np.sort(rng.choice(n, MAX_TRAIN, replace=False))]
        try:
            index.train(sample)
        except RuntimeError as exc:
            flat = _build_named(x, "flat", seed=seed)
            flat.notes.append(f"{spec} could not be trained on {n} vectors ({str(exc).splitlines()[-1][:120]}): "
                              f"stored as flat (exact)")
            flat.params["factory"] = reverse_factory(flat.index)
            return flat
    index.add(x)
    params: dict = {}
    if ivf is not None:
        ivf.make_direct_map()
        ivf.nprobe = nprobe if nprobe is not None else default_nprobe(ivf.nlist)
        params.update({"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)})
    params["factory"] = reverse_factory(index)
    return Built(index, spec, params, [])


def _build_named(vectors: np.ndarray, index_type: str, *, nlist: int | None = None, nprobe: int | None = None,
                 hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION, ef_search: int = HNSW_EF_SEARCH,
                 seed: int = 0) -> Built:
    """The four named index types, float16 storage."""
    import faiss
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    notes: list[str] = []
    ip = faiss.METRIC_INNER_PRODUCT
    fp16 = faiss.ScalarQuantizer.QT_fp16
    if index_type in ("ivf-flat", "ivf-pq"):
        lists = nlist if nlist is not None else default_nlist(n)
        lists = min(lists, n // MIN_TRAIN_PER_LIST)
        if lists < MIN_LISTS or (index_type == "ivf-pq" and n < 256):
            notes.append(f"{index_type} needs at least {MIN_LISTS * MIN_TRAIN_PER_LIST} vectors to train, "
                         f"got {n}: stored as flat (exact)")
            index_type = "flat"
    if index_type == "flat":
        index = faiss.IndexScalarQuantizer(d, fp16, ip)
        index.train(x[:1] if n else np.zeros((1, d), np.float32))
        index.add(x)
        return Built(index, "flat", {}, notes)
    if index_type == "hnsw":
        index = faiss.IndexHNSWSQ(d, fp16, hnsw_m, ip)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.train(x[:1] if n else np.zeros((1, d), np.float32))
        index.add(x)
        return Built(index, "hnsw", {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef_search}, notes)
    rng = np.random.default_rng(seed)
    sample = x if n <= MAX_TRAIN else x[np.sort(rng.choice(n, MAX_TRAIN, replace=False))]
    quantizer = faiss.IndexFlatIP(d)
    params: dict = {"nlist": lists}
    if index_type == "ivf-flat":
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, lists, fp16, ip)
    else:
        m = _pq_m(d)
        nbits = 8 if len(sample) >= 256 * MIN_TRAIN_PER_LIST else max(4, int(math.log2(len(sample) // MIN_TRAIN_PER_LIST)))
        nbits = min(nbits, 8)
        index = faiss.IndexIVFPQ(quantizer, d, lists, m, nbits, ip)
        params.update({"m": m, "nbits": nbits})
    index.cp.seed = seed
    index.train(sample)
    index.add(x)
    index.make_direct_map()
    index.nprobe = nprobe if nprobe is not None else default_nprobe(lists)
    params["nprobe"] = int(index.nprobe)
    return Built(index, index_type, params, notes)


def set_search_params(index: Any, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Tune an index for search: nprobe for IVF types, efSearch for HNSW (no effect on flat)."""
    import faiss
    if nprobe is not None:
        try:
            faiss.extract_index_ivf(index).nprobe = int(nprobe)
        except RuntimeError:
            pass
    if ef_search is not None and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(ef_search)


def search_candidates(index: Any, queries: np.ndarray, n: int) -> np.ndarray:
    """The top-``n`` ids of every query, (q, n) int64, -1 where the index holds fewer."""
    return search_scored(index, queries, n)[1]


def search_params(index: Any, n: int, *, nprobe: int | None = None, ef_search: int | None = None):
    """Per-call FAISS search parameters (the shared index is not modified, so concurrent searches stay safe):
    ``nprobe`` lists of an IVF table; HNSW explores ``ef_search`` nodes, by default at least ``n`` (a graph
    returns at most efSearch results). None where the defaults stored with the index apply."""
    import faiss
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index
    params = None
    if hasattr(inner, "hnsw"):
        ef = int(ef_search) if ef_search is not None else max(int(inner.hnsw.efSearch), int(n))
        if ef != inner.hnsw.efSearch:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
    elif nprobe is not None and _ivf(index) is not None:
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe)
    if params is not None and inner is not index:
        wrapped = faiss.SearchParametersPreTransform()
        wrapped.index_params = params
        wrapped.referenced = params       # keep the inner parameters alive with the wrapper
        params = wrapped
    return params


def search_scored(index: Any, queries: np.ndarray, n: int, *, nprobe: int | None = None,
                  ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the top-``n`` stored vectors of every query, each (q, n); ids -1 where the index
    holds fewer. Inner products for the types built here (exact over the stored float16 codes for flat,
    ivf-flat and hnsw; PQ's approximation for PQ types). ``nprobe``/``ef_search``: ``search_params``."""
    params = search_params(index, n, nprobe=nprobe, ef_search=ef_search)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(n), params=params)
    return scores, ids


def reconstruct_all(index: Any) -> np.ndarray:
    """The stored vectors as (n, d) float16, in id order (PQ codes decode to their approximation)."""
    import faiss
    n, d = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, d), np.float16)
    if isinstance(index, faiss.IndexScalarQuantizer) and index.sa_code_size() == 2 * d:
        codes = faiss.vector_to_array(index.codes)
        return codes.view(np.float16).reshape(n, d).copy()
    ivf = _ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    out = np.empty((n, d), np.float16)
    step = 65536
    for start in range(0, n, step):
        stop = min(n, start + step)
        out[start:stop] = index.reconstruct_n(start, stop - start)
    return out


def reconstruct_ids(index: Any, ids: np.ndarray) -> np.ndarray:
    """(len(ids), d) float32 stored vectors of the given ids."""
    import faiss
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size == 0:
        return np.zeros((0, index.d), np.float32)
    ivf = _ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()
    return index.reconstruct_batch(ids)


def _ivf(index: Any) -> Any | None:
    """The IVF index inside ``index`` (itself, or under a pre-transform), None when it has none."""
    import faiss
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def scores_of_ids(index: Any, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products of one ``query`` (d,) with the stored vectors of ``ids`` (sorted, unique), float32;
    NaN where a stored vector is invalid (or, for IVF, missing). Flat float16 codes (and HNSW's storage)
    are gathered from the (memory-mapped) codes directly; an IVF table is scanned by FAISS with an id
    selector (every list's ids are checked, only the selected codes scored: 2-3x faster than
    reconstructing 6,000 of 300,000 one by one, which copies each code) unless the ids are fewer than
    1/128 of the table and its direct map is there (then reconstructing them costs less than reading
    every id); other types are reconstructed."""
    import faiss
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    q = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
    if ids.size == 0:
        return np.zeros(0, np.float32)
    storage = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    codes = _fp16_codes(storage)
    if codes is not None:
        import torch
        return (torch.from_numpy(codes[ids]).float() @ torch.from_numpy(q)).numpy()
    ivf = _ivf(index)
    if ivf is None or (ids.size * 128 < index.ntotal and ivf.direct_map.type != faiss.DirectMap.NoMap):
        return reconstruct_ids(index, ids) @ q
    selector = faiss.IDSelectorBatch(ids)
    params = faiss.SearchParametersIVF()
    params.nprobe = int(ivf.nlist)
    params.sel = selector
    lims, dist, found = index.range_search(q[None, :], float(np.finfo(np.float32).min), params=params)
    out = np.full(ids.size, np.nan, np.float32)
    out[np.searchsorted(ids, found)] = dist
    return out


def bytes_per_vector(index: Any) -> float:
    """Serialized size of the index divided by its number of vectors."""
    import faiss
    if index.ntotal == 0:
        return float("nan")
    return len(faiss.serialize_index(index)) / index.ntotal


def to_device(index: Any, device: str) -> tuple[Any, list[str]]:
    """The index on ``device`` ('cpu' or 'cuda[:N]') and notes. Raises InputError when FAISS has no GPU."""
    import faiss
    if not str(device).startswith("cuda"):
        return index, []
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise InputError(f"device {device!r} asked for the index, but this FAISS build sees no GPU "
                         f"(faiss.get_num_gpus() == 0): install faiss-gpu (pip install -e '.[gpu]') on a "
                         f"machine with CUDA, or use --device cpu")
    gpu = int(str(device).split(":")[1]) if ":" in str(device) else 0
    res = faiss.StandardGpuResources()
    co = faiss.GpuClonerOptions()
    co.useFloat16 = True
    if hasattr(index, "hnsw"):
        return index, ["HNSW has no FAISS GPU version: that index stays on the CPU"]
    if isinstance(index, faiss.IndexScalarQuantizer):
        flat = faiss.IndexFlatIP(index.d)
        flat.add(reconstruct_all(index).astype(np.float32))
        index = flat
    moved = faiss.index_cpu_to_gpu(res, gpu, index, co)
    moved.referenced_resources = res
    return moved, []


# -- reading memory-mapped and scoring in blocks ---------------------------------------------------

SCORE_BLOCK = 1024       # stored vectors converted to float32 at a time by ``inner_products``: 2 MiB at d = 512,
                         # so the converted block is still in cache for the matmul (12x faster for one query
                         # than 16384, which spilled to memory; benchmarks/bench_serving.py "blocks")
BATCH_BLOCK = 8192       # stored vectors per block when many queries share it: a matrix product per block pays for
                         # the conversion, and 8x fewer parallel regions keep 2 threads from waiting on each
                         # other (KIS ranking, benchmarks/bench_threads.py)
RANGE_QUERIES = 8        # up to this many queries, an IVF table is scored by FAISS's own list scanner


def read(path: str, *, mmap: bool = True) -> tuple[Any, bool]:
    """A FAISS index read from ``path``: memory-mapped when ``mmap`` (the codes stay in the file and the
    OS pages them in as searches touch them), else loaded. Returns (index, whether it is mapped). FAISS
    1.15 maps flat and HNSW storage with IO_FLAG_MMAP_IFC and IVF inverted lists with IO_FLAG_MMAP (which
    refuses IO_FLAG_MMAP_IFC), so both are tried in turn; a FAISS that refuses both loads the file (False)."""
    import faiss
    if mmap:
        read_only = getattr(faiss, "IO_FLAG_READ_ONLY", 0)
        for flags in (getattr(faiss, "IO_FLAG_MMAP_IFC", 0), getattr(faiss, "IO_FLAG_MMAP", 0)):
            if not flags:
                continue
            try:
                return faiss.read_index(path, flags | read_only), True
            except RuntimeError:
                continue
    return faiss.read_index(path), False


def _fp16_codes(index: Any) -> np.ndarray | None:
    """The (n, d) float16 codes of a flat fp16 scalar quantizer as a view (no copy), else None."""
    import faiss
    n, d = index.ntotal, index.d
    if not isinstance(index, faiss.IndexScalarQuantizer) or index.sa_code_size() != 2 * d or n == 0:
        return None
    return faiss.rev_swig_ptr(index.codes.data(), n * 2 * d).view(np.float16).reshape(n, d)


def _blocks(index: Any, queries: np.ndarray, block: int):
    """(ids, (m, d) stored vectors, (q, m) score offset or None) covering every stored vector once."""
    import faiss
    n, d = index.ntotal, index.d
    storage = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    codes = _fp16_codes(storage)
    if codes is not None:
        for start in range(0, n, block):
            yield slice(start, min(n, start + block)), codes[start:start + block], None
        return
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        ivf = None
    if ivf is not None and isinstance(ivf, faiss.IndexIVFScalarQuantizer) and ivf.code_size == 2 * d:
        lists = ivf.invlists
        if ivf.by_residual:
            centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
            offsets = np.asarray(queries, np.float32) @ centroids.T          # (q, nlist): q . centroid
        ids, vecs, which, size = [], [], [], 0
        for lst in range(ivf.nlist):
            m = lists.list_size(lst)
            if m == 0:
                continue
            ptr = lists.get_codes(lst)
            vecs.append(faiss.rev_swig_ptr(ptr, m * 2 * d).view(np.float16).reshape(m, d).copy())
            lists.release_codes(lst, ptr)
            ptr = lists.get_ids(lst)
            ids.append(faiss.rev_swig_ptr(ptr, m).copy())
            lists.release_ids(lst, ptr)
            which.append(np.full(m, lst, np.int64))
            size += m
            if size >= block or lst == ivf.nlist - 1:
                rows = np.concatenate(which)
                yield (np.concatenate(ids), np.concatenate(vecs),
                       offsets[:, rows] if ivf.by_residual else None)
                ids, vecs, which, size = [], [], [], 0
        if size:
            rows = np.concatenate(which)
            yield np.concatenate(ids), np.concatenate(vecs), offsets[:, rows] if ivf.by_residual else None
        return
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()
    for start in range(0, n, block):
        m = min(block, n - start)
        yield slice(start, start + m), index.reconstruct_n(start, m), None


def scores_by_list_scan(index: Any, queries: np.ndarray) -> np.ndarray | None:
    """(q, n) inner products of an IVF table from FAISS's list scanner, probing every list with a range
    search of unbounded radius (vectors whose code gives no finite score are left at -inf); None for other
    types. One SIMD pass over the codes: about 15x faster than converting the lists to float32 blocks for
    one query, slower for batches (each query rescans the codes), hence ``RANGE_QUERIES``."""
    import faiss
    ivf = _ivf(index)
    if ivf is None:
        return None
    params = faiss.SearchParametersIVF()
    params.nprobe = int(ivf.nlist)
    lims, dist, ids = index.range_search(queries, float(np.finfo(np.float32).min), params=params)
    out = np.full((len(queries), index.ntotal), -np.inf, np.float32)
    for i in range(len(queries)):
        out[i, ids[lims[i]:lims[i + 1]]] = dist[lims[i]:lims[i + 1]]
    return out


def inner_products(index: Any, queries: np.ndarray, *, block: int | None = None) -> np.ndarray:
    """(q, n) float32 inner products of ``queries`` (q, d) with every stored vector, in id order, computed
    from the stored codes (memory-mapped or not): no float32 copy of the table is kept. Up to ``RANGE_QUERIES``
    queries: FAISS's own scanners, one SIMD pass over the codes per query (``scores_by_code_scan`` for flat
    and HNSW float16 tables, ``scores_by_list_scan`` for IVF ones); more queries, or other types: block by
    block, float16 blocks converted by torch and multiplied by all the queries at once (a matrix product that
    pays for the conversion; numpy's float16 conversion is ten times slower than the matmul)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if index.ntotal == 0:
        return np.empty((len(q), 0), np.float32)
    if len(q) <= RANGE_QUERIES:
        scanned = scores_by_code_scan(index, q)
        if scanned is None:
            scanned = scores_by_list_scan(index, q)
        if scanned is not None:
            return scanned
    return scores_by_blocks(index, q, block or (SCORE_BLOCK if len(q) <= RANGE_QUERIES else BATCH_BLOCK))


def scores_by_code_scan(index: Any, queries: np.ndarray) -> np.ndarray | None:
    """(q, n) inner products of a flat float16 table (or an HNSW table's float16 storage) from FAISS's own
    scalar-quantizer scanner, one query at a time straight over the stored codes: the float16 to float32
    conversion is fused with the multiply in SIMD registers (no float32 block is written), so one pass reads
    each code once at the memory's speed, the same arithmetic as FAISS's ``search`` on that table. Vectors whose
    code gives no finite score are left at -inf. None for other index types."""
    import faiss
    storage = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    if _fp16_codes(storage) is None:
        return None
    n = storage.ntotal
    codes = storage.codes.data()
    low = float(np.finfo(np.float32).min)
    out = np.full((len(queries), n), -np.inf, np.float32)
    for i, query in enumerate(np.ascontiguousarray(queries, dtype=np.float32)):
        scanner = storage.sq.select_InvertedListScanner(faiss.METRIC_INNER_PRODUCT, None, True, None, False)
        scanner.set_query(faiss.swig_ptr(query))
        scanner.set_list(0, 0.0)                     # one "list" holding every code: its ids are the rows
        result = faiss.RangeSearchResult(1)
        partial = faiss.RangeSearchPartialResult(result)
        scanner.scan_codes_range(n, codes, None, low, partial.new_result(0))
        partial.finalize()
        found = int(faiss.rev_swig_ptr(result.lims, 2)[1])
        if found:
            rows = faiss.rev_swig_ptr(result.labels, found)
            out[i, rows] = faiss.rev_swig_ptr(result.distances, found)
    return out


def scores_by_blocks(index: Any, q: np.ndarray, block: int) -> np.ndarray:
    """``inner_products`` by float32 blocks of ``block`` stored vectors (any index type)."""
    import torch
    out = np.empty((len(q), index.ntotal), np.float32)
    if index.ntotal == 0:
        return out
    qt = torch.from_numpy(q)
    for ids, vecs, offset in _blocks(index, q, block):
        v = torch.from_numpy(np.asarray(vecs))
        s = (qt @ v.float().T).numpy()
        if offset is not None:
            s += offset
        out[:, ids] = s
    return out
