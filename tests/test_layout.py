"""Collection layouts: site names, the MVK tree and its variants, plain folders, flat names, and bad
files that keep their row with an error while the rest goes on."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mvk_tools import layout
from mvk_tools.layout import CATALOG_COLUMNS, NotACollectionError, SiteName, discover, parse_site_name
from mvk_tools.synth import make_collection
from tests.conftest import shared_path
from tests.videofiles import write_audio_only, write_truncated, write_video


@pytest.mark.parametrize("name,expected,date", [
    ("Oahu_Jul2022", SiteName("Oahu", 2022, 7), "2022-07"),
    ("PhuQuoc1_Jun2022", SiteName("PhuQuoc1", 2022, 6), "2022-06"),
    ("Tulamben2_Jun2022", SiteName("Tulamben2", 2022, 6), "2022-06"),
    ("Maldives_Dec2015", SiteName("Maldives", 2015, 12), "2015-12"),
    ("Hong_Kong_sep2021", SiteName("Hong_Kong", 2021, 9), "2021-09"),
    ("brackish", SiteName("brackish", None, None), ""),
    ("Reef_Xyz2022", SiteName("Reef_Xyz2022", None, None), ""),
    ("Reef_Jul22", SiteName("Reef_Jul22", None, None), ""),
])
def test_parse_site_name(name, expected, date):
    assert parse_site_name(name) == expected
    assert parse_site_name(name).date == date


@pytest.mark.shared_data
def test_every_real_mvk_site_name_parses():
    with open(shared_path("mvk", "sites.csv"), newline="") as f:
        folders = [row["Folder"] for row in csv.DictReader(f)]
    assert len(folders) == 36
    for folder in folders:
        name = parse_site_name(folder)
        assert name.month is not None and 2000 < name.year < 2100, folder
        assert folder == f"{name.place}_{layout.MONTHS[name.month - 1].capitalize()}{name.year}"


def test_split_flat_name():
    assert layout.split_flat_name("Tulamben2_Jun2022_0016") == ("Tulamben2_Jun2022", "0016")
    assert layout.split_flat_name("Oahu_Jul2022_0001") == ("Oahu_Jul2022", "0001")
    assert layout.split_flat_name("0016") is None
    assert layout.split_flat_name("my_holiday_clip") is None


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return make_collection(tmp_path_factory.mktemp("synth") / "c", sites=("Oahu_Jul2022", "PhuQuoc1_Jun2022"),
                           videos_per_site=2, n_frames=12, seed=1)


def test_mvk_tree(collection):
    catalog = discover(collection)
    assert list(catalog.columns) == list(CATALOG_COLUMNS)
    assert list(zip(catalog.site, catalog.video_id)) == [
        ("Oahu_Jul2022", "0001"), ("Oahu_Jul2022", "0002"), ("PhuQuoc1_Jun2022", "0001"), ("PhuQuoc1_Jun2022", "0002")]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in catalog.path)
    assert catalog.frame_count.tolist() == [12] * 4 and catalog.fps.tolist() == [12.0] * 4
    assert catalog.width.tolist() == [160] * 4 and catalog.height.tolist() == [96] * 4
    assert catalog.duration.tolist() == pytest.approx([1.0] * 4)
    assert catalog.codec.tolist() == ["h264"] * 4
    assert catalog.place.tolist() == ["Oahu", "Oahu", "PhuQuoc1", "PhuQuoc1"]
    assert catalog.date.tolist() == ["2022-07", "2022-07", "2022-06", "2022-06"]
    assert catalog.has_metadata.all() and catalog.has_selected_frames.all() and (catalog.error == "").all()
    assert [(s.name, s.number) for s in layout.selected_images(collection, "Oahu_Jul2022", "0002")] == \
        [("0002_00001.jpg", 1)]
    assert layout.selected_images(collection, "Oahu_Jul2022", "0009") == []


def test_missing_information_is_flagged(collection, tmp_path):
    copy = shutil.copytree(collection, tmp_path / "c")
    (copy / "information" / "metadata" / "Oahu_Jul2022" / "0001.json").unlink()
    for p in (copy / "information" / "selected_frames" / "PhuQuoc1_Jun2022").glob("0002_*"):
        p.unlink()
    catalog = discover(copy).set_index(["site", "video_id"])
    assert not catalog.loc[("Oahu_Jul2022", "0001"), "has_metadata"]
    assert not catalog.loc[("PhuQuoc1_Jun2022", "0002"), "has_selected_frames"]
    assert catalog.has_metadata.sum() == 3 and catalog.has_selected_frames.sum() == 3


def test_videos_folder_and_folder_of_sites(collection, tmp_path):
    from_videos = discover(collection / "videos")
    assert len(from_videos) == 4 and from_videos.has_metadata.all()      # information/ found beside videos/
    sites_only = shutil.copytree(collection / "videos", tmp_path / "dives")
    catalog = discover(sites_only)
    assert sorted(set(catalog.site)) == ["Oahu_Jul2022", "PhuQuoc1_Jun2022"] and len(catalog) == 4
    assert not catalog.has_metadata.any()


def test_plain_folder_is_one_site(tmp_path):
    folder = tmp_path / "Brackish"
    folder.mkdir()
    write_video(folder / "crab.mp4", n_frames=6)
    write_video(folder / "fish.MOV", n_frames=8)
    catalog = discover(folder)
    assert catalog.site.tolist() == ["Brackish", "Brackish"] and catalog.video_id.tolist() == ["crab", "fish"]
    assert catalog.frame_count.tolist() == [6, 8]
    assert catalog.place.tolist() == ["Brackish"] * 2 and catalog.date.tolist() == ["", ""]


def test_flat_names(tmp_path):
    folder = tmp_path / "vbs"
    folder.mkdir()
    for name in ("Tulamben2_Jun2022_0016.mp4", "Tulamben2_Jun2022_0017.mp4", "Oahu_Jul2022_0003.mp4", "extra.mp4"):
        write_video(folder / name, n_frames=4)
    catalog = discover(folder)
    assert list(zip(catalog.site, catalog.video_id)) == [
        ("Oahu_Jul2022", "0003"), ("Tulamben2_Jun2022", "0016"), ("Tulamben2_Jun2022", "0017"), ("vbs", "extra")]
    assert catalog.date.tolist() == ["2022-07", "2022-06", "2022-06", ""]


def test_bad_files_keep_their_row_and_odd_files_are_skipped(collection, tmp_path):
    copy = shutil.copytree(collection, tmp_path / "c")
    site = copy / "videos" / "Oahu_Jul2022"
    good = site / "0001.mp4"
    write_truncated(good, site / "0003.mp4", keep=0.5)
    (site / "0004.mp4").write_bytes(b"")
    (site / "0005.mp4").write_text("not a video at all\n")
    write_audio_only(site / "0006.mp4")
    write_video(site / "0007.mp4", n_frames=5, size=(65, 47), codec="libx264")    # odd width and height
    write_video(site / "0008.mp4", n_frames=5, size=(48, 96))                    # portrait
    write_video(site / "0009.mp4", n_frames=5, size=(16, 16))                    # tiny
    write_video(site / "0010.mp4", n_frames=4, pts_ms=[0, 40, 300, 340])         # variable frame rate
    for odd in ("README.txt", ".DS_Store", "cover.jpg", "notes.json"):
        (site / odd).write_text("x")
    (copy / "README.txt").write_text("x")
    catalog = discover(copy).set_index("video_id").loc[lambda c: c.site == "Oahu_Jul2022"]
    assert len(catalog) == 10
    errors = catalog.error
    assert "truncated" in errors["0003"] and "0003.mp4" in errors["0003"]
    assert "empty file" in errors["0004"]
    assert "not a readable video" in errors["0005"]
    assert "no video stream" in errors["0006"]
    for vid in ("0003", "0004", "0005", "0006"):
        assert pd.isna(catalog.loc[vid, "frame_count"]) and pd.isna(catalog.loc[vid, "duration"])
    assert (errors[["0001", "0002", "0007", "0008", "0009", "0010"]] == "").all()
    assert (catalog.loc["0007", "width"], catalog.loc["0007", "height"]) == (65, 47)
    assert (catalog.loc["0008", "width"], catalog.loc["0008", "height"]) == (48, 96)
    assert catalog.loc["0010", "frame_count"] == 4
    ignored = sorted(Path(p).name for p in discover(copy).attrs["ignored"])
    assert ignored == [".DS_Store", "README.txt", "cover.jpg", "notes.json"]   # the top README is not looked at


def test_probe_can_be_skipped(collection):
    catalog = discover(collection, probe_videos=False)
    assert len(catalog) == 4 and catalog.frame_count.isna().all() and (catalog.error == "").all()


def test_not_a_collection(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.txt").write_text("x")
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "file.mp4").write_text("x")
    for path, why in ((tmp_path / "missing", "no such folder"), (tmp_path / "file.mp4", "is a file"),
                      (tmp_path / "empty", "no videos found"), (tmp_path / "docs", "no videos found")):
        with pytest.raises(NotACollectionError, match=why) as err:
            discover(path)
        assert str(path) in str(err.value)


def unlistable(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unlistable as a folder without read permission is (root can list any folder, so the
    permission error is raised where the listing asks for it)."""
    real = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)


