"""`python -m search search`: table, JSON, the index's encoder by default, clear errors (exit code 2)."""
import json

import numpy as np
import pytest
from PIL import Image

from search import store
from search.cli import main
from search.encoder import TEST_MODEL, load_encoder
from search.testing import frame_rows, object_rows

TEXTS = ["a turtle", "a diver", "a shark", "coral reef", "a wreck", "sand"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    enc = load_encoder(TEST_MODEL, random_weights=True)
    root = tmp_path_factory.mktemp("cli") / "index"
    store.init_index(root, {"encoder": enc.identity()})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (36, 64, 3), dtype=np.uint8) for _ in range(2)]
    fv = np.concatenate([enc.encode_text(TEXTS), enc.encode_images(images)])
    store.write_shard(root, "Anilao_2019-04", frame_rows("Anilao_2019-04", 8, videos=2, date="2019-04"), fv,
                      object_rows([0, 2]), enc.encode_text(["a small turtle", "a shark fin"]), {})
    img_path = root.parent / "query.png"
    Image.fromarray(images[1]).save(img_path)
    return root, img_path


def run_cli(capsys, *argv):
    code = main(["search", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_with_index_encoder(built, capsys):
    root, _ = built
    code, out, err = run_cli(capsys, "a shark", "--index", str(root), "--json", "-k", "3", "--fusion", "frame")
    assert code == 0
    data = json.loads(out)
    assert data["encoder"]["model"] == TEST_MODEL and data["encoder"]["random_weights"] is True
    assert data["results"][0]["gid"] == 2 and len(data["results"]) == 3
    assert any("random weights" in n for n in data["notes"])


def test_table(built, capsys):
    root, _ = built
    code, out, err = run_cli(capsys, "a turtle", "--index", str(root), "--group-by", "video")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "frame_score"] and len(lines) == 3   # 2 videos
    assert "random weights" in err


def test_image_query(built, capsys):
    root, img = built
    code, out, _ = run_cli(capsys, "--image", str(img), "--index", str(root), "--json", "-k", "1")
    assert code == 0 and json.loads(out)["results"][0]["gid"] == 7


def test_temporal(built, capsys):
    root, _ = built
    code, out, _ = run_cli(capsys, "a turtle", "--then", "a shark", "--within", "5", "--index", str(root), "--json")
    assert code == 0
    top = json.loads(out)["results"][0]
    assert (top["first_gid"], top["then_gid"]) == (0, 2)


@pytest.mark.parametrize("argv,match", [
    (["   "], "empty"),
    (["x", "--site", "Nowhere"], "unknown site 'Nowhere'"),
    (["x", "--site", "anilao"], "that is a place; filter by place with --place anilao (its sites: Anilao_2019-04)"),
    (["x", "--model", "ViT-B-16", "--random-weights"], "was built with"),
    (["x", "--image", "/no/such.png"], "does not exist"),
    (["x", "--date-from", "April"], "YYYY-MM"),
])
def test_errors(built, capsys, argv, match):
    root, _ = built
    code, out, err = run_cli(capsys, *argv, "--index", str(root))
    assert code == 2
    assert match in err and err.count("\n") == 1


def test_not_an_index(tmp_path, capsys):
    code, _, err = run_cli(capsys, "x", "--index", str(tmp_path))
    assert code == 2 and "not an index" in err


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` pixels (a decompression bomb needs no more to be
    refused: the pixels are never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 12000])
def test_a_huge_image_query_is_refused_before_decoding(built, capsys, tmp_path, side):
    root, _ = built
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(side, side))
    code, out, err = run_cli(capsys, "--image", str(bomb), "--index", str(root))
    assert code == 2 and err.count("\n") == 1
    assert "bomb.png" in err and "too large" in err


@pytest.mark.parametrize("argv", [["x", "--site", "Nowhere"], ["x", "--date-from", "April"],
                                  ["x", "--date-from", "2020-05", "--date-to", "2019-01"], ["x", "--place", "Mars"]])
def test_filters_are_checked_before_the_model_loads(built, capsys, monkeypatch, argv):
    import search.encoder

    monkeypatch.setattr(search.encoder, "load_encoder", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run_cli(capsys, *argv, "--index", str(built[0]))
    assert code == 2 and err.count("\n") == 1


def test_an_empty_then_text_is_named_as_the_then_text(built, capsys):
    code, _, err = run_cli(capsys, "a turtle", "--then", "   ", "--index", str(built[0]))
    assert code == 2 and err.count("\n") == 1 and "the --then text is empty" in err


def test_the_table_shows_times_alike_and_a_dash_where_a_frame_has_no_object():
    import pandas as pd

    from search.commands.search import format_table

    df = pd.DataFrame({"rank": [1, 2], "score": [0.5, 0.25], "object_score": [0.5, np.nan], "time": [0.0, 20.0],
                       "track_id": [3, -1], "x0": [4.0, np.nan], "y0": [1, -1]})
    rows = [line.split() for line in format_table(df, df.columns).splitlines()]
    assert rows[1] == ["1", "0.500", "0.500", "0.0", "3", "4", "1"]
    assert rows[2] == ["2", "0.250", "-", "20.0", "-", "-", "-"]
