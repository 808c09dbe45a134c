"""An index you can trust (issue 15): checksums of every shard file checked at open, by `mvk check` and
by `mvk index`; versioned shards swapped by one pointer so readers never mix two writes; exact shard
names; a broken root manifest rebuilt from the shard manifests; no NaN score in any result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from search import schema, shard_layout, store, writer
from search.testing import encoder_identity, frame_rows, object_rows, random_unit

D = 16
SHARD_FILES = ("frames.faiss", "objects.faiss", "frames.parquet", "objects.parquet", "manifest.json")
REPO = Path(__file__).resolve().parents[1]


def write(root: Path, site: str, n: int = 40, seed: int = 0, tag: str = "", **kw) -> np.ndarray:
    """A shard of ``n`` frames with random 4 KiB thumbnails (incompressible: a flip inside one is silent for
    parquet) and ``n`` objects; returns the frame vectors."""
    rng = np.random.default_rng(seed)
    frames = frame_rows(site, n, videos=2)
    frames["thumbnail"] = [rng.bytes(4096) for _ in range(n)]
    objects = object_rows(np.arange(n) % n)
    fv = random_unit(n, D, seed)
    store.write_shard(root, site, frames, fv, objects, random_unit(n, D, seed + 1), {"tag": tag}, **kw)
    return fv


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "index"
    store.init_index(r, {"encoder": encoder_identity(D)})
    return r


def shard_file(root: Path, site: str, name: str) -> Path:
    """Where ``name`` of ``site``'s shard lies, whatever the layout."""
    found = [p for p in (root / "sites" / site).rglob(name)]
    assert len(found) == 1, found
    return found[0]


def flip(path: Path) -> None:
    """Change bytes in the body of ``path``, keeping its size: vector codes near the end of a FAISS file, a
    thumbnail in the middle of a parquet file, a digit of the write time in a manifest."""
    data = bytearray(path.read_bytes())
    if path.suffix == ".json":
        text = data.decode()
        at = text.index('"written": "') + len('"written": "')
        data[at] = ord("1") if text[at] != "1" else ord("2")
    else:
        at = len(data) - 200 if path.suffix == ".faiss" else len(data) // 2
        for i in range(at, at + 64):
            data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert path.stat().st_size == len(data)


# -- checksums -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHARD_FILES)
def test_same_size_bit_flip_is_caught_at_open(root: Path, name: str) -> None:
    write(root, "A")
    write(root, "B", seed=7)
    flip(shard_file(root, "B", name))
    for verify in ("quick", "full") if name not in store.SIZE_ONLY_WHEN_QUICK else ("full",):
        idx = store.open_index(root, verify=verify)
        assert list(idx.shards) == ["A"] and set(idx.errors) == {"B"}
        assert name in idx.errors["B"]


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_mvk_check_reports_every_broken_file_and_its_repair(root: Path, damage: str, capsys) -> None:
    write(root, "A")
    write(root, "B", seed=7)
    assert main(["check", str(root)]) == 0
    assert "2 shards" in capsys.readouterr().out
    broken = [shard_file(root, "A", "objects.parquet"), shard_file(root, "B", "frames.faiss")]
    for p in broken:
        if damage == "truncate":
            p.write_bytes(p.read_bytes()[:-10])
        elif damage == "delete":
            p.unlink()
        else:
            flip(p)
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    word = {"truncate": "bytes", "delete": "missing", "flip": "checksum"}[damage]
    for p in broken:
        line = next(x for x in out.splitlines() if p.name in x and p.parent.parent.name in x)
        assert word in line
    assert "mvk index" in out                       # what repairs it


