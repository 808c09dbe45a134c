"""`mvk index` as a user runs it: summary table, exit codes, errors in one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.cli import main

SITES = ("Oahu_Jul2022", "PhuQuoc1_Jun2022")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mvk_tools.synth import make_collection
    return make_collection(tmp_path_factory.mktemp("coll"), sites=SITES, videos_per_site=1, n_frames=24,
                           size=(96, 64), fps=12.0, n_objects=2, seed=5)


def index_args(collection: Path, index: Path, *extra: str, progress: bool = False, model: str | None = None
               ) -> list[str]:
    """`mvk index` arguments for a synthetic collection with the tiny random test models (shared with
    tests/test_pool_features.py)."""
    from search.encoder import TEST_MODEL
    from tests.test_pipeline import TEST_BACKBONE
    return ["index", str(collection), "--index", str(index), "--model", model or TEST_MODEL,
            "--backbone", TEST_BACKBONE, "--random-weights", "--every", "0.5", "--max-side", "0",
            "--batch-size", "4", *([] if progress else ["--no-progress"]), *extra]



def test_index_prints_summary_and_resumes(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", SITES[0], progress=True)) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert SITES[0] in out and "written" in out and "RANDOM weights" in out
    assert f"{SITES[0]} (1 video)" in captured.err and "frame" in captured.err      # tqdm bars on stderr
    assert "1 videos" not in captured.err
    assert (captured.out + captured.err).count("engine local") == 1                 # in the summary only
    assert SITES[1] not in out
    assert main(index_args(collection, idx, "--all")) == 0
    out = capsys.readouterr().out
    assert "up-to-date" in out and "written" in out
    from search.store import open_index
    index = open_index(idx)
    assert len(index.frames) == 8 and len(index.objects) > 0
    assert index.manifest["encoder"]["random_weights"] is True


def test_rerun_with_nothing_to_do_loads_no_model(collection, tmp_path, capsys, monkeypatch) -> None:
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", SITES[0])) == 0
    capsys.readouterr()

    from search.errors import InputError

    def refuse(**kwargs):
        raise InputError("models loaded for a run with nothing to do")
    import indexer.models
    monkeypatch.setattr(indexer.models, "load_models", refuse)
    assert main(index_args(collection, idx, "--site", SITES[0])) == 0
    out = capsys.readouterr().out
    assert "up-to-date" in out and "is up to date" in out and "RANDOM weights" in out
    # a site that needs work loads them (and the refusal surfaces), the index untouched so far
    assert main(index_args(collection, idx, "--all")) == 2
    assert "models loaded" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(index_args(collection, idx, "--all")) == 0
    out = capsys.readouterr().out
    assert "up-to-date" in out and "written" in out


def test_unknown_site_and_other_settings_are_one_line_errors(collection, tmp_path, capsys) -> None:
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", "Atlantis_Jan2000")) == 2
    err = capsys.readouterr().err
    assert "unknown site(s) Atlantis_Jan2000" in err and SITES[0] in err
    assert main(index_args(collection, idx, "--site", SITES[0], "--objects", "none")) == 0
    capsys.readouterr()
    assert main(index_args(collection, idx, "--site", SITES[1], "--objects", "pool")) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mvk index: error:") and "--objects: index has 'none', you asked 'pool'" in last


def test_some_failed_exit_0_nothing_indexed_exit_1(collection, tmp_path, capsys) -> None:
    coll = Path(shutil.copytree(collection, tmp_path / "coll"))
    (coll / "videos" / SITES[0] / "0002.mp4").write_bytes(b"not a video at all")
    assert main(index_args(coll, tmp_path / "a", "--site", SITES[0])) == 0
    out = capsys.readouterr().out
    assert "1 error(s)" in out and "0002.mp4" in out and "some videos failed" in out
    for p in (coll / "videos" / SITES[1]).glob("*.mp4"):
        p.write_bytes(b"garbage")
    assert main(index_args(coll, tmp_path / "b", "--site", SITES[1])) == 1
    assert "nothing could be indexed" in capsys.readouterr().out


def test_sigkill_mid_run_then_resume(tmp_path, capsys) -> None:
    """A real kill -9 of `python -m indexer index` after its first video: the rerun resumes without duplicates."""
    import signal
    import subprocess
    import sys
    import time

    from mvk_tools.synth import make_collection
    from search.store import open_index
    coll = make_collection(tmp_path / "coll", sites=SITES[:1], videos_per_site=4, n_frames=24, size=(96, 64),
                           fps=12.0, n_objects=2, seed=7)
    idx = tmp_path / "idx"
    proc = subprocess.Popen([sys.executable, "-m", "indexer", *index_args(coll, idx)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(idx.glob(".work/*/*.done.json")):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (idx / "sites" / SITES[0]).exists()
    assert main(index_args(coll, idx)) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(SITES[0]))
    assert row[1] == "written" and int(row[3]) >= 1 and int(row[2]) + int(row[3]) == 4   # some resumed
    frames = open_index(idx).frames
    assert len(frames) == 16 and not frames.duplicated(["video_id", "frame_index"]).any()


def test_new_site_joins_with_the_models_the_index_records(collection, tmp_path, capsys) -> None:
    """Adding a site needs no model flags: the index's own models are used; without --random-weights on an
    index built with random weights the refusal says what to pass."""
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", SITES[0])) == 0
    capsys.readouterr()
    bare = ["index", str(collection), "--index", str(idx), "--site", SITES[1], "--every", "0.5", "--max-side", "0",
            "--batch-size", "4", "--no-progress"]
    assert main(bare) == 2
    assert "pass --random-weights" in capsys.readouterr().err
    assert main([*bare, "--random-weights"]) == 0
    from search.encoder import TEST_MODEL
    from search.store import open_index
    index = open_index(idx)
    assert sorted(index.shards) == sorted(SITES)
    assert index.manifest["encoder"]["model"] == TEST_MODEL


def test_a_new_site_takes_every_recorded_setting_and_a_differing_flag_is_named_alone(collection, tmp_path, capsys,
                                                                                     monkeypatch) -> None:
    """Sampling, decode size and segmentation recorded by the index are used for the flags left out; a flag
    that differs is refused before any model loads, and the message names only that flag."""
    import indexer.models as models

    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", SITES[0], "--short-side", "96", "--tau", "1.2")) == 0
    capsys.readouterr()
    bare = ["index", str(collection), "--index", str(idx), "--site", SITES[1], "--random-weights", "--no-progress"]
    loaded = []
    real_load = models.load_models
    monkeypatch.setattr(models, "load_models", lambda **kw: loaded.append(kw) or real_load(**kw))
    assert main([*bare, "--every", "2", "--short-side", "96", "--max-side", "0"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--every: index has 0.5, you asked 2.0" in last
    assert "short-side" not in last and "max-side" not in last and "tau" not in last   # only what differs
    assert not loaded                                                                   # before any model
    assert main(bare) == 0
    from search.store import open_index
    index = open_index(idx)
    assert sorted(index.shards) == sorted(SITES)
    assert index.manifest["segmentation"]["short_side"] == 96 and index.manifest["segmentation"]["tau"] == 1.2
    assert (index.frames.groupby("site").size() == 4).all()          # every 0.5 s on both sites


def test_unknown_sites_are_refused_before_the_models_load(collection, tmp_path, capsys, monkeypatch) -> None:
    import indexer.models as models

    monkeypatch.setattr(models, "load_models", lambda **kw: pytest.fail("a model was loaded"))
    assert main(index_args(collection, tmp_path / "idx", "--site", "Oahu")) == 2
    assert "unknown site(s) Oahu (did you mean Oahu_Jul2022?)" in capsys.readouterr().err


def test_an_unreadable_site_folder_is_reported_and_the_other_sites_are_indexed(collection, tmp_path, capsys,
                                                                                monkeypatch) -> None:
    from tests.test_layout import unlistable

    unlistable(monkeypatch, collection.resolve() / "videos" / SITES[1])
    idx = tmp_path / "idx"
    assert main(index_args(collection, idx, "--site", SITES[0])) == 0            # another site: not even looked at
    assert "written" in capsys.readouterr().out
    assert main(index_args(collection, idx, "--all")) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith(SITES[1]))
    assert row[1] == "failed" and f"{SITES[1]}:" in out and "Permission denied" in out


def test_an_index_type_fallback_is_said_in_the_output(collection, tmp_path, capsys) -> None:
    assert main(index_args(collection, tmp_path / "idx", "--site", SITES[0], "--index-type", "ivf-flat")) == 0
    out = capsys.readouterr().out
    assert f"{SITES[0]}: ivf-flat needs at least" in out and "stored as flat (exact)" in out
