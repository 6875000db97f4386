"""What is rendered from a dataset (in memory): the frame, its per-frame attributes (PS3.3
C.7.6.16.2.9-10), its lookup tables, its category; the PDF of an Encapsulated PDF."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import MPEG4HP41, ExplicitVRLittleEndian

from tessera.shared.errors import BadRequest, NotAcceptable
from tessera.shared.rendering import JPEG, PDF, RenderParams, Window
from tessera.transcode import render_source
from tessera.transcode.render_tasks import rendition


def image(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_pixel_data(pixels, photometric, bits)
    return ds


def item(**attrs: object) -> Dataset:
    out = Dataset()
    for name, value in attrs.items():
        setattr(out, name, value)
    return out


def enhanced() -> Dataset:
    """Three 2x2 frames: frame 2 has its own rescale and window, others share one."""
    ds = image(np.arange(12, dtype=np.uint16).reshape(3, 2, 2))
    shared = item(
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=1, RescaleIntercept=0)]),
        FrameVOILUTSequence=Sequence([item(WindowCenter=5, WindowWidth=10)]),
    )
    own = item(
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=2, RescaleIntercept=100)]),
        FrameVOILUTSequence=Sequence(
            [item(WindowCenter=[110, 0], WindowWidth=[20, 1], VOILUTFunction="SIGMOID")]
        ),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), own, Dataset()])
    return ds


def test_a_frame_takes_its_own_functional_groups_else_the_shared_ones():
    ds = enhanced()
    second = render_source.load_frame(ds, 2)
    assert second.pixels.tolist() == [[4, 5], [6, 7]]
    assert second.rescale == (2.0, 100.0)
    assert second.windows == (Window(110, 20, "sigmoid"), Window(0, 1, "sigmoid"))
    third = render_source.load_frame(ds, 3)
    assert third.rescale == (1.0, 0.0)
    assert third.windows == (Window(5, 10, "linear"),)


def test_frame_numbers_out_of_range_are_bad_requests():
    for n in (0, 4):
        with pytest.raises(BadRequest):
            render_source.load_frame(enhanced(), n)


def test_top_level_windows_skip_invalid_ones():
    ds = image(np.zeros((2, 2), dtype=np.uint16))
    ds.WindowCenter, ds.WindowWidth = [40, 50], [0, 400]  # a width of 0 is invalid
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    frame = render_source.load_frame(ds, 1)
    assert frame.windows == (Window(50, 400),)
    assert frame.rescale == (1.0, -1024.0)


def test_lookup_tables_are_read_whole():
    ds = image(np.array([[0, 1], [2, 3]], dtype=np.uint16))
    ds.ModalityLUTSequence = Sequence(
        [item(LUTDescriptor=[3, 1, 16], LUTData=[10, 20, 4000], ModalityLUTType="HU")]
    )
    ds.VOILUTSequence = Sequence([item(LUTDescriptor=[2, 0, 8], LUTData=[0, 255])])
    frame = render_source.load_frame(ds, 1)
    assert frame.modality_lut is not None and frame.voi_lut is not None
    assert frame.modality_lut(np.array([0, 1, 2, 3, 9])).tolist() == [10, 10, 20, 4000, 4000]
    assert frame.voi_lut.data.tolist() == [0, 255]


def test_palette_color_reads_its_palette():
    ds = image(np.array([[0, 1]], dtype=np.uint8), "PALETTE COLOR", 8)
    for color, values in (("Red", [0, 65535]), ("Green", [0, 0]), ("Blue", [65535, 0])):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [2, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", np.array(values, "<u2").tobytes())
    frame = render_source.load_frame(ds, 1)
    assert frame.palette is not None
    assert frame.palette.data.tolist() == [[0, 0, 65535], [65535, 0, 0]]


def test_categories_and_the_pdf():
    ds = Dataset()
    ds.SOPClassUID = render_source.ENCAPSULATED_PDF
    ds.EncapsulatedDocument = b"%PDF-1.4 body\0"
    assert render_source.category(ds) == "pdf"
    assert render_source.encapsulated_pdf(ds) == b"%PDF-1.4 body\0"
    ds.EncapsulatedDocumentLength = 13
    assert render_source.encapsulated_pdf(ds) == b"%PDF-1.4 body"
    assert render_source.category(Dataset()) == "other"
    video = image(np.zeros((2, 2), dtype=np.uint8), bits=8)
    video.file_meta.TransferSyntaxUID = MPEG4HP41
    assert render_source.category(video) == "video"
    assert render_source.category(image(np.zeros((2, 2), dtype=np.uint8), bits=8)) == "image"


def test_a_frame_too_large_is_not_decoded():
    ds = image(np.zeros((2, 2), dtype=np.uint16))
    ds.Rows = ds.Columns = 46341
    with pytest.raises(NotAcceptable, match="too large"):
        render_source.load_frame(ds, 1)


def test_pixel_data_that_does_not_decode_is_not_acceptable():
    ds = image(np.zeros((4, 4), dtype=np.uint16))
    ds.PixelData = b"\0\0"  # far shorter than 4x4 16-bit samples
    with pytest.raises(NotAcceptable, match="cannot be decoded"):
        render_source.load_frame(ds, 1)


def test_what_is_rendered_for_each_media_type():
    pdf = Dataset()
    pdf.SOPClassUID = render_source.ENCAPSULATED_PDF
    pdf.EncapsulatedDocument = b"%PDF-"
    assert render_source.encapsulated_pdf(pdf) == b"%PDF-"
    with pytest.raises(NotAcceptable, match="application/pdf"):
        rendition(dataset_bytes(pdf), 1, RenderParams(JPEG))
    picture = image(np.zeros((2, 2), dtype=np.uint8), bits=8)
    with pytest.raises(NotAcceptable, match="Encapsulated PDF"):
        rendition(dataset_bytes(picture), 1, RenderParams(PDF))
    assert rendition(dataset_bytes(picture), 1, RenderParams(JPEG)).startswith(b"\xff\xd8")


def dataset_bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3.4")
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
