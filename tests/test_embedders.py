"""Face embedders: dlib or insightface's ArcFace, how each is found, and what routing does with them.

No insightface model pack is needed: the ArcFace alignment is checked as pure geometry, and the
embedder runs against a fake pack folder with ``onnxruntime.InferenceSession`` replaced by a fake
session that records what it is given (onnxruntime is a boundary we do not own).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch

from facerestore_cli.face.detect import Face
from facerestore_cli.face.identity import (
    ARCFACE_TEMPLATE_112,
    DLIB_MARGIN,
    DLIB_THRESHOLD,
    INSIGHTFACE_MARGIN,
    INSIGHTFACE_THRESHOLD,
    EmbedderUnavailable,
    FaceEmbedder,
    InsightFaceEmbedder,
    align_arcface,
    arcface_matrix,
    arcface_template,
    available_embedders,
    cosine_to_distance,
    create_embedder,
    distance_to_cosine,
    insightface_recognition_file,
    resolve_embedder,
)
from facerestore_cli.references.dictionary import (
    OUTLIER_DISTANCE,
    CompiledDictionary,
    DictionaryCache,
    DictionaryError,
    compile_dictionary,
    dictionary_key,
    dictionary_settings,
)
from facerestore_cli.references.people import DEFAULT_MARGIN, DEFAULT_THRESHOLD, PeopleIndex, Person


def landmarks_with_five(points5: np.ndarray) -> np.ndarray:
    """68 landmarks whose eye centres, nose tip (30) and mouth corners (48, 54) are ``points5``."""
    rng = np.random.default_rng(0)
    marks = rng.uniform(150, 350, size=(68, 2))
    marks[36:42] = points5[0] + rng.normal(0, 3, size=(6, 2))
    marks[36:42] += points5[0] - marks[36:42].mean(0)  # the eye's mean is exactly the point
    marks[42:48] = points5[1] + rng.normal(0, 3, size=(6, 2))
    marks[42:48] += points5[1] - marks[42:48].mean(0)
    marks[30], marks[48], marks[54] = points5[2], points5[3], points5[4]
    return marks


def similar(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    rot = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return points @ rot.T + np.asarray(shift)


#: Five points in a 512 crop: the ArcFace template rotated 8°, 3.5 times larger, around the middle.
POINTS_512 = similar(ARCFACE_TEMPLATE_112, 8.0, 3.5, (70.0, 40.0))


# -- alignment: pure geometry --------------------------------------------------------------------


def test_alignment_maps_the_five_points_onto_the_arcface_template():
    matrix = arcface_matrix(landmarks_with_five(POINTS_512))
    mapped = POINTS_512 @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, ARCFACE_TEMPLATE_112, atol=1e-6)
    # a similarity: rotation and uniform scale only
    linear = matrix[:, :2]
    np.testing.assert_allclose(linear @ linear.T, np.eye(2) / 3.5**2, atol=1e-9)


def test_aligned_pixels_put_the_points_on_the_template():
    """Five dots drawn in a 512 crop land on the template in the 112 crop (through the area-shrink)."""
    crop = np.full((512, 512, 3), 40, np.uint8)
    for x, y in POINTS_512:
        cv2.circle(crop, (round(x * 16), round(y * 16)), 7 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    face = align_arcface(crop, landmarks_with_five(POINTS_512))
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    weight = np.clip(face[:, :, 0].astype(np.float64) - 40, 0, None)
    count, labels = cv2.connectedComponents((weight > 20).astype(np.uint8))
    assert count == 6  # background and five dots
    ys, xs = np.mgrid[0:112, 0:112]
    found = []
    for k in range(1, count):
        w = weight * (labels == k)
        found.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    found = np.array(sorted(found, key=lambda p: (round(p[1] / 20), p[0])))  # eyes, nose, mouth; left to right
    expected = np.array(sorted(ARCFACE_TEMPLATE_112.tolist(), key=lambda p: (round(p[1] / 20), p[0])))
    np.testing.assert_allclose(found, expected, atol=0.2)  # a half-pixel slip would show


def test_template_sizes_follow_insightface():
    np.testing.assert_allclose(arcface_template(112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(arcface_template(224), 2 * ARCFACE_TEMPLATE_112)
    shifted = arcface_template(128)
    np.testing.assert_allclose(shifted[:, 0], ARCFACE_TEMPLATE_112[:, 0] + 8)
    with pytest.raises(ValueError, match="112 or 128"):
        arcface_template(100)
    with pytest.raises(ValueError, match="68"):
        arcface_matrix(np.zeros((5, 2)))


def test_insightface_defaults_are_its_published_verdicts_as_distances():
    assert cosine_to_distance(0.28) == pytest.approx(1.2)
    assert distance_to_cosine(cosine_to_distance(0.2)) == pytest.approx(0.2)
    assert pytest.approx(1.2) == INSIGHTFACE_THRESHOLD
    # accepted at the threshold means every other person is at cosine <= 0.20 ("NOT the same person")
    assert distance_to_cosine(INSIGHTFACE_THRESHOLD + INSIGHTFACE_MARGIN) <= 0.20
    assert 0 < INSIGHTFACE_MARGIN < 0.1
    assert (FaceEmbedder.threshold, FaceEmbedder.margin) == (DEFAULT_THRESHOLD, DEFAULT_MARGIN)
    assert (DLIB_THRESHOLD, DLIB_MARGIN) == (0.55, 0.12)  # measured by bench/routing.py (people.py)


# -- finding the pack ----------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty ``$INSIGHTFACE_HOME``."""
    root = tmp_path / "insightface-home"
    monkeypatch.setenv("INSIGHTFACE_HOME", str(root))
    return root


