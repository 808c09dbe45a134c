"""The Index page's work without the page: error lines, progress captions, and videos reached through links
leading out of the collection."""
from __future__ import annotations

import shutil

from app import indexing
from app.state import AppConfig, Job


def test_a_failed_videos_path_is_named_once():
    rel = "videos/Oahu_Jul2022/0003.mp4"
    for message in (f"{rel}: no frame could be decoded", f"/data/c/{rel}: not a video file (it is a JPEG image)",
                    f"cannot read /data/c/{rel}: [Errno 2] No such file"):
        line = indexing.error_line("Oahu_Jul2022", rel, message)
        assert line.count("0003.mp4") == 1, line
    assert indexing.error_line("Oahu_Jul2022", "", "no video of this site could be indexed") == \
        "Oahu_Jul2022: no video of this site could be indexed"


def test_the_progress_caption_says_models_loading_then_counts_frames():
    job = Job("index")
    job.update(message="loading the models")
    assert indexing.progress_text(job, 3.2) == "loading the models · 3 s"
    job.update(total=10, done=4, message="Oahu_Jul2022 · video 0001")
    assert indexing.progress_text(job, 7) == "Oahu_Jul2022 · video 0001 · 4/10 frames · 7 s"


def test_the_index_page_redraws_only_while_a_job_runs_backing_off_as_it_runs():
    assert indexing.redraw_every(None, 100.0) is None                 # no job: an idle page never redraws
    job = Job("index", started=100.0)
    intervals = [indexing.redraw_every(job, 100.0 + age) for age in (0, 5, 30, 200, 3600)]
    assert intervals[0] <= 1.0 and intervals == sorted(intervals) and intervals[-1] <= 10.0
    assert intervals[-1] > intervals[0]
    job.finished, job.ended = True, 130.0
    assert indexing.redraw_every(job, 131.0) is None                  # a finished job: the redraws stop


def test_a_finished_jobs_duration_stops_counting_when_it_ends(tmp_path):
    from app.state import JobRegistry

    job = JobRegistry().start("index", lambda job: None)
    job.thread.join(10)
    assert job.finished and job.ended >= job.started
    took = indexing.job_seconds(job, job.ended)
    assert indexing.job_seconds(job, job.ended + 60) == took          # a minute later it still took as long
    running = Job("index", started=10.0)
    assert indexing.job_seconds(running, 25.0) == 15.0


def test_videos_linked_from_outside_the_collection_are_refused_and_no_outside_path_is_stored(tmp_path):
    from mvk_tools.synth import make_collection
    from search.store import open_index

    collection = make_collection(tmp_path / "c", sites=("Oahu_Jul2022",), videos_per_site=1, n_frames=12)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(collection / "videos" / "Oahu_Jul2022" / "0001.mp4", elsewhere / "private.mp4")
    from indexer.models import load_models
    from indexer.pipeline import IndexConfig, index_collection
    encoder, extractor = load_models(model="mvk-tiny-vit", pretrained=None, backbone="color", random_weights=True)
    index_collection(collection, tmp_path / "idx", encoder=encoder, extractor=extractor,
                     config=IndexConfig(every_seconds=0.5))                # the index the app was started on
    (collection / "videos" / "Oahu_Jul2022" / "0002.mp4").symlink_to(elsewhere / "private.mp4")
    cfg = AppConfig(index=tmp_path / "idx", collection=collection.resolve(), random_weights=True)
    job = Job("index")
    result = indexing.build_sites(cfg, collection.resolve() / "videos", None, rebuild=True, job=job)
    assert job.notes == ["videos/Oahu_Jul2022/0002.mp4: refused: a symbolic link leading out of the collection"]
    assert result.ok and not result.errors
    frames = open_index(cfg.index).frames
    assert set(frames["video_id"]) == {"0001"}
    stored = "".join(p.read_text() for p in cfg.index.rglob("*.json"))
    assert str(elsewhere) not in stored and "private.mp4" not in stored
    assert not any(str(p).startswith("/") for p in frames["video_path"])


def test_the_random_weights_banner_names_the_models_in_words_not_manifest_keys():
    from app.ui.common import part_names, random_parts

    manifest = {"encoder": {"model": "mvk-tiny-vit", "random_weights": True},
                "indexing": {"backbone": {"backbone": "mvk-tiny-dino", "random_weights": True}}}
    names = part_names(random_parts(manifest))
    assert names == ["CLIP encoder", "segmentation backbone"]
    assert not any("." in n or "_" in n for n in names)
