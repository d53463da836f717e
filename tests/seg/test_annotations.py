"""Aperio XML / GeoJSON reading, rasterisation and label images (synthetic + the real MoNuSeg)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from skimage.draw import polygon as draw_polygon

from histoclr.errors import InputFileError
from histoclr.seg.annotations import (
    load_instances,
    mask_format_for,
    rasterize_instances,
    read_aperio_xml,
    read_geojson,
)

RECT = np.array([[10, 5], [30, 5], [30, 20], [10, 20]], float)  # x 10..30, y 5..20
TRI = np.array([[40, 40], [60, 40], [50, 58]], float)
OVER = np.array([[25, 15], [45, 15], [45, 45], [25, 45]], float)  # overlaps RECT and TRI


def aperio_xml(polys, mpp="0.252700", extra_regions: str = "") -> str:
    regions = []
    for i, poly in enumerate(polys, start=1):
        verts = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in poly)
        regions.append(f'<Region Id="{i}" Type="0" Area="1"><Attributes/>'
                       f"<Vertices>{verts}</Vertices></Region>")
    return (f'<?xml version="1.0"?><Annotations MicronsPerPixel="{mpp}"><Annotation Id="1">'
            '<Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes><Regions>'
            '<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/>'
            f'</RegionAttributeHeaders>{"".join(regions)}{extra_regions}</Regions>'
            "<Plots/></Annotation></Annotations>")


def expected_area(poly, shape):
    rr, _ = draw_polygon(poly[:, 1], poly[:, 0], shape=shape)
    return len(rr)


def test_xml_rasterisation_matches_skimage_areas(tmp_path):
    f = tmp_path / "a.xml"
    degenerate = '<Region Id="9"><Vertices><Vertex X="1" Y="1"/><Vertex X="2" Y="2"/></Vertices></Region>'
    f.write_text(aperio_xml([RECT, TRI], extra_regions=degenerate))
    polys = read_aperio_xml(f)
    assert len(polys) == 2 and polys.skipped == 1 and polys.mpp == pytest.approx(0.2527)
    np.testing.assert_allclose(polys[0], RECT)
    labels = rasterize_instances(polys, (64, 70))
    assert labels.dtype == np.int32 and labels.shape == (64, 70)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() == expected_area(RECT, (64, 70)) == 21 * 16
    assert (labels == 2).sum() == expected_area(TRI, (64, 70)) > 100
    assert labels[12, 20] == 1 and labels[45, 50] == 2 and labels[0, 0] == 0


def test_overlap_later_polygon_wins_and_clipping():
    labels = rasterize_instances([RECT, TRI, OVER], (50, 50))
    assert labels[18, 28] == 3  # inside RECT and OVER -> the later one
    assert labels[44, 44] == 3  # inside TRI and OVER
    assert (labels == 1).sum() == expected_area(RECT, (50, 50)) - 6 * 6  # x 25..30, y 15..20 lost
    # a polygon partly outside the image is clipped, not an error
    big = rasterize_instances([np.array([[-5, -5], [10, -5], [10, 10], [-5, 10]], float)], (8, 8))
    assert big.all()


@pytest.mark.parametrize("text, reason", [
    ("<Annotations><Annotation><Regions><Region>", "malformed XML"),
    ("<Annotations MicronsPerPixel='0.25'><Annotation/></Annotations>", "empty annotation"),
    ("<Foo/>", "not an Aperio XML"),
])
def test_bad_xml_raises_input_file_error_naming_the_file(tmp_path, text, reason):
    f = tmp_path / "bad.xml"
    f.write_text(text)
    with pytest.raises(InputFileError) as e:
        read_aperio_xml(f)
    assert str(f) in str(e.value) and reason in str(e.value)


def test_only_degenerate_regions_is_empty(tmp_path):
    f = tmp_path / "deg.xml"
    f.write_text(aperio_xml([np.array([[1, 1], [2, 2], [1, 1]], float)]))
    with pytest.raises(InputFileError, match="1 degenerate region"):
        read_aperio_xml(f)


def test_geojson_polygon_multipolygon_and_skips(tmp_path):
    def feat(geom):
        return {"type": "Feature", "geometry": geom, "properties": {"objectType": "annotation"}}

    ring = RECT.tolist() + [RECT[0].tolist()]  # closed ring, as GeoJSON writes it
    hole = [[12, 7], [14, 7], [14, 9], [12, 7]]
    fc = {"type": "FeatureCollection", "features": [
        feat({"type": "Polygon", "coordinates": [ring, hole]}),
        feat({"type": "MultiPolygon", "coordinates": [[TRI.tolist()], [OVER.tolist()]]}),
        feat({"type": "Point", "coordinates": [3, 3]}),
    ]}
    f = tmp_path / "a.geojson"
    f.write_text(json.dumps(fc))
    polys = read_geojson(f)
    assert len(polys) == 3 and polys.skipped == 1
    np.testing.assert_allclose(polys[0], RECT)  # closing vertex dropped, hole ignored
    labels = load_instances(f, "geojson", (64, 64))
    assert labels.max() == 3 and (labels == 1).sum() == expected_area(RECT, (64, 64)) - 6 * 6
    # a bare list of features (QuPath "export as list") also works
    f2 = tmp_path / "b.json"
    f2.write_text(json.dumps(fc["features"][:1]))
    assert len(read_geojson(f2)) == 1
    f3 = tmp_path / "c.geojson"
    f3.write_text("{not json")
    with pytest.raises(InputFileError, match="malformed GeoJSON"):
        read_geojson(f3)
    f3.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputFileError, match="empty annotation"):
        read_geojson(f3)


def test_label_images_binary_and_labelled(tmp_path):
    import tifffile
    from PIL import Image

    binary = np.zeros((20, 30), np.uint8)
    binary[2:6, 2:6] = 255
    binary[10:15, 20:28] = 255
    Image.fromarray(binary).save(tmp_path / "bin.png")
    inst = load_instances(tmp_path / "bin.png", "label_image", (20, 30))
    assert inst.dtype == np.int32 and inst.max() == 2
    assert sorted(np.bincount(inst.ravel())[1:]) == [16, 40]

    labelled = np.zeros((20, 30), np.uint16)
    labelled[2:6, 2:6] = 7
    labelled[4:8, 6:9] = 9  # touching 7: a label image keeps them apart
    tifffile.imwrite(tmp_path / "lab.tif", labelled)
    inst = load_instances(tmp_path / "lab.tif", "label_image", (20, 30))
    assert set(np.unique(inst)) == {0, 7, 9} and (inst == 9).sum() == 12

    with pytest.raises(InputFileError, match="size mismatch"):
        load_instances(tmp_path / "lab.tif", "label_image", (30, 30))
    with pytest.raises(ValueError, match="unknown mask_format"):
        load_instances(tmp_path / "lab.tif", "mat", (20, 30))
    assert mask_format_for("x/a.XML") == "aperio_xml" and mask_format_for("a.tiff") == "label_image"


@pytest.mark.shared_data
def test_real_monuseg_annotations(shared_data):
    ann = sorted((shared_data / "monuseg2018/labeled/annotations").glob("*.xml"))
    assert len(ann) == 13
    for f in ann[:2] + [shared_data / "monuseg2018/labeled/annotations/TCGA-50-5931-01Z-00-DX1.xml"]:
        text = f.read_text()
        regions = re.findall(r"<Region\b.*?</Region>", text, flags=re.DOTALL)
        n_deg = sum(len(set(re.findall(r'<Vertex X="([^"]+)" Y="([^"]+)"', r))) < 3 for r in regions)
        polys = read_aperio_xml(f)
        assert len(polys) + polys.skipped == len(regions) > 250, f.name
        assert polys.skipped == n_deg
        labels = rasterize_instances(polys, (1000, 1000))
        coverage = (labels > 0).mean()
        assert 0.05 < coverage < 0.6, (f.name, coverage)
        # almost every nucleus keeps some pixels after overlaps
        assert len(np.unique(labels)) - 1 >= 0.98 * len(polys)