def make_pack(home: Path, pack: str = "buffalo_l", files=("det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx")):
    folder = home / "models" / pack
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"not really onnx")
    return folder


def test_auto_falls_back_to_dlib_without_a_pack(home):
    assert resolve_embedder("auto") == "dlib"
    embedder = create_embedder("auto")
    assert isinstance(embedder, FaceEmbedder) and embedder.name == "dlib"
    assert (embedder.threshold, embedder.margin) == (DEFAULT_THRESHOLD, DEFAULT_MARGIN)
    status = available_embedders()
    assert status["auto"] == "dlib" and status["dlib"].startswith("ok")
    assert str(home / "models" / "buffalo_l") in status["insightface"]


def test_insightface_without_a_pack_names_the_folder_and_file(home):
    folder = home / "models" / "buffalo_l"
    with pytest.raises(EmbedderUnavailable) as info:
        create_embedder("insightface")
    message = str(info.value)
    assert f"expected w600k_r50.onnx in {folder}" in message
    assert "does not exist" in message and "INSIGHTFACE_HOME" in message and "never downloads" in message
    folder.mkdir(parents=True)
    with pytest.raises(EmbedderUnavailable, match="is empty or lacks it"):
        create_embedder("insightface")
    with pytest.raises(EmbedderUnavailable, match=r"w600k_mbf\.onnx in .*buffalo_s"):
        create_embedder("insightface:buffalo_s")


