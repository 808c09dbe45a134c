"""`mvk app` and `mvk demo`: the server command line, folder checks, the offline-weights message, the demo collection."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from app.cli import main
from app.launch import check_folders, streamlit_command


def test_the_server_command_is_an_argument_list_with_the_folders_after_the_double_dash(tmp_path):
    index, collection = check_folders(tmp_path / "idx", tmp_path, create=True)
    assert index.is_dir()                                 # a missing index folder is created (when asked)
    cmd = streamlit_command(index, collection, port=8765, random_weights=True)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/streamlit_app.py")
    after = cmd[cmd.index("--") + 1:]
    assert after[after.index("--index") + 1] == str(index)
    assert after[after.index("--collection") + 1] == str(collection)
    assert "--random-weights" in after
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"      # local only by default
    assert cmd[cmd.index("--server.headless") + 1] == "true"   # always: Streamlit's own opening prompts first


def test_the_app_config_reads_the_script_arguments_then_the_environment(tmp_path):
    from app.state import parse_config

    cfg = parse_config(["--index", str(tmp_path), "--random-weights"], {"MVK_COLLECTION": str(tmp_path / "c")})
    assert cfg.index == tmp_path.resolve() and cfg.collection == (tmp_path / "c").resolve() and cfg.random_weights
    assert cfg.roots == (cfg.index, cfg.collection)
    assert parse_config([], {"MVK_INDEX": str(tmp_path)}).collection is None
    with pytest.raises(ValueError, match="mvk app --index"):
        parse_config([], {})


def test_mvk_app_refuses_a_collection_that_is_not_a_folder(tmp_path, capsys):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    assert main(["app", "--index", str(tmp_path / "idx"), "--collection", str(not_a_folder), "--new-index"]) == 2
    assert "the collection is not a folder" in capsys.readouterr().err
    assert main(["app", "--index", str(not_a_folder)]) == 2
    assert "the index must be a folder" in capsys.readouterr().err


def test_mvk_app_refuses_a_missing_index_folder_naming_the_closest_and_creates_nothing(tmp_path, capsys):
    (tmp_path / "index").mkdir()
    typo = tmp_path / "idnex"
    assert main(["app", "--index", str(typo), "--no-open"]) == 2
    err = capsys.readouterr().err
    assert f"no index folder at {typo}" in err and f"did you mean {tmp_path / 'index'}?" in err
    assert "--new-index" in err and "Traceback" not in err
    assert not typo.exists()


def test_mvk_demo_without_weights_names_both_models_says_how_to_get_each_and_leaves_nothing(tmp_path, capsys,
                                                                                            monkeypatch):
    import search.encoder as enc

    import indexer.backbone as bb

    monkeypatch.setattr(enc, "_hub_reachable", lambda *a, **k: False, raising=False)
    monkeypatch.setattr(bb, "_hub_reachable", lambda *a, **k: False, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-serve"]) == 2
    err = capsys.readouterr().err
    assert "--random-weights" in err and "smoke run" in err
    assert "CLIP ViT-B-32 'openai'" in err and "open_clip.create_model_and_transforms" in err
    assert "DINO dino-vits16" in err and "timm.create_model('vit_small_patch16_224.dino'" in err
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    accepted = set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out))
    suggested = set(re.findall(r"--[a-z][a-z-]+", err))
    assert suggested and suggested <= accepted, suggested - accepted       # only flags mvk demo takes
    assert not out.exists()                                   # nothing half-made, not even an empty folder


def test_mvk_demo_and_app_refuse_a_busy_port_before_building_anything(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "demo"
        assert main(["demo", "--out", str(out), "--random-weights", "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"port {port}" in err and "already in use" in err and "--port" in err
        assert not out.exists()
        assert main(["app", "--index", str(tmp_path / "idx"), "--port", str(port)]) == 2
        assert "already in use" in capsys.readouterr().err
        assert not (tmp_path / "idx").exists()


def test_the_demo_collection_has_the_synthetic_sites_and_copies_of_the_real_clips(tmp_path, brackish_dir):
    from app.demo import DEMO_SITES, REAL_SITE, find_real_clips, make_demo_collection
    from mvk_tools.layout import discover

    clips = find_real_clips()
    assert clips, "the shared brackish clips exist but were not found"
    collection = make_demo_collection(tmp_path / "collection", real_clips=clips, n_frames=12)
    catalog = discover(collection)
    assert set(catalog["site"]) == {*DEMO_SITES, REAL_SITE}
    real = sorted((collection / "videos" / REAL_SITE).iterdir())
    assert [p.stat().st_size for p in real] == [c.stat().st_size for c in clips]
    assert not any(p.is_symlink() for p in real)          # copies: the app serves nothing outside
    first = {p: p.stat().st_mtime_ns for p in (collection / "videos").rglob("*.mp4")}
    make_demo_collection(collection, real_clips=clips, n_frames=12)    # a second demo reuses it untouched
    assert {p: p.stat().st_mtime_ns for p in (collection / "videos").rglob("*.mp4")} == first