def test_mvk_check_quick_does_not_claim_checksums_it_did_not_compute(root: Path, capsys) -> None:
    write(root, "A")
    assert main(["check", str(root), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "checksum" not in out.replace("no checksum computed", "") and "recorded size" in out
    assert main(["check", str(root)]) == 0
    assert "every file matches its checksum" in capsys.readouterr().out


def test_check_of_no_index_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]


# -- reading -----------------------------------------------------------------------------------------------

def test_shard_lookup_by_exact_name_only(root: Path) -> None:
    """``sites/Oahu_Jul2022`` is gone; a folder of another site whose name starts alike must not answer."""
    write(root, "Oahu_Jul2022")
    write(root, "Oahu_Jul2022-North", seed=3)
    sites = root / "sites"
    import shutil
    shutil.rmtree(sites / "Oahu_Jul2022")
    (sites / "Oahu_Jul2022-North").rename(sites / ".old-Oahu_Jul2022-North-0123456789ab")
    idx = store.open_index(root)
    assert "Oahu_Jul2022" in idx.errors and "Oahu_Jul2022" not in idx.shards
    assert not (idx.frames["site"] == "Oahu_Jul2022").any()


def test_versions_are_immutable_and_a_pointer_names_the_current_one(root: Path) -> None:
    write(root, "A", n=5)
    first = store.shard_folder(root, "A")
    write(root, "A", n=7)
    second = store.shard_folder(root, "A")
    assert first != second and first.parent == second.parent == root / "sites" / "A"
    assert first.is_dir()                              # kept for readers that resolved it, until the grace period
    assert len(store.open_index(root).frames) == 7
    assert json.loads((first / "manifest.json").read_text())["counts"]["frames"] == 5


@pytest.mark.parametrize("crash", ["writing files", "before the rename", "before the pointer"])
def test_a_crash_at_any_point_of_the_swap_leaves_nothing_after_the_next_run(root: Path, monkeypatch,
                                                                              crash: str) -> None:
    write(root, "A", n=5)
    site = root / "sites" / "A"
    target, name = {"writing files": (writer, "_write_faiss"), "before the rename": (shard_layout, "publish"),
                    "before the pointer": (shard_layout, "_write_pointer")}[crash]

    def killed(*args, **kw):
        raise KeyboardInterrupt(f"killed {crash} (simulated)")
    with monkeypatch.context() as m:
        m.setattr(target, name, killed)
        with pytest.raises(KeyboardInterrupt):
            write(root, "A", n=6)
    assert len(store.open_index(root).frames) == 5      # the crash left the old version served
    (site / ".tmp-v-0123456789abcdef0123").mkdir()      # what a kill -9 leaves where an exception cleans up
    (site / ".tmp-CURRENT-0123456789ab").write_text("{")
    monkeypatch.setattr(schema, "GRACE_SECONDS", 0.0)
    assert store.recover(root) == []                   # the next mvk index starts with this
    names = sorted(p.name for p in site.iterdir() if p.name != ".lock")
    assert names == sorted(["CURRENT", store.shard_folder(root, "A").name])
    write(root, "A", n=7)                              # and a write after it retires the old version at once
    names = sorted(p.name for p in site.iterdir() if p.name != ".lock")
    assert names == sorted(["CURRENT", store.shard_folder(root, "A").name])
    assert not [p for p in (root / "sites").iterdir() if p.name.startswith(".")]
    assert len(store.open_index(root).frames) == 7


def test_a_broken_pointer_is_reported_and_the_next_write_replaces_it(root: Path, capsys) -> None:
    write(root, "A")
    old = store.shard_folder(root, "A")
    pointer = root / "sites" / "A" / "CURRENT"
    pointer.write_text(pointer.read_text()[:20])
    assert "CURRENT" in store.open_index(root).errors["A"]
    assert main(["check", str(root)]) == 1 and "CURRENT" in capsys.readouterr().out
    write(root, "A", n=6)
    assert not old.exists() and len(store.open_index(root).frames) == 6


def test_old_layout_is_read_then_migrated_by_recover(root: Path) -> None:
    """An index written by the previous version (files loose in sites/<site>/, sizes only) is served with a
    note, and ``store.recover`` (run by every `mvk index`) moves it into a checked version folder."""
    fv = write(root, "A")
    version = store.shard_folder(root, "A")
    site = root / "sites" / "A"
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"] = {name: (version / name).stat().st_size for name in SHARD_FILES if name != "manifest.json"}
    for name in SHARD_FILES:
        (version / name).rename(site / name)
    (site / "manifest.json").write_text(json.dumps(manifest))
    for p in list(site.iterdir()):
        if p.is_dir():
            p.rmdir()
        elif p.name == "CURRENT":
            p.unlink()
    idx = store.open_index(root)
    assert not idx.errors and len(idx.frames) == 40 and any("old layout" in n for n in idx.notes)
    notes = store.recover(root)
    assert any("A" in n and "migrated" in n for n in notes)
    assert (site / "CURRENT").is_file() and not (site / "frames.faiss").exists()
    idx = store.open_index(root)
    assert not idx.errors and not idx.notes
    np.testing.assert_allclose(idx.shards["A"].vectors("frames").astype(np.float32), fv, atol=1e-3)
    assert store.check_index(root).ok


READER = """
import sys, time
from search import store
root = sys.argv[1]
print("ready", flush=True)
start = time.time()
reads = mixed = missing = 0
while time.time() < start + 20 and (reads + missing < 40 or time.time() < start + 3):
    idx = store.open_index(root)
    if "S" not in idx.shards:
        missing += 1
        continue
    sh = idx.shards["S"]
    tag = sh.manifest.get("tag")
    n = len(sh.frames)
    frames_tag = sh.frames["video_id"].iloc[0].split("-")[0]
    if not (tag == frames_tag == f"t{n}" and sh.frame_index.ntotal == n and len(sh.objects) == n):
        mixed += 1
    reads += 1
print(reads, mixed, missing)
"""


def test_reader_never_sees_a_mixed_or_missing_shard_while_a_writer_swaps(root: Path) -> None:
    """A reader process opens the index in a loop (at least 40 times, 3 to 20 s) while this process rewrites the
    shard, alternating two versions (5 and 7 frames, each tagged in its manifest and its rows), until the
    reader is done; every read must be one whole version."""
    def tagged(n: int) -> None:
        frames = frame_rows("S", n)
        frames["video_id"] = f"t{n}-video"
        store.write_shard(root, "S", frames, random_unit(n, D, n), object_rows(np.arange(n)),
                          random_unit(n, D, n + 1), {"tag": f"t{n}"})
    tagged(5)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert reader.stdout.readline().strip() == "ready"
        writes = 0
        while reader.poll() is None:
            tagged(7 if writes % 2 == 0 else 5)
            writes += 1
        out = reader.stdout.read()
    finally:
        reader.kill()
        reader.wait()
    reads, mixed, missing = map(int, out.split())
    assert writes > 5 and reads > 5
    assert (mixed, missing) == (0, 0)


# -- the root manifest ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_broken_root_manifest_is_rebuilt_from_the_shards(root: Path, damage: str) -> None:
    write(root, "A")
    write(root, "B", seed=7)
    path = root / "manifest.json"
    if damage == "truncate":
        path.write_text(path.read_text()[:30])
    elif damage == "delete":
        path.unlink()
    else:
        path.write_text(path.read_text().replace('"hand-made"', '"hand-mbde"'))
    idx = store.open_index(root)                       # served from the shards, with a note
    assert set(idx.shards) == {"A", "B"} and idx.encoder["model"] == "hand-made"
    assert any("manifest.json" in n and "rebuilt" in n for n in idx.notes)
    notes = store.recover(root)                        # what `mvk index` does first: write it back
    assert any("rebuilt" in n for n in notes)
    disk = json.loads(path.read_text())
    assert set(disk["shards"]) == {"A", "B"} and disk["encoder"]["model"] == "hand-made"
    assert not store.open_index(root).notes and store.recover(root) == []


# -- scores -------------------------------------------------------------------------------------------------

def test_no_nan_score_reaches_a_result(root: Path, monkeypatch) -> None:
    """A stored vector that holds NaN (a corrupt write that still matches its checksum) never yields a NaN
    score: search leaves that frame out, the batch scorer (KIS) ranks it last."""
    from search import query as Q
    real = writer._normalise

    def keep_nan(vectors, n, what, dim):
        out = real(np.nan_to_num(vectors), n, what, dim)
        out[1] = np.nan
        return out
    monkeypatch.setattr(writer, "_normalise", keep_nan)
    frames = frame_rows("S", 4)
    store.write_shard(root, "S", frames, random_unit(4, D), object_rows([1, 2]), random_unit(2, D, 3), {})
    monkeypatch.setattr(writer, "_normalise", real)
    idx = store.open_index(root)
    q = random_unit(3, D, 9)
    for fusion in Q.FUSIONS:
        scores = Q.score_frames_batch(idx, q, fusions=[fusion])[fusion]
        assert not np.isnan(scores).any() and np.isneginf(scores[:, 1]).all()
        res = Q.search(idx, None, q[0], k=10, fusion=fusion)
        assert len(res) == 3 and 1 not in set(res["gid"]) and np.isfinite(res["score"]).all()
        assert not res["frame_score"].isna().any()
    from mvk_tools.kis import rank_of_target
    rank, _, _, _ = rank_of_target(Q.score_frames(idx, q[0]), np.array([1]))
    assert rank == 4


# -- repaired by the next `mvk index` ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-site collection and its index, built once; tests damage copies of the index."""
    from mvk_tools.synth import make_collection
    from tests.test_index_cli import index_args
    base = tmp_path_factory.mktemp("built")
    coll = make_collection(base / "coll", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=24, size=(96, 64),
                           fps=12.0, n_objects=2, seed=5)
    assert main(index_args(coll, base / "idx")) == 0
    return coll, base / "idx"


@pytest.mark.parametrize("name", SHARD_FILES)
def test_bit_flip_found_by_check_and_repaired_by_the_next_index_run(built, tmp_path: Path, name: str,
                                                                      capsys) -> None:
    import shutil
    from tests.test_index_cli import index_args
    coll, pristine = built
    idx = Path(shutil.copytree(pristine, tmp_path / "idx"))
    before = store.open_index(idx).shards["Oahu_Jul2022"].vectors("frames")
    flip(shard_file(idx, "Oahu_Jul2022", name))
    capsys.readouterr()
    assert main(["check", str(idx)]) == 1
    assert name in capsys.readouterr().out
    assert "Oahu_Jul2022" in store.open_index(idx, verify="full").errors
    assert main(index_args(coll, idx, "--verify")) == 0
    out = capsys.readouterr().out
    assert "written" in out and "up-to-date" not in out and f"repaired: " in out and name in out
    assert "every file matches its checksum" in out                       # --verify after the run
    idx_after = store.open_index(idx)
    assert not idx_after.errors
    np.testing.assert_array_equal(idx_after.shards["Oahu_Jul2022"].vectors("frames"), before)
    assert main(index_args(coll, idx)) == 0 and "up-to-date" in capsys.readouterr().out


def test_truncated_root_manifest_does_not_stop_mvk_index(built, tmp_path: Path, capsys) -> None:
    import shutil
    from tests.test_index_cli import index_args
    coll, pristine = built
    idx = Path(shutil.copytree(pristine, tmp_path / "idx"))
    path = idx / "manifest.json"
    path.write_text(path.read_text()[:40])
    capsys.readouterr()
    assert main(index_args(coll, idx)) == 0
    out = capsys.readouterr().out
    assert "rebuilt from the manifests of 1 shard(s)" in out and "up-to-date" in out
    assert json.loads(path.read_text())["shards"]["Oahu_Jul2022"]["frames"] == 4