def test_default_home_is_dot_insightface(monkeypatch, tmp_path):
    monkeypatch.delenv("INSIGHTFACE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(EmbedderUnavailable, match=str(tmp_path / ".insightface" / "models" / "antelopev2")):
        insightface_recognition_file("antelopev2")


def test_other_packs_recognition_model_is_found_by_elimination(home):
    folder = make_pack(home, "mypack", files=("det_2.5g.onnx", "1k3d68.onnx", "genderage.onnx", "my_r18.onnx"))
    assert insightface_recognition_file("mypack") == folder / "my_r18.onnx"
    (folder / "other_r34.onnx").write_bytes(b"")
    with pytest.raises(EmbedderUnavailable, match=r"cannot tell which.*my_r18\.onnx, other_r34\.onnx"):
        insightface_recognition_file("mypack")
    make_pack(home, "detonly", files=("scrfd_10g_bnkps.onnx",))
    with pytest.raises(EmbedderUnavailable, match="its recognition model"):
        insightface_recognition_file("detonly")
    # a known pack never falls back to another file
    make_pack(home, "antelopev2", files=("scrfd_10g_bnkps.onnx", "w600k_r50.onnx"))
    with pytest.raises(EmbedderUnavailable, match=r"glintr100\.onnx"):
        insightface_recognition_file("antelopev2")


def test_unknown_embedder_names():
    with pytest.raises(ValueError, match="unknown face embedder 'arcface'"):
        resolve_embedder("arcface")
    with pytest.raises(ValueError):
        resolve_embedder("dlib:big")
    assert resolve_embedder("insightface") == "insightface:buffalo_l"
    assert resolve_embedder("InsightFace:buffalo_s") == "insightface:buffalo_s"


# -- the insightface embedder against a fake onnxruntime session ---------------------------------


class _Node:
    def __init__(self, name: str, shape: list) -> None:
        self.name, self.shape = name, shape


class FakeSession:
    """Stands in for ``onnxruntime.InferenceSession``: records its inputs, returns unnormalised vectors."""

    instances: ClassVar[list[FakeSession]] = []
    input_shape: ClassVar[list] = ["None", 3, 112, 112]
    outputs: ClassVar[list] = [_Node("683", ["None", 512])]

    def __init__(self, path, sess_options=None, providers=None) -> None:
        self.path, self.providers, self.calls = path, providers, []
        FakeSession.instances.append(self)

    def get_inputs(self):
        return [_Node("input.1", list(self.input_shape))]

    def get_outputs(self):
        return list(self.outputs)

    def run(self, names, feeds):
        assert names == ["683"]
        (blob,) = feeds.values()
        self.calls.append(blob)
        n = blob.shape[0]
        # per face: its three channel means, then a ramp; scaled by 7 so normalising is visible
        out = np.zeros((n, 512), np.float32)
        out[:, :3] = blob.mean(axis=(2, 3))
        out[:, 3:] = np.linspace(0.1, 1.0, 509, dtype=np.float32)
        return [7.0 * out]


@pytest.fixture
def fake_onnx(monkeypatch):
    import onnxruntime

    import facerestore_cli.face.identity as identity

    FakeSession.instances = []
    monkeypatch.setattr(FakeSession, "input_shape", ["None", 3, 112, 112])
    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    monkeypatch.setattr(identity, "_SESSIONS", {})
    return FakeSession


@pytest.fixture
def pack(home) -> Path:
    return make_pack(home)


def uniform_crop(rgb) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (512, 512, 3)).copy()


