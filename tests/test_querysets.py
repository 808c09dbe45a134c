"""Query sets: the tidy CSV round trip and the importers on files written in the MVK KIS format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mvk_tools import querysets as qs
from mvk_tools.targetnames import parse_target_name, timecode_seconds


def _vec(seed: int, dim: int = 4) -> str:
    return "|".join(f"{v:.5f}" for v in np.random.default_rng(seed).normal(size=dim))


def write_mvk_novice_clipcap(path: Path, rows: list[tuple[str, str, str]], dim: int = 4) -> Path:
    """An MVK KIS file as published: ';'-separated with spaces after the separators, '|' vectors."""
    lines = ["img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text"]
    for i, (img, clipcap, novice) in enumerate(rows):
        lines.append(f"{img}; {_vec(3 * i, dim)}; {clipcap}; {_vec(3 * i + 1, dim)}; {novice}; {_vec(3 * i + 2, dim)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_mvk_expert(path: Path, rows: list[tuple[str, str]], dim: int = 4, sep: str = "; ") -> Path:
    lines = [sep.join(["img", "text", "CLIP_text"])]
    lines += [sep.join([img, text, _vec(100 + i, dim)]) for i, (img, text) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name, expected", [
    ("/data/MVK/information/selected_frames/Oahu_Jul2022/0001_00031.jpg", ("Oahu_Jul2022", "0001", 31, None)),
    (r"C:\mvk\information\selected_frames\PhuQuoc1_Jun2022\0012_01500.jpg", ("PhuQuoc1_Jun2022", "0012", 1500, None)),
    ("Oahu_Jul2022/0001_00031.JPG", ("Oahu_Jul2022", "0001", 31, None)),
    ("selected_frames/Tulamben2_Jun2022_0016_00012.jpg", ("Tulamben2_Jun2022", "0016", 12, None)),
    ("Tulamben2_Jun2022_0016_00012.jpg", ("Tulamben2_Jun2022", "0016", 12, None)),
    ("keyframes/Oahu_Jul2022/0003/00007.jpg", ("Oahu_Jul2022", "0003", 7, None)),
    (r"D:\kis\Oahu_Jul2022\0003\frame0-00-28-03.jpg", ("Oahu_Jul2022", "0003", None, (0, 0, 28, 3))),
    ("Oahu_Jul2022/0003/frame1-02-03-29.png", ("Oahu_Jul2022", "0003", None, (1, 2, 3, 29))),
])
def test_every_target_name_form(name: str, expected: tuple) -> None:
    t = parse_target_name(name)
    assert (t.site, t.video, t.number, t.timecode) == expected


def test_time_codes_are_read_both_ways() -> None:
    t = parse_target_name("Oahu_Jul2022/0003/frame0-00-28-03.jpg")
    assert t.time(30.0) == pytest.approx(28.03)                          # hundredths unless told otherwise
    assert t.time(30.0, "frames") == pytest.approx(28.1) and t.time(12.0, "frames") == pytest.approx(28.25)
    assert t.key == "Oahu_Jul2022/0003@0-00-28-03"
    dotted = parse_target_name("Oahu_Jul2022/0003/frame0-00-28.03.jpg")  # the extraction script's own form
    assert dotted == t


def test_a_field_impossible_under_a_reading_rules_it_out() -> None:
    tc = parse_target_name("Oahu_Jul2022/0003/frame0-00-09-60.jpg").timecode
    assert timecode_seconds(tc, "frames", 30.0) == (None, "60 is not a frame number at 30 fps")
    assert timecode_seconds(tc, "hundredths", 30.0) == (pytest.approx(9.6), "")
    with pytest.raises(ValueError, match="not a frame number"):
        parse_target_name("Oahu_Jul2022/0003/frame0-00-09-60.jpg").time(30.0, "frames")
    assert timecode_seconds((0, 0, 1, 120), "hundredths", 200.0)[0] is None


def test_time_code_rows_keep_the_target_image_vector_and_empty_texts_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "tc.csv"
    path.write_text("img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text\n"
                    "Oahu_Jul2022/0001/frame0-00-01-05.jpg; 0|1; a reef; 1|0; ; 1|0\n"
                    "Oahu_Jul2022/0001_00002.jpg; 0|1; sand; 1|0; fish; 1|0\n", encoding="utf-8")
    got = qs.read_queryset(path)
    assert got.queries["text"].tolist() == ["a reef", "", "sand", "fish"]        # the empty novice text is kept
    assert [(i.line, i.skipped) for i in got.issues] == [(2, False)] and "empty novice_text" in str(got.issues[0])
    vecs = got.queries["target_vector"].tolist()
    assert vecs[0].tolist() == [0, 1] and vecs[1].tolist() == [0, 1] and vecs[2] is None   # time codes only


@pytest.mark.parametrize("bad", ["0001_00031.jpg", "Oahu_Jul2022/frame.jpg", "Oahu_Jul2022/0001_abc.jpg", "",
                                 "frame0-00-28-03.jpg", "selected_frames/frame0-00-28-03.jpg",
                                 "Oahu_Jul2022/0003/frame0-75-28-03.jpg", "00031.jpg",
                                 "Oahu_Jul2022/0001_99999999999999.jpg"])
def test_names_that_name_no_frame(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_target_name(bad)


def test_novice_clipcap_file_gives_two_queries_per_row(tmp_path: Path) -> None:
    path = write_mvk_novice_clipcap(tmp_path / "kis_novice.csv", [
        ("/mvk/selected_frames/Oahu_Jul2022/0001_00031.jpg", "underwater footage of a coral reef.",
         "blurred underwater footage, maybe a coral reef"),
        ("/mvk/selected_frames/Oahu_Jul2022/0002_00300.jpg", "a school of fish swimming.", "many yellow fish"),
    ])
    got = qs.read_queryset(path)
    assert got.formats == {str(path): "mvk-novice-clipcap"}
    assert got.issues == []
    q = got.queries
    assert list(q["query_type"]) == ["clipcap", "novice", "clipcap", "novice"]
    assert list(q["query_id"])[:2] == ["clipcap:Oahu_Jul2022/0001_00031", "novice:Oahu_Jul2022/0001_00031"]
    assert q["text"].iat[1] == "blurred underwater footage, maybe a coral reef"
    assert list(q["target_selected"]) == [31, 31, 300, 300]       # the selected frame's number
    assert q["target_frame"].isna().all()                            # not a frame index
    assert list(q["source_line"]) == [2, 2, 3, 3]
    assert q["vector"].isna().all()   # vectors ignored unless asked for


def test_file_vectors_parsed_when_asked(tmp_path: Path) -> None:
    path = write_mvk_novice_clipcap(tmp_path / "k.csv", [("Oahu_Jul2022/0001_00031.jpg", "a reef", "reef")], dim=6)
    q = qs.read_queryset(path, with_vectors=True).queries
    assert [v.shape for v in q["vector"]] == [(6,), (6,)]
    expected = np.array(_vec(1, 6).split("|"), dtype=np.float32)   # CLIP_ClipCap of row 0
    np.testing.assert_allclose(q["vector"].iat[0], expected)


def test_expert_file_and_duplicate_targets(tmp_path: Path) -> None:
    path = write_mvk_expert(tmp_path / "expert.csv", [
        ("Oahu_Jul2022/0001_00031.jpg", "blurry view of a sea bottom covered with brown stones"),
        ("Oahu_Jul2022/0001_00031.jpg", "brown stones on the sea floor"),
    ])
    got = qs.read_queryset(path)
    assert got.formats[str(path)] == "mvk-expert"
    assert list(got.queries["query_id"]) == ["expert:Oahu_Jul2022/0001_00031", "expert:Oahu_Jul2022/0001_00031#2"]
    assert set(got.queries["query_type"]) == {"expert"}


def test_bad_rows_are_reported_with_file_and_line_and_valid_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "img; CLIP_img; ClipCap_text; CLIP_ClipCap; novice_text; CLIP_text\n"
        "Oahu_Jul2022/0001_00031.jpg; 1|2; a reef; 1|2; ; 1|2\n"            # empty novice text
        "Oahu_Jul2022/nonsense.jpg; 1|2; a reef; 1|2; reef; 1|2\n"          # no frame in the name
        "Oahu_Jul2022/0002_00010.jpg; 1|2; fish; 1|2\n"                     # too few fields
        "\n"
        "Oahu_Jul2022/0003_00010.jpg; 1|2; \"a diver; two fish\"; 1|2; diver; 1|2\n",  # quoted separator
        encoding="utf-8")
    got = qs.read_queryset(path)
    lines = {(i.line, i.skipped) for i in got.issues}
    assert lines == {(2, False), (3, True), (4, True)}                  # the empty text is kept, said
    assert all(str(path) in str(i) for i in got.issues)
    assert "empty novice_text" in str(got.issues[0])
    assert list(got.queries["query_id"]) == ["clipcap:Oahu_Jul2022/0001_00031", "novice:Oahu_Jul2022/0001_00031",
                                             "clipcap:Oahu_Jul2022/0003_00010", "novice:Oahu_Jul2022/0003_00010"]
    assert got.queries["text"].iat[2] == "a diver; two fish"
    assert list(got.queries["source_line"]) == [2, 2, 6, 6]


def test_other_separator_is_detected_and_said(tmp_path: Path) -> None:
    path = write_mvk_expert(tmp_path / "comma.csv", [("Oahu_Jul2022/0001_00031.jpg", "sand and rocks")], sep=",")
    got = qs.read_queryset(path)
    assert len(got.queries) == 1
    assert len(got.issues) == 1 and not got.issues[0].skipped
    assert "';'-separated" in got.issues[0].message and "','" in got.issues[0].message


def test_missing_columns_name_the_file_and_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "nohead.csv"
    path.write_text("img; CLIP_img; ClipCap_text\nOahu_Jul2022/0001_00031.jpg; 1|2; reef\n", encoding="utf-8")
    with pytest.raises(qs.QuerySetError) as exc:
        qs.read_queryset(path)
    msg = str(exc.value)
    assert str(path) in msg and "line 1" in msg and "novice_text" in msg
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(qs.QuerySetError, match="empty file"):
        qs.read_queryset(empty)
    with pytest.raises(qs.QuerySetError, match="no such file"):
        qs.read_queryset(tmp_path / "absent.csv")


def test_tidy_round_trip_and_row_checks(tmp_path: Path) -> None:
    queries = qs.make_queries([
        {"query_id": "q1", "query_type": "novice", "text": "a turtle", "target_site": "Oahu_Jul2022",
         "target_video": "0001", "target_frame": 30, "target_time": None, "source": "hand-written"},
        {"query_id": "q2", "query_type": "expert", "text": "sand, rocks", "target_site": "Oahu_Jul2022",
         "target_video": "0002", "target_frame": None, "target_time": 2.5},
    ])
    path = qs.write_queryset(queries, tmp_path / "set.csv")
    back = qs.read_queryset(path)
    assert back.formats[str(path)] == "tidy" and back.issues == []
    pd.testing.assert_frame_equal(back.queries[list(qs.QUERY_COLUMNS)], queries[list(qs.QUERY_COLUMNS)])
    assert back.queries["source"].iat[0] == "hand-written"

    with path.open("a", encoding="utf-8") as f:
        f.write("q1,novice,again,Oahu_Jul2022,0001,31,,\n")        # line 4: duplicate id
        f.write("q3,novice,,Oahu_Jul2022,0001,31,,\n")             # line 5: empty text
        f.write("q4,novice,fish,Oahu_Jul2022,0001,,,\n")           # line 6: no target frame/time
        f.write("q5,novice,fish,Oahu_Jul2022,0001,x,,\n")          # line 7: bad frame
        f.write("q6,novice,fish,Oahu_Jul2022,0001,12,,\n")         # line 8: fine
    again = qs.read_queryset(path)
    assert [(i.line, i.skipped) for i in again.issues] == [(4, True), (5, True), (6, True), (7, True)]
    assert "duplicate query_id 'q1' (first on line 2)" in str(again.issues[0])
    assert list(again.queries["query_id"]) == ["q1", "q2", "q6"]


def test_merge_reports_ids_repeated_across_files_and_bad_files(tmp_path: Path) -> None:
    q = qs.make_queries([{"query_id": "q1", "query_type": "novice", "text": "reef", "target_site": "A",
                          "target_video": "1", "target_frame": 3, "target_time": None}])
    a = qs.write_queryset(q, tmp_path / "a.csv")
    b = qs.write_queryset(q, tmp_path / "b.csv")
    junk = tmp_path / "junk.csv"
    junk.write_text("hello world\n1 2 3\n", encoding="utf-8")
    merged, errors = qs.read_querysets([a, b, junk])
    assert len(merged.queries) == 1
    assert len(merged.issues) == 1 and str(b) in str(merged.issues[0]) and str(a) in str(merged.issues[0])
    assert len(errors) == 1 and str(junk) in errors[0]


def test_tidy_vectors_round_trip(tmp_path: Path) -> None:
    q = qs.make_queries([{"query_id": "q1", "query_type": "novice", "text": "reef", "target_site": "A",
                          "target_video": "1", "target_frame": 3, "target_time": None,
                          "vector": np.array([0.5, -0.25, 1.0], np.float32)}])
    path = qs.write_queryset(q, tmp_path / "v.csv", with_vectors=True)
    back = qs.read_queryset(path, with_vectors=True).queries
    np.testing.assert_allclose(back["vector"].iat[0], [0.5, -0.25, 1.0])
    assert qs.read_queryset(path).queries["vector"].isna().all()


def test_trailing_separators_bom_crlf_and_no_vector_column(tmp_path: Path) -> None:
    path = tmp_path / "expert.csv"
    path.write_bytes("\ufeffimg;text;\r\n"
                     "Oahu_Jul2022/0001_00003.jpg;a striped fish;\r\n"
                     "Oahu_Jul2022/0002_00001.jpg;sand and rocks\r\n"
                     "Oahu_Jul2022_0002_00002.jpg;\"a diver;\r\n two fish\";\r\n".encode("utf-8"))
    got = qs.read_queryset(path, with_vectors=True)
    assert got.issues == [] and got.formats[str(path)] == "mvk-expert"
    q = got.queries
    assert list(q["target_selected"]) == [3, 1, 2] and list(q["target_video"]) == ["0001", "0002", "0002"]
    assert list(q["text"])[:2] == ["a striped fish", "sand and rocks"] and "two fish" in q["text"].iat[2]
    assert list(q["source_line"]) == [2, 3, 4] and q["vector"].isna().all()


def test_huge_text_field_is_a_skipped_row_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("img; text\n"
                    f"Oahu_Jul2022/0001_00003.jpg; {'reef ' * 30000}\n"        # 150,000 characters
                    "Oahu_Jul2022/0001_00004.jpg; a short one\n", encoding="utf-8")
    got = qs.read_queryset(path)
    assert list(got.queries["target_selected"]) == [4]
    assert len(got.issues) == 1 and got.issues[0].line == 2 and "characters" in got.issues[0].message


@pytest.mark.parametrize("frame", ["1e30", "inf", "-inf", "nan", str(2 ** 63), "2.5", "-1", "ten"])
def test_target_frames_no_video_can_have_are_skipped_rows(tmp_path: Path, frame: str) -> None:
    path = tmp_path / "tidy.csv"
    path.write_text("query_id,query_type,text,target_site,target_video,target_frame,target_time\n"
                    f"a,novice,reef,Oahu_Jul2022,0001,{frame},\n"
                    "b,novice,reef,Oahu_Jul2022,0001,12,\n", encoding="utf-8")
    got = qs.read_queryset(path)
    assert list(got.queries["query_id"]) == ["b"] and list(got.queries["target_frame"]) == [12]
    assert [i.line for i in got.issues] == [2] and "target_frame" in got.issues[0].message


def test_all_zero_file_vector_is_a_skipped_row(tmp_path: Path) -> None:
    path = tmp_path / "zero.csv"
    path.write_text("img; text; CLIP_text\n"
                    "Oahu_Jul2022/0001_00003.jpg; reef; 0|0|0|0\n"
                    "Oahu_Jul2022/0001_00004.jpg; sand; 0|1|0|0\n", encoding="utf-8")
    got = qs.read_queryset(path, with_vectors=True)
    assert list(got.queries["target_selected"]) == [4]
    assert [i.line for i in got.issues] == [2] and "all zeros" in got.issues[0].message


def test_a_file_over_the_size_limit_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_mvk_expert(tmp_path / "big.csv", [("Oahu_Jul2022/0001_00031.jpg", "sand")])
    monkeypatch.setattr(qs, "MAX_FILE_BYTES", 10)
    with pytest.raises(qs.QuerySetError, match="limit"):
        qs.read_queryset(path)
