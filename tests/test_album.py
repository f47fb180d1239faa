"""Finding inputs (files, folders, globs) and mapping them to outputs safely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facerestore_cli.album import InputItem, OutputError, OutputPlan, discover_inputs


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    touch(
        root,
        "b.jpg", "a.PNG", "notes.txt", "anim.gif", ".hidden.jpg", ".a.jpg.1234.tmp",
        "2019/x.webp", "2019/summer/y.tiff", "2019/.thumbs/t.jpg", "2020/z.bmp",
    )  # fmt: skip
    return root


def rels(found) -> list[str]:
    return [i.relative.as_posix() for i in found.items]


def test_folder_lists_photos_only_sorted(tree):
    found = discover_inputs([str(tree)])
    assert rels(found) == ["a.PNG", "b.jpg"]  # no text, no GIF, no hidden or temporary files
    assert found.problems == []
    assert all(i.path.parent == tree for i in found.items)


def test_recursion_descends_and_keeps_relative_paths(tree):
    found = discover_inputs([str(tree)], recursive=True)
    assert rels(found) == ["2019/summer/y.tiff", "2019/x.webp", "2020/z.bmp", "a.PNG", "b.jpg"]
    assert found.items[0].path == tree / "2019/summer/y.tiff"


def test_globs_files_and_duplicates(tree):
    found = discover_inputs([str(tree / "2019" / "*.webp"), str(tree / "b.jpg"), str(tree / "*.jpg"), str(tree)])
    # the glob's relative path is taken from the folder before the first wildcard; duplicates once
    assert rels(found) == ["x.webp", "b.jpg", "a.PNG"]
    deep = discover_inputs([str(tree / "**" / "*.*")], recursive=True)
    assert "2019/summer/y.tiff" in rels(deep) and "notes.txt" not in rels(deep)


def test_explicit_unsupported_file_is_taken_so_it_can_be_reported(tree):
    found = discover_inputs([str(tree / "anim.gif")])
    assert rels(found) == ["anim.gif"]


def test_missing_inputs_and_empty_globs_are_problems(tree):
    found = discover_inputs([str(tree / "nope.jpg"), str(tree / "*.heic-nothing"), str(tree / "b.jpg")])
    assert rels(found) == ["b.jpg"]
    assert [p.reason for p in found.problems] == ["missing", "no-match"]
    assert "nope.jpg" in found.problems[0].message


def test_output_folder_inside_the_input_is_not_listed(tree):
    out = tree / "restored"
    touch(out, "b.jpg", "2019/x.webp")
    assert "restored/b.jpg" in rels(discover_inputs([str(tree)], recursive=True))
    assert not any(r.startswith("restored/") for r in rels(discover_inputs([str(tree)], recursive=True, exclude=out)))
    globbed = discover_inputs([str(tree / "**" / "*.jpg")], recursive=True, exclude=out)
    assert rels(globbed) == ["b.jpg"]


def test_output_folder_equal_to_the_input_excludes_nothing(tree):
    """``-o`` may be the input folder itself (with --suffix); that must not hide the album."""
    assert len(discover_inputs([str(tree)], recursive=True, exclude=tree).items) == 5
    assert rels(discover_inputs([str(tree / "*.jpg")], exclude=tree)) == ["b.jpg"]
    assert len(discover_inputs([str(tree / "2019")], recursive=True, exclude=tree).items) == 2


def test_symlink_loop_is_walked_once(tree):
    (tree / "2019" / "summer" / "up").symlink_to(tree, target_is_directory=True)
    found = discover_inputs([str(tree)], recursive=True)
    assert rels(found) == ["2019/summer/y.tiff", "2019/x.webp", "2020/z.bmp", "a.PNG", "b.jpg"]


def test_unreadable_folder_is_a_problem_and_the_rest_is_listed(tree, monkeypatch):
    real = os.scandir
    blocked = tree / "2019"

    def scandir(path):
        if Path(path) == blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover_inputs([str(tree)], recursive=True)
    assert rels(found) == ["2020/z.bmp", "a.PNG", "b.jpg"]
    assert [(p.reason, p.spec) for p in found.problems] == [("unreadable", str(blocked))]
    assert "Permission denied" in found.problems[0].message


def item(root: Path, rel: str) -> InputItem:
    return InputItem(root / rel, Path(rel))


def test_output_mirrors_the_tree_and_keeps_names_and_formats(tmp_path):
    plan = OutputPlan(out_dir=tmp_path / "out")
    items = [item(tmp_path / "in", "a.JPG"), item(tmp_path / "in", "2019/b.tiff")]
    plan.register_inputs(items)
    assert [plan.output_for(i) for i in items] == [tmp_path / "out/a.JPG", tmp_path / "out/2019/b.tiff"]


def test_suffix_ext_and_default_next_to_the_input(tmp_path):
    src = item(tmp_path, "photos/a.jpg")
    assert OutputPlan().output_for(src) == tmp_path / "photos/a_restored.jpg"
    assert OutputPlan(suffix="_v2", ext="png").output_for(src) == tmp_path / "photos/a_v2.png"
    assert (
        OutputPlan(out_dir=tmp_path / "o", suffix="_x", ext=".webp").output_for(src) == tmp_path / "o/photos/a_x.webp"
    )


def test_outputs_never_overwrite_an_input(tmp_path):
    src = item(tmp_path / "in", "a.jpg")
    plan = OutputPlan(out_dir=tmp_path / "in")
    plan.register_inputs([src])
    with pytest.raises(OutputError) as caught:
        plan.output_for(src)
    assert caught.value.reason == "would-overwrite-input" and "--in-place" in str(caught.value)
    # the output of one input landing on another input is refused too
    other = item(tmp_path / "in", "a_restored.jpg")
    plan = OutputPlan()
    plan.register_inputs([src, other])
    with pytest.raises(OutputError):
        plan.output_for(src)
    assert OutputPlan(in_place=True).output_for(src) == src.path


def test_two_inputs_never_share_an_output(tmp_path):
    plan = OutputPlan(out_dir=tmp_path / "o", ext="png")
    a, b = item(tmp_path, "x.jpg"), item(tmp_path, "x.tiff")
    plan.register_inputs([a, b])
    assert plan.output_for(a) == tmp_path / "o/x.png"
    assert plan.output_for(a) == tmp_path / "o/x.png"  # asking again for the same input is fine
    with pytest.raises(OutputError) as caught:
        plan.output_for(b)
    assert caught.value.reason == "output-collision"


@pytest.mark.parametrize(
    "kwargs",
    [{"ext": "gif"}, {"suffix": "../x"}, {"suffix": "a/b"}, {"in_place": True, "suffix": "_r"},
     {"in_place": True, "out_dir": Path("o")}, {"in_place": True, "ext": "png"}],
)  # fmt: skip
def test_bad_plans_are_usage_errors(kwargs):
    with pytest.raises(ValueError):
        OutputPlan(**kwargs)


def test_output_cannot_escape_the_output_folder(tmp_path):
    plan = OutputPlan(out_dir=tmp_path / "o")
    with pytest.raises(OutputError) as caught:
        plan.output_for(InputItem(tmp_path / "a.jpg", Path("../../a.jpg")))
    assert caught.value.reason == "unsafe-path"


def test_earlier_results_next_to_inputs_are_not_restored_again(tmp_path: Path) -> None:
    for name in ("a.jpg", "a_restored.jpg", "b.png", "notes_restored.png"):
        (tmp_path / name).write_bytes(b"x")
    items = discover_inputs([str(tmp_path)]).items
    kept, dropped = OutputPlan().drop_previous_outputs(items)
    assert [i.name for i in dropped] == ["a_restored.jpg"]
    # a file that merely ends in _restored, with no input of its own, is still an input
    assert sorted(i.name for i in kept) == ["a.jpg", "b.png", "notes_restored.png"]
    # under -o nothing sits next to the inputs, so nothing is left out
    assert OutputPlan(out_dir=tmp_path / "out").drop_previous_outputs(items)[1] == []