def test_input_tensor_is_rgb_nchw_scaled_to_plus_minus_one(fake_onnx, pack):
    embedder = create_embedder("auto")  # the pack is here now: auto is insightface
    assert isinstance(embedder, InsightFaceEmbedder)
    assert embedder.name == "insightface:buffalo_l" == resolve_embedder("auto")
    assert (embedder.threshold, embedder.margin) == (INSIGHTFACE_THRESHOLD, INSIGHTFACE_MARGIN)
    (session,) = fake_onnx.instances
    assert session.path == str(pack / "w600k_r50.onnx")
    assert session.providers == ["CPUExecutionProvider"]

    marks = landmarks_with_five(POINTS_512)
    red = uniform_crop((255, 0, 64))
    textured = np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    out = embedder.embed_many([red, textured], [marks, marks])
    (blob,) = session.calls
    assert blob.shape == (2, 3, 112, 112) and blob.dtype == np.float32 and blob.flags["C_CONTIGUOUS"]
    # RGB order, (x - 127.5) / 127.5
    np.testing.assert_allclose(blob[0, :, 56, 56], [1.0, -1.0, (64 - 127.5) / 127.5], atol=1e-6)
    assert blob[0].min() >= -1.0 and blob[0].max() <= 1.0
    expected = (align_arcface(textured, marks).astype(np.float32) - 127.5) / 127.5
    np.testing.assert_allclose(blob[1], expected.transpose(2, 0, 1), atol=1e-6)
    # L2-normalised float32, one row per face; embed() is embed_many() of one
    assert out.shape == (2, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    raw = np.concatenate([[1.0, -1.0, (64 - 127.5) / 127.5], np.linspace(0.1, 1.0, 509)])
    np.testing.assert_allclose(out[0], raw / np.linalg.norm(raw), atol=1e-5)
    single = embedder.embed(red, marks)
    assert single.shape == (512,) and single.dtype == np.float32
    np.testing.assert_allclose(single, out[0], atol=1e-6)
    assert embedder.embed_many([], []).shape == (0, 512)
    with pytest.raises(ValueError):
        embedder.embed_many([red], [])


def test_session_is_loaded_once_and_fixed_batch_graphs_get_one_face_per_call(fake_onnx, pack, monkeypatch):
    monkeypatch.setattr(FakeSession, "input_shape", [1, 3, 112, 112])
    a = InsightFaceEmbedder()
    b = InsightFaceEmbedder()
    assert len(fake_onnx.instances) == 1 and a._session is b._session
    marks = landmarks_with_five(POINTS_512)
    out = a.embed_many([uniform_crop((v, v, v)) for v in (0, 128, 255)], [marks] * 3)
    assert [c.shape[0] for c in fake_onnx.instances[0].calls] == [1, 1, 1]
    assert out.shape == (3, 512)


def test_a_model_that_is_not_a_recognition_model_is_refused(fake_onnx, pack, monkeypatch):
    monkeypatch.setattr(FakeSession, "input_shape", ["None", 3, "?", "?"])
    with pytest.raises(EmbedderUnavailable, match="not a face recognition model"):
        InsightFaceEmbedder()


# -- the cache key and the stored centroid follow the embedder -----------------------------------


def test_the_cache_key_changes_with_the_embedder(tmp_path):
    photo = tmp_path / "ref.png"
    cv2.imwrite(str(photo), np.zeros((8, 8, 3), np.uint8))
    dlib_settings = dictionary_settings("retinaface", "dlib")
    insight_settings = dictionary_settings("retinaface", "insightface:buffalo_l")
    assert dlib_settings == "detector=retinaface;embedder=dlib"
    keys = {
        dictionary_key([photo], "sha", dlib_settings),
        dictionary_key([photo], "sha", insight_settings),
        dictionary_key([photo], "sha", dictionary_settings("retinaface", "insightface:buffalo_s")),
    }
    assert len(keys) == 3


def _compile(folder: Path, cache: DictionaryCache, embedder: str, vectors: list[np.ndarray], **kwargs):
    """compile_dictionary with stand-in stages: one face per photo, ``vectors`` as the embeddings."""
    it = iter(vectors)
    unit = kwargs.pop("unit_vectors", False)
    stand_in = SimpleNamespace(
        name=embedder, embed=lambda crop, marks: next(it), unit_vectors=unit,
        outlier_distance=kwargs.pop("outlier_distance", OUTLIER_DISTANCE),
    )  # fmt: skip
    return compile_dictionary(
        folder,
        weights_sha256="sha",
        encode=lambda crops, marks: {"k": torch.ones(len(crops))},
        detect=lambda rgb: [Face([0, 0, 200, 200], 0.99, np.zeros((5, 2)))],
        align=lambda rgb, face: (rgb, np.zeros((68, 2))),
        embedder=stand_in,
        cache=cache,
        settings=kwargs.pop("settings", dictionary_settings("retinaface", embedder)),
        **kwargs,
    )


@pytest.fixture
def refs(tmp_path) -> Path:
    folder = tmp_path / "refs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((16, 16, 3), 50 * i, np.uint8))
    return folder


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_the_cached_entry_records_its_embedder_and_is_never_reused_by_another(tmp_path, refs):
    cache = DictionaryCache(tmp_path / "cache")
    vecs = [_unit([1, 0.1 * i, 0, 0]) for i in range(3)]
    first = _compile(refs, cache, "insightface:buffalo_l", vecs, unit_vectors=True, outlier_distance=1.2)
    assert first.embedder == "insightface:buffalo_l" and first.used == 3
    assert np.linalg.norm(first.centroid) == pytest.approx(1.0)  # directions: the centroid is unit length
    (entry,) = cache.entries()
    assert entry["embedder"] == "insightface:buffalo_l"
    assert entry["settings"] == "detector=retinaface;embedder=insightface:buffalo_l"
    hit = _compile(refs, cache, "insightface:buffalo_l", [])
    assert hit.from_cache and hit.embedder == "insightface:buffalo_l"
    # another embedder is another key, so another entry
    other = _compile(refs, cache, "dlib", [np.full(4, 0.1, np.float32)] * 3)
    assert not other.from_cache and other.key != first.key and other.embedder == "dlib"
    assert np.linalg.norm(other.centroid) == pytest.approx(0.2)  # dlib's: a plain mean
    # even under the same key (settings that forgot the embedder), another embedder's entry is not used
    same_key = _compile(refs, cache, "insightface:buffalo_l", vecs, settings="custom", unit_vectors=True)
    again = _compile(refs, cache, "dlib", [np.full(4, 0.1, np.float32)] * 3, settings="custom")
    assert again.key == same_key.key and not again.from_cache and again.embedder == "dlib"


def test_outliers_use_the_embedders_distance(tmp_path, refs):
    cache = DictionaryCache(tmp_path / "cache")
    # two references agree, the third is another person (orthogonal: distance 1.41 > 1.2)
    vecs = [_unit([1, 0.05, 0, 0]), _unit([1, -0.05, 0, 0]), _unit([0, 0, 1, 0])]
    compiled = _compile(refs, cache, "insightface:buffalo_l", vecs, unit_vectors=True, outlier_distance=1.2)
    reasons = {Path(r.path).name: r.reason for r in compiled.references}
    assert reasons["2.png"].startswith("identity outlier") and compiled.used == 2
    # references 0.6-0.9 apart (cosine 0.6-0.8: clearly the same person for ArcFace) are all kept
    near = [_unit([1, 0.6, 0, 0]), _unit([1, -0.6, 0, 0]), _unit([1, 0, 0.6, 0])]
    kept = _compile(refs, cache, "insightface:buffalo_l", near, unit_vectors=True, outlier_distance=1.2, force=True)
    assert kept.used == 3


# -- routing ------------------------------------------------------------------------------------


def _person(name: str, centroid, embedder: str | None) -> Person:
    c = np.asarray(centroid, np.float32)
    compiled = CompiledDictionary(name, f"k-{name}", Path(name), {}, c, embedder=embedder)
    return Person(name, Path(name), compiled)


def test_an_index_never_mixes_embedders():
    people = [_person("ann", _unit([1, 0, 0]), "dlib"), _person("ben", _unit([0, 1, 0]), "insightface:buffalo_l")]
    with pytest.raises(DictionaryError, match=r"embedded with dlib.*ben \(insightface:buffalo_l\)"):
        PeopleIndex(people, embedder="dlib")
    index = PeopleIndex(people[:1], embedder="dlib")
    assert index.embedder == "dlib"
    with pytest.raises(ValueError, match=r"4-d embedding.*3-d centroids"):
        index.route(np.ones(4, np.float32))
    with pytest.raises(DictionaryError, match="different sizes"):
        PeopleIndex([_person("ann", np.ones(3), None), _person("ben", np.ones(4), None)])


def _pipeline(**options):
    from facerestore_cli import FaceRestorer, RestoreOptions

    return FaceRestorer(RestoreOptions.from_flat(method="none", device="cpu", threads=1, **options), prepare=False)


def test_routing_defaults_follow_the_embedder_unless_given(fake_onnx, home):
    assert _pipeline(embedder="dlib").routing_defaults == (DEFAULT_THRESHOLD, DEFAULT_MARGIN)
    assert _pipeline(embedder="auto").routing_defaults == (DEFAULT_THRESHOLD, DEFAULT_MARGIN)  # no pack: dlib
    make_pack(home)
    insight = _pipeline(embedder="auto")
    assert insight.embedder.name == "insightface:buffalo_l"
    assert insight.routing_defaults == (INSIGHTFACE_THRESHOLD, INSIGHTFACE_MARGIN)
    assert _pipeline(embedder="insightface", people_margin=0.2).routing_defaults == (INSIGHTFACE_THRESHOLD, 0.2)
    assert _pipeline(embedder="dlib", people_threshold=0.4).routing_defaults == (0.4, DEFAULT_MARGIN)
    with pytest.raises(ValueError, match="--embedder"):
        _pipeline(embedder="facenet")
    with pytest.raises(ValueError, match="--people-threshold"):
        _pipeline(people_threshold=0.0)


def test_faces_are_routed_with_the_embedders_thresholds_and_named_in_the_report(fake_onnx, pack):
    from facerestore_cli.engine import FaceWork
    from facerestore_cli.face.align import AlignedFace
    from facerestore_cli.report import FaceReport

    pipeline = _pipeline(embedder="insightface")
    marks = landmarks_with_five(POINTS_512)
    crop = uniform_crop((200, 100, 50))
    face = pipeline.embedder.embed(crop, marks)
    pipeline.single = _person("ann", face, "insightface:buffalo_l")

    def work() -> FaceWork:
        aligned = AlignedFace(crop, np.eye(2, 3), np.zeros((5, 2)))
        return FaceWork(FaceReport(index=0, box=[0, 0, 1, 1], score=1.0, size=1.0), aligned, marks)

    done = work()
    pipeline.route([done])
    assert done.report.person == "ann" and done.report.embedder == "insightface:buffalo_l"
    assert done.report.distance == pytest.approx(0.0, abs=1e-5)
    # dlib's references cannot route insightface embeddings
    pipeline.single = _person("ann", np.zeros(128), "dlib")
    with pytest.raises(DictionaryError, match="embedded with insightface:buffalo_l"):
        pipeline.route([work()])


# -- the command line ---------------------------------------------------------------------------


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from facerestore_cli.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, " ".join(err.split())


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from test_dictionary import make_tiny_dmdnet

    return make_tiny_dmdnet(tmp_path_factory.mktemp("weights") / "tiny-dmdnet.safetensors")


def test_cli_insightface_without_a_pack_is_a_setup_error(capsys, home, tmp_path, tiny_weights, monkeypatch):
    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    refs = tmp_path / "refs"
    refs.mkdir()
    cv2.imwrite(str(refs / "a.png"), np.zeros((32, 32, 3), np.uint8))
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.zeros((32, 32, 3), np.uint8))
    common = ["--weights", tiny_weights, "--threads", "1", "--embedder", "insightface"]
    code, _, err = run_cli(capsys, "restore", photo, "--refs", refs, "-o", tmp_path / "out", *common)
    assert code == 2 and "w600k_r50.onnx" in err and str(home / "models" / "buffalo_l") in err.replace(" ", "")
    code, _, err = run_cli(capsys, "build-dict", refs, *common)
    assert code == 2 and "w600k_r50.onnx" in err
    code, _, err = run_cli(capsys, "restore", photo, "-m", "none", "--embedder", "bogus")
    assert code == 2 and "unknown face embedder" in err
    assert not (tmp_path / "out").exists()


def test_people_command_looks_up_the_dictionaries_of_its_embedder(capsys, home, tmp_path, tiny_weights, monkeypatch):
    from skimage import data

    monkeypatch.setenv("FACERESTORE_CACHE", str(tmp_path / "cache"))
    people = tmp_path / "people"
    (people / "eileen").mkdir(parents=True)
    cv2.imwrite(str(people / "eileen" / "a.png"), np.ascontiguousarray(data.astronaut()[:, :, ::-1]))
    code, out, err = run_cli(capsys, "build-dict", people, "--weights", tiny_weights, "--threads", "1", "--json")
    assert code == 0, err
    (built,) = json.loads(out)
    assert built["embedder"] == "dlib"  # auto without a pack
    for embedder, cached in (("dlib", True), ("auto", True), ("insightface", False)):
        code, out, err = run_cli(capsys, "people", people, "--weights", tiny_weights, "--embedder", embedder, "--json")
        assert code == 0, err
        (row,) = json.loads(out)
        assert row["cached"] is cached, embedder
    code, out, _ = run_cli(capsys, "people", people, "--weights", tiny_weights)
    assert "embedder: dlib" in out