def test_an_unreadable_site_folder_is_reported_and_the_other_sites_go_on(collection, tmp_path, monkeypatch):
    copy = shutil.copytree(collection, tmp_path / "c")
    unlistable(monkeypatch, copy.resolve() / "videos" / "PhuQuoc1_Jun2022")
    catalog = discover(copy)
    assert set(catalog.site) == {"Oahu_Jul2022"} and len(catalog) == 2
    why = catalog.attrs["site_errors"]["PhuQuoc1_Jun2022"]
    assert "PhuQuoc1_Jun2022" in why and "Permission denied" in why
    folder_of_sites = copy / "videos"                              # the same without the videos/ level
    assert set(discover(folder_of_sites).attrs["site_errors"]) == {"PhuQuoc1_Jun2022"}


def test_broken_and_looping_links_named_like_videos_are_listed_with_their_error(collection, tmp_path):
    copy = shutil.copytree(collection, tmp_path / "c")
    site = copy / "videos" / "Oahu_Jul2022"
    (site / "0003.mp4").symlink_to(tmp_path / "gone.mp4")
    (site / "0004.mp4").symlink_to(site / "0005.mp4")
    (site / "0005.mp4").symlink_to(site / "0004.mp4")
    (site / "0006.mp4").symlink_to(site / "0001.mp4")                  # a good link is a video like any other
    for probe_videos in (True, False):
        catalog = discover(copy, probe_videos=probe_videos).set_index("video_id").loc[lambda c: c.site == "Oahu_Jul2022"]
        errors = catalog.error
        assert "broken symbolic link" in errors["0003"] and "gone.mp4" in errors["0003"]
        assert "symbolic link loop" in errors["0004"] and "symbolic link loop" in errors["0005"]
        assert errors["0006"] == "" and errors["0001"] == ""


def test_a_jpeg_named_mp4_says_it_is_a_jpeg_image(tmp_path):
    from PIL import Image

    folder = tmp_path / "Oahu_Jul2022"
    folder.mkdir()
    write_video(folder / "0001.mp4", n_frames=4)
    Image.new("RGB", (32, 32)).save(folder / "0002.mp4", format="JPEG")
    Image.new("RGB", (32, 32)).save(folder / "0003.mp4", format="PNG")
    errors = discover(folder).set_index("video_id").error
    assert errors["0002"].endswith("0002.mp4: not a video file (it is a JPEG image)")
    assert errors["0003"].endswith("0003.mp4: not a video file (it is a PNG image)")
    assert errors["0001"] == ""
