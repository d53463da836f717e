"""Data roots: describe, read the data manifest (with clear errors), verify, splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from histoclr.dataroot import FactRule, classify, describe_root, load_facts, verify_root
from histoclr.errors import ConfigError, InputFileError
from histoclr.manifests.csvfile import ManifestError
from histoclr.manifests.data import DATA_COLUMNS, format_data_manifest, read_data_manifest

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "data_manifests" / "monuseg2018_cmu1.csv"
FACTS = REPO / "data_manifests" / "monuseg2018_cmu1.facts.yaml"

XML = '<Annotations MicronsPerPixel="{mpp}"><Annotation><Regions><Region Id="1"><Vertices>' \
      '<Vertex X="1" Y="1"/><Vertex X="5" Y="1"/><Vertex X="5" Y="5"/></Vertices></Region>' \
      '</Regions></Annotation></Annotations>'


def make_root(root: Path) -> Path:
    """A tiny MoNuSeg-style data root: 2 labelled pairs, 2 unlabelled images, a README."""
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    (root / "ds/labeled/images").mkdir(parents=True)
    (root / "ds/labeled/annotations").mkdir(parents=True)
    (root / "ds/unlabeled/images").mkdir(parents=True)
    for name, mpp in (("A-1", "0.25"), ("B-2", "")):
        tifffile.imwrite(root / f"ds/labeled/images/{name}.tif", img())
        (root / f"ds/labeled/annotations/{name}.xml").write_text(XML.format(mpp=mpp))
    # 20000 pixels per cm -> 0.5 µm/px from the TIFF tags
    tifffile.imwrite(root / "ds/unlabeled/images/U-1.tif", img(), resolution=(20000, 20000),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(root / "ds/unlabeled/images/U-2.tif", img())
    (root / "README.md").write_text("test data\n")
    return root


RULES = [FactRule("ds/*", {"mpp": "0.3", "magnification": "40", "licence": "CC0"}),
         FactRule("ds/labeled/*", {"split": "train"}),
         FactRule("ds/labeled/*/B-2.*", {"split": "val", "organ": "colon"})]


@pytest.mark.parametrize("path,role", [
    ("m/labeled/images/x.tif", "labeled_image"), ("m/labelled/images/x.PNG", "labeled_image"),
    ("m/labeled/annotations/x.xml", "annotation"), ("m/labeled/annotations/x.txt", "other"),
    ("unlabeled/images/y.tiff", "unlabeled_image"), ("slides/s.SVS", "slide"),
    ("a/b/s.ndpi", "slide"), ("README.md", "readme"), ("notes/x.tif", "other")])
def test_classify(path, role):
    assert classify(path) == role


def test_describe_rows_roles_mpp_and_facts(tmp_path):
    root = make_root(tmp_path / "data")
    rows = {r["path"]: r for r in describe_root(root, RULES, progress=False)}
    assert sorted(rows) == sorted([
        "README.md", "ds/labeled/annotations/A-1.xml", "ds/labeled/annotations/B-2.xml",
        "ds/labeled/images/A-1.tif", "ds/labeled/images/B-2.tif",
        "ds/unlabeled/images/U-1.tif", "ds/unlabeled/images/U-2.tif"])
    a = rows["ds/labeled/images/A-1.tif"]
    data = (root / a["path"]).read_bytes()
    assert a["sha256"] == hashlib.sha256(data).hexdigest() and a["bytes"] == str(len(data))
    assert (a["role"], a["pair_id"], a["split"]) == ("labeled_image", "A-1", "train")
    assert (a["mpp"], a["mpp_source"], a["magnification"]) == ("0.25", "annotation", "40")
    b = rows["ds/labeled/annotations/B-2.xml"]
    assert (b["split"], b["organ"], b["mpp"], b["mpp_source"]) == ("val", "colon", "0.3", "facts")
    assert (rows["ds/unlabeled/images/U-1.tif"]["mpp"],
            rows["ds/unlabeled/images/U-1.tif"]["mpp_source"]) == ("0.5", "tiff")
    assert rows["ds/unlabeled/images/U-2.tif"]["mpp_source"] == "facts"
    readme = rows["README.md"]
    assert (readme["role"], readme["pair_id"], readme["mpp"], readme["licence"]) == \
        ("readme", "", "", "")


def labelled(rows, split):
    return sorted(r["pair_id"] for r in rows if r["role"] == "labeled_image" and r["split"] == split)


def test_roundtrip_and_splits(tmp_path):
    root = make_root(tmp_path / "data")
    out = tmp_path / "m.csv"
    out.write_text(format_data_manifest(describe_root(root, RULES, progress=False)))
    assert out.read_text().startswith("# histoclr-data v1\n" + ",".join(DATA_COLUMNS) + "\n")
    rows = read_data_manifest(out)
    assert len(rows) == 7
    assert labelled(rows, "val") == ["B-2"] and labelled(rows, "train") == ["A-1"]
    by_path = {r["path"]: r for r in rows}
    assert by_path["ds/labeled/annotations/B-2.xml"]["split"] == "val"  # an annotation shares its split


def test_verify_reports_missing_changed_and_extra(tmp_path):
    root = make_root(tmp_path / "data")
    rows = describe_root(root, progress=False)
    assert verify_root(root, rows, progress=False).passed
    f = root / "ds/unlabeled/images/U-2.tif"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))  # same size, other content
    (root / "README.md").write_text("test data, edited\n")
    (root / "ds/labeled/images/A-1.tif").unlink()
    (root / "new.txt").write_text("x")
    rep = verify_root(root, rows, progress=False)
    assert not rep.passed
    assert rep.missing == ["ds/labeled/images/A-1.tif"]
    changed = dict(rep.changed)
    assert set(changed) == {"README.md", "ds/unlabeled/images/U-2.tif"}
    assert changed["README.md"] == "size 10 -> 18 bytes"
    assert changed["ds/unlabeled/images/U-2.tif"].startswith("sha256 ")
    assert rep.extra == ["new.txt"] and len(rep.ok) == 4
    # sizes only: the same-size change goes unnoticed, the size change does not
    quick = verify_root(root, rows, size_only=True, progress=False)
    assert [p for p, _ in quick.changed] == ["README.md"]


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("# histoclr-data v1", "path,x"), "not a histoclr data manifest"),
    (lambda t: t.replace("# histoclr-data v1", "# histoclr-data v9"), "version 9 is not supported"),
    (lambda t: t.replace(",sha256,", ",checksum,"), "missing column(s): sha256"),
    (lambda t: t.replace("README.md,", "../README.md,", 1), "must be relative to the data root"),
    (lambda t: t.replace(",readme,", ",notes,"), "line 3: role 'notes' is not one of"),
    (lambda t: t.replace(",train,", ",holdout,", 1), "split 'holdout' is not one of"),
    (lambda t: t + t.splitlines()[2] + "\n", "is listed twice"),
    (lambda t: t.replace(",10,", ",ten,", 1), "bytes must be a non-negative integer"),
])
def test_read_rejects_bad_manifests(tmp_path, edit, message):
    root = make_root(tmp_path / "data")
    good = format_data_manifest(describe_root(root, RULES, progress=False))
    bad = tmp_path / "bad.csv"
    bad.write_text(edit(good))
    with pytest.raises(ManifestError) as e:
        read_data_manifest(bad)
    assert str(bad) in str(e.value) and message in str(e.value)


def test_bad_sha_and_short_row(tmp_path):
    p = tmp_path / "m.csv"
    head = "# histoclr-data v1\n" + ",".join(DATA_COLUMNS) + "\n"
    p.write_text(head + "a.txt,1,abc,other,,,,,,,,\n")
    with pytest.raises(ManifestError, match="sha256 must be 64"):
        read_data_manifest(p)
    p.write_text(head + "a.txt,1\n")
    with pytest.raises(ManifestError, match="line 3: wrong number of fields"):
        read_data_manifest(p)


def test_describe_rejects_unpaired_and_unmatched_rules(tmp_path):
    root = make_root(tmp_path / "data")
    with pytest.raises(InputFileError, match="matches no file"):
        describe_root(root, [FactRule("ds/labeled/*/Z-9.*", {"split": "val"})], progress=False)
    (root / "ds/labeled/annotations/B-2.xml").unlink()
    with pytest.raises(InputFileError, match=r"B-2.tif: has no matching annotation"):
        describe_root(root, progress=False)


@pytest.mark.parametrize("text,message", [
    ("match: x\n", "top level must be a list"),
    ("- organ: liver\n", "rule 1: each rule must be a mapping with a 'match'"),
    ("- {match: '*', colour: red}\n", "rule 1: unknown key 'colour'"),
    ("- {match: '*'}\n- {match: '*', split: dev}\n", "rule 2: split must be one of"),
    ("- {match: '*', mpp: -1}\n", "mpp must be a positive number"),
])
def test_load_facts_errors(tmp_path, text, message):
    p = tmp_path / "facts.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_facts(p)


def test_committed_facts_file_loads():
    rules = load_facts(FACTS)
    vals = [r for r in rules if r.values.get("split") == "val"]
    assert len(vals) == 3


@pytest.mark.shared_data
def test_committed_manifest_is_reproducible_from_the_real_data(shared_data):
    """`histoclr data describe` on the real data with the committed facts gives the committed CSV."""
    rows = describe_root(shared_data, load_facts(FACTS), progress=False)
    assert format_data_manifest(rows) == COMMITTED.read_text()
    committed = read_data_manifest(COMMITTED)
    roles = [r["role"] for r in committed]
    assert (roles.count("labeled_image"), roles.count("annotation"),
            roles.count("unlabeled_image"), roles.count("slide")) == (13, 13, 17, 1)
    val = [r for r in committed if r["role"] == "labeled_image" and r["split"] == "val"]
    assert len(val) == 3 and len(labelled(committed, "train")) == 10
    organs = {r["organ"] for r in val}
    sites = {r["pair_id"].split("-")[1] for r in val}
    assert len(organs) == 3 and len(sites) == 3
