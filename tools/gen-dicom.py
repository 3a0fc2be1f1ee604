#!/usr/bin/env python3
# requires: pydicom==2.4.4
# requires: numpy (any recent version; tested with 2.4.x here)
# requires: DCMTK command-line tools (dcmcjpeg, dcmcrle) for the compressed corpus files
"""Deterministic generator of synthetic DICOM test data for MedVault.

All data is synthetic: names, IDs and dates only *look* realistic.  Output is
byte-for-byte reproducible (fixed seeds, UIDs built from a fixed root plus
counters, no timestamps), given the same pydicom / DCMTK versions.

Modes
-----
  gen-dicom.py corpus OUTDIR
      A small, varied corpus of valid and malformed files (< 3 s), see
      ``build_corpus`` for the full list.

  gen-dicom.py ct-series OUTDIR --slices 300 --size 512 [--patient-id ID] [--patient-name NAME]
      One CT series (one study, one series), 16-bit, explicit VR little endian.

  gen-dicom.py small-files OUTDIR --count 2000
      Many small (~9 KB) instances spread over ~20 patients / ~40 studies.

  gen-dicom.py hostile OUTDIR [--depth 5600] [--elements 80000]
      Files that attack the parser (issue 10), written byte by byte (no pydicom), next to two
      ordinary importable files: sequences nested --depth deep (explicit VR, undefined lengths),
      100,000 deep, implicit VR with defined lengths, inside a deflated dataset; nesting exactly
      at and one past the 64-level limit; --elements small elements (importable); more than
      1,000,000 elements. ``reason`` says what the parser must refuse (null: must import).

  gen-dicom.py pixels OUTDIR
      Images whose pixels are known (OUTDIR/pixels.json names each file, its layout and a .raw
      file of the expected native pixels): native single and multi-frame (8/16-bit, odd frame
      sizes, big endian, RGB, palette colour), JPEG baseline/extended/lossless, JPEG-LS, RLE
      (with and without Basic Offset Table, fragmented, with an Extended Offset Table), JPEG
      2000 (Pillow), and pixel headers that claim more than the file holds.

  gen-dicom.py bulk-elements OUTDIR
      One Secondary Capture instance with binary values besides Pixel Data, in Explicit VR Little
      Endian, Implicit VR Little Endian and Explicit VR Big Endian (OUTDIR/bulk.json names the
      files, their UIDs, and each binary element: its path as /metadata's BulkDataURI gives it,
      its VR, its value as little endian hex, and whether it is longer than 1 KiB): an icon image
      (0088,0200 > 7FE0,0010, OB), a large and a small private OB (0009,1010 and 0009,1011), a
      large and a small overlay (6000,3000 and 6002,3000, OW), point coordinates two sequences
      deep in the second item (0066,0002 > 0066,0011 > 0066,0016, OF), and a small Pixel Data.

  gen-dicom.py big-file OUTFILE --mib 1024
      A single multi-frame instance with about N MiB of pixel data.  The pixel
      data element is appended by hand in a streaming fashion, so memory use
      stays small whatever the size.  No manifest file is written; the
      manifest-style entry for the file is printed as one JSON line on stdout.

Every directory mode writes OUTDIR/manifest.json::

  {"files": [{"path": "relative/path", "kind": "valid" | "malformed",
              "reason": null | "...", "transfer_syntax": "1.2.840...",
              "patient_name": "...", "patient_id": "...", "birth_date": "...",
              "study_uid": "...", "series_uid": "...", "sop_uid": "...",
              "modality": "...", "study_date": "...", "accession": "...",
              "referring": "...", "institution": "...",
              "size": <bytes>, "sha256": "<hex>"}]}

Every key is always present; a value is null when the file does not contain
that attribute.  Person names are given as decoded Unicode strings in DICOM PN
form (``Family^Given^Middle``), exactly as a reader would see them after
applying the file's Specific Character Set.  For malformed files derived from a
valid one, only the attributes that are still intact *before* the point of
corruption are reported (everything else is null).  ``size`` and ``sha256``
describe the file bytes on disk (handy for vault round-trip tests).

No network access; nothing is written outside OUTDIR (or OUTFILE).  Temporary
files needed by dcmcjpeg/dcmcrle live in OUTDIR/.gen-dicom-tmp and are removed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

#: Fixed root for every UID we generate (plus a per-mode arc and a counter).
UID_ROOT = "1.2.826.0.1.3680043.10.999."
IMPLEMENTATION_CLASS_UID = UID_ROOT + "0.1"
IMPLEMENTATION_VERSION_NAME = "MEDVAULT_GEN_1"

# SOP classes used below.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_GRAY_WORD = "1.2.840.10008.5.1.4.1.1.7.3"

# Transfer syntaxes produced by DCMTK (for reference / sanity checks).
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

PIXEL_DATA_TAG = 0x7FE00010
MIB = 1024 * 1024

# Manifest field -> DICOM tag holding that value (used to decide which fields
# survive in a corrupted file: a field survives if its element lies entirely
# before the corruption point, i.e. its tag sorts before the corrupted tag).
MANIFEST_FIELDS = {
    "patient_name": 0x00100010,
    "patient_id": 0x00100020,
    "birth_date": 0x00100030,
    "study_uid": 0x0020000D,
    "series_uid": 0x0020000E,
    "sop_uid": 0x00080018,
    "modality": 0x00080060,
    "study_date": 0x00080020,
    "accession": 0x00080050,
    "referring": 0x00080090,
    "institution": 0x00080080,
}


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


class UIDGen:
    """Deterministic UID source: ``UID_ROOT + arc + '.' + counter``."""

    def __init__(self, arc: str):
        self.prefix = f"{UID_ROOT}{arc}."
        self.counter = 0

    def __call__(self) -> str:
        self.counter += 1
        uid = f"{self.prefix}{self.counter}"
        assert len(uid) <= 64, uid
        return uid


def stable_arc(mode_number: int, *params: object) -> str:
    """UID arc for a mode, made unique per parameter set via CRC32.

    Different parameter sets (e.g. two CT series for two patients) thus never
    share UIDs, while the same parameters always give the same UIDs.
    """
    key = "|".join(str(p) for p in params).encode("utf-8")
    return f"{mode_number}.{zlib.crc32(key)}"


def ds_str(x: float) -> str:
    """Decimal String value: compact, and never "-0"."""
    s = f"{x:g}"
    return "0" if s == "-0" else s


def needs_utf8(*values: Optional[str]) -> bool:
    return any(v is not None and not v.isascii() for v in values)


@dataclass
class Patient:
    name: str
    id: str
    birth_date: str
    sex: str
    charset: Optional[str] = None  # SpecificCharacterSet, None = default repertoire


@dataclass
class Study:
    uid: str
    date: str
    time: str
    accession: str
    referring: str
    institution: str
    description: str
    study_id: str


@dataclass
class Series:
    uid: str
    number: int
    modality: str
    description: str
    frame_of_reference_uid: Optional[str] = None


@dataclass
class Written:
    """Result of writing one file: its bytes' size and hash."""

    size: int
    sha256: str


def write_bytes(path: str, data: bytes) -> Written:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return Written(len(data), hashlib.sha256(data).hexdigest())


def file_digest(path: str) -> Written:
    with open(path, "rb") as f:
        data = f.read()
    return Written(len(data), hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------
# Dataset construction
# --------------------------------------------------------------------------


def make_dataset(
    patient: Patient,
    study: Study,
    series: Series,
    sop_class: str,
    sop_uid: Optional[str],
    instance_number: int,
) -> Dataset:
    """Patient / study / series / instance level attributes (no pixels)."""
    ds = Dataset()
    if patient.charset:
        ds.SpecificCharacterSet = patient.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if series.modality == "CT" else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    if sop_uid is not None:
        ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = study.time
    ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = "MedVault Synthetic"
    ds.InstitutionName = study.institution
    ds.ReferringPhysicianName = study.referring
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.ManufacturerModelName = "GEN-DICOM"
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    ds.InstanceNumber = instance_number
    if series.frame_of_reference_uid:
        ds.FrameOfReferenceUID = series.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
    return ds


def set_pixels(
    ds: Dataset,
    arr: np.ndarray,
    bits_stored: int,
    signed: bool = False,
) -> None:
    """Image Pixel module for a MONOCHROME2 array (rows, cols) or (frames, rows, cols).

    Pixel Data is stored little endian here; ``encode`` swaps it for big endian.
    """
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
        rows, cols = arr.shape[1:]
    else:
        rows, cols = arr.shape
    bits_allocated = arr.dtype.itemsize * 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if bits_allocated == 8:
        data, vr = arr.tobytes(), "OB"
    else:
        data, vr = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(), "OW"
    ds.add_new(PIXEL_DATA_TAG, vr, data)


def ct_image_attrs(ds: Dataset, z: float, size: int, spacing: float, thickness: float) -> None:
    """CT Image / Image Plane attributes for an axial slice at table position z."""
    ds.KVP = "120"
    ds.SliceThickness = ds_str(thickness)
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "CHEST"
    ds.AcquisitionNumber = 1
    # Position of the centre of the first pixel for a field of view centred on 0.
    corner = ds_str(-spacing * (size - 1) / 2)
    ds.ImagePositionPatient = [corner, corner, ds_str(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = ds_str(z)
    ds.PixelSpacing = [ds_str(spacing), ds_str(spacing)]
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"


def encode(
    ds: Dataset,
    transfer_syntax: Optional[str] = ExplicitVRLittleEndian,
    *,
    meta: bool = True,
    like_original: bool = False,
) -> bytes:
    """Serialize a dataset to bytes.

    With ``meta=True`` a Part 10 file is produced (128-byte preamble, 'DICM',
    group 0002 with correct group length).  With ``meta=False`` the bare dataset
    is written (no preamble, no DICM, no group 0002) in implicit VR LE.

    ``like_original=True`` makes pydicom write exactly what we built: no
    validation of the file meta (needed for the file without any SOP Instance
    UID) and sequences/items flagged ``is_undefined_length`` are written with
    delimiters instead of explicit lengths.
    """
    buf = io.BytesIO()
    if not meta:
        ds.is_little_endian = True
        ds.is_implicit_VR = True
        ds.file_meta = FileMetaDataset()  # empty -> nothing written
        ds.preamble = None
        pydicom.dcmwrite(buf, ds, write_like_original=True)
        return buf.getvalue()
    fm = FileMetaDataset()
    fm.FileMetaInformationGroupLength = 0  # value computed by pydicom on write
    fm.FileMetaInformationVersion = b"\x00\x01"
    fm.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    fm.TransferSyntaxUID = transfer_syntax
    fm.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    fm.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = fm
    ds.preamble = b"\x00" * 128
    ds.is_little_endian = transfer_syntax != ExplicitVRBigEndian
    ds.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    pixels = ds.get("PixelData") if PIXEL_DATA_TAG in ds else None
    swap = not ds.is_little_endian and pixels is not None and ds[PIXEL_DATA_TAG].VR == "OW"
    if swap:
        # pydicom 2.4 writes OW values as raw bytes without byte swapping, so
        # convert our little endian words to big endian for this write only.
        ds.PixelData = np.frombuffer(pixels, dtype="<u2").astype(">u2").tobytes()
    try:
        pydicom.dcmwrite(buf, ds, write_like_original=like_original)
    finally:
        if swap:
            ds.PixelData = pixels
    return buf.getvalue()


def manifest_entry(
    relpath: str,
    ds: Optional[Dataset],
    transfer_syntax: Optional[str],
    written: Written,
    kind: str = "valid",
    reason: Optional[str] = None,
    corrupt_from_tag: Optional[int] = None,
) -> dict:
    """One manifest row.  Values are taken from the dataset that was written.

    If ``corrupt_from_tag`` is given, fields whose element tag is >= that tag
    are reported as null (they are not intact in the file).
    """
    entry = {"path": relpath.replace(os.sep, "/"), "kind": kind, "reason": reason,
             "transfer_syntax": transfer_syntax}
    for name, tag in MANIFEST_FIELDS.items():
        value = None
        if ds is not None and tag in ds and (corrupt_from_tag is None or tag < corrupt_from_tag):
            raw = ds[tag].value
            value = str(raw) if raw is not None else ""
        entry[name] = value
    entry["size"] = written.size
    entry["sha256"] = written.sha256
    return entry


def write_manifest(outdir: str, entries: list[dict]) -> None:
    entries = sorted(entries, key=lambda e: e["path"])
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump({"files": entries}, f, ensure_ascii=False, indent=1)
        f.write("\n")


def find_element(data: bytes, tag: int, vr: bytes, start: int = 0) -> int:
    """Offset of an explicit-VR-LE element header (tag + VR) in ``data``."""
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    pos = data.find(needle, start)
    if pos < 0:
        raise RuntimeError(f"element {tag:08X} not found")
    return pos


def dataset_start(data: bytes) -> int:
    """Offset of the first dataset element after preamble + file meta."""
    assert data[128:132] == b"DICM"
    # (0002,0000) UL, 2-byte length 4, value = group length
    group_len = struct.unpack_from("<I", data, 132 + 8)[0]
    return 132 + 12 + group_len


# --------------------------------------------------------------------------
# Pixel patterns (cheap, deterministic)
# --------------------------------------------------------------------------


class Phantom:
    """A crude chest-like CT phantom; per-slice variation costs a few numpy ops.

    Values are stored (unsigned, 12 bits); HU = value - 1024.
    """

    def __init__(self, size: int, seed: int = 1):
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        c = (size - 1) / 2.0
        s = size / 512.0
        self.size = size
        # Squared normalized distances to the structures' centres.
        self.body = ((x - c) / (200 * s)) ** 2 + ((y - c) / (150 * s)) ** 2
        self.lung_l = ((x - (c - 90 * s)) / (70 * s)) ** 2 + ((y - (c - 10 * s)) / (100 * s)) ** 2
        self.lung_r = ((x - (c + 90 * s)) / (70 * s)) ** 2 + ((y - (c - 10 * s)) / (100 * s)) ** 2
        self.spine = ((x - c) / (25 * s)) ** 2 + ((y - (c + 110 * s)) / (25 * s)) ** 2
        rng = np.random.default_rng(seed)
        self.noise = rng.integers(0, 24, size=(size, size), dtype=np.uint16)

    def slice(self, i: int, n: int) -> np.ndarray:
        t = i / max(n - 1, 1)
        grow = np.float32(1.0 + 0.25 * math.sin(math.pi * t))  # body widest mid-scan
        lung = np.float32(1.0 - 0.8 * t)  # lungs shrink towards the abdomen
        img = np.where(self.body * (1 / grow) < 1.0, np.uint16(1064), np.uint16(0))
        if lung > 0.05:
            lungs = (self.lung_l < lung) | (self.lung_r < lung)
            img[lungs] = 224
        img[self.spine < 1.0] = 1024 + 700
        # Shift the noise field per slice so every slice differs.
        img += np.roll(self.noise, i * 7, axis=1)
        return img


def gradient_image(rows: int, cols: int, seed: int, max_value: int, dtype=np.uint16) -> np.ndarray:
    """Small deterministic gradient + noise image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    base = (x * (max_value // 2) // max(cols - 1, 1) + y * (max_value // 4) // max(rows - 1, 1))
    noise = rng.integers(0, max(max_value // 8, 1), size=(rows, cols))
    return np.clip(base + noise, 0, max_value).astype(dtype)


# --------------------------------------------------------------------------
# Mode: corpus
# --------------------------------------------------------------------------


def run_dcmtk(args: list[str]) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True)
    except FileNotFoundError:
        sys.exit(f"gen-dicom: {args[0]} not found (install DCMTK, e.g. apt-get install dcmtk)")
    except subprocess.CalledProcessError as e:
        sys.exit(f"gen-dicom: {' '.join(args)} failed:\n{e.stderr.decode(errors='replace')}")


def build_corpus(outdir: str) -> list[dict]:
    """Writes the test corpus and returns the manifest entries.

    valid:
      syntax/explicit-vr-le.dcm            CT, explicit VR LE, 16-bit
      syntax/implicit-vr-le.dcm            implicit VR LE
      syntax/explicit-vr-be.dcm            explicit VR big endian (retired TS)
      syntax/no-file-meta.dcm              bare implicit VR LE dataset, no preamble/DICM/group 2
      multiframe/mr-5-frames.dcm           Enhanced MR, NumberOfFrames=5, functional groups
      compressed/jpeg-lossless.dcm         JPEG lossless SV1 (dcmcjpeg +e1)
      compressed/rle.dcm                   RLE lossless (dcmcrle)
      charset/latin1-mueller.dcm           ISO_IR 100, Müller^Jürgen (Latin-1 bytes)
      charset/utf8-mueller.dcm             ISO_IR 192, same patient as above
      charset/utf8-greek.dcm               ISO_IR 192, Παπαδόπουλος^Νίκος
      sequences/nested-sequences.dcm       nested SQs, some of undefined length
      patients/pNN/stNN/seNN/imNNN.dcm     3 patients, 4 studies x 2 series x 3 instances
    malformed:
      malformed/truncated-file-meta.dcm    cut inside (0002,0010) TransferSyntaxUID value
      malformed/truncated-header.dcm       cut inside the PatientName value
      malformed/truncated-pixel-data.dcm   last half of pixel data cut off
      malformed/garbage.dcm                4 KiB random bytes
      malformed/empty.dcm                  0 bytes
      malformed/notes.txt                  "hello"
      malformed/bad-vr-length.dcm          PatientName length patched to 0xFFF0
      malformed/missing-sop-instance-uid.dcm  Part 10 file without any SOP Instance UID
    """
    uid = UIDGen(stable_arc(1, "corpus-v1"))
    entries: list[dict] = []
    tmpdir = os.path.join(outdir, ".gen-dicom-tmp")

    def put(relpath: str, ds: Dataset, ts: str = ExplicitVRLittleEndian, meta: bool = True) -> bytes:
        data = encode(ds, ts, meta=meta)
        w = write_bytes(os.path.join(outdir, relpath), data)
        entries.append(manifest_entry(relpath, ds, ts, w))
        return data

    def simple_study(patient_no: int, accession: str, date: str, desc: str,
                     institution: str = "St. Elsewhere General Hospital",
                     referring: str = "Ehrlich^Paul^^Dr.") -> Study:
        return Study(uid=uid(), date=date, time="101530", accession=accession,
                     referring=referring, institution=institution,
                     description=desc, study_id=str(patient_no))

    def ct_instance(patient: Patient, study: Study, size: int = 16, seed: int = 1,
                    series_desc: str = "AXIAL 5mm") -> Dataset:
        series = Series(uid(), 1, "CT", series_desc, frame_of_reference_uid=uid())
        ds = make_dataset(patient, study, series, CT_IMAGE_STORAGE, uid(), 1)
        ct_image_attrs(ds, z=-100.0, size=size, spacing=0.7, thickness=5.0)
        set_pixels(ds, gradient_image(size, size, seed, 4095), bits_stored=12)
        return ds

    # 1-4: transfer syntax variants --------------------------------------
    p = Patient("Syntax^Explicit^Le", "MRN0001001", "19700101", "F")
    ds = ct_instance(p, simple_study(1, "ACC1001", "20230105", "CT HEAD W/O CONTRAST"), seed=1)
    explicit_le = put("syntax/explicit-vr-le.dcm", ds, ExplicitVRLittleEndian)

    p = Patient("Syntax^Implicit^Le", "MRN0001002", "19710202", "M")
    ds = ct_instance(p, simple_study(2, "ACC1002", "20230106", "CT HEAD W/O CONTRAST"), seed=2)
    put("syntax/implicit-vr-le.dcm", ds, ImplicitVRLittleEndian)

    p = Patient("Syntax^Explicit^Be", "MRN0001003", "19720303", "F")
    ds = ct_instance(p, simple_study(3, "ACC1003", "20230107", "CT HEAD W/O CONTRAST"), seed=3)
    put("syntax/explicit-vr-be.dcm", ds, ExplicitVRBigEndian)

    p = Patient("Syntax^NoMeta", "MRN0001004", "19730404", "M")
    ds = ct_instance(p, simple_study(4, "ACC1004", "20230108", "CT HEAD W/O CONTRAST"), seed=4)
    put("syntax/no-file-meta.dcm", ds, ImplicitVRLittleEndian, meta=False)

    # 5: multi-frame Enhanced MR (5 frames, functional groups) -----------
    p = Patient("Frames^Multi", "MRN0001005", "19800505", "F")
    study = simple_study(5, "ACC1005", "20230109", "MR BRAIN W/O CONTRAST")
    series = Series(uid(), 3, "MR", "T2 AX", frame_of_reference_uid=uid())
    ds = make_dataset(p, study, series, ENHANCED_MR_IMAGE_STORAGE, uid(), 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.MagneticFieldStrength = "1.5"
    pm = Dataset()
    pm.PixelSpacing = ["0.9", "0.9"]
    pm.SliceThickness = "4"
    po = Dataset()
    po.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for f in range(5):
        fc = Dataset()
        fc.InStackPositionNumber = f + 1
        fc.StackID = "1"
        pp = Dataset()
        pp.ImagePositionPatient = ["-14.4", "-14.4", ds_str(f * 4.0)]
        item = Dataset()
        item.FrameContentSequence = Sequence([fc])
        item.PlanePositionSequence = Sequence([pp])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    frames = np.stack([gradient_image(32, 32, 50 + f, 4095) for f in range(5)])
    set_pixels(ds, frames, bits_stored=12)
    put("multiframe/mr-5-frames.dcm", ds, ExplicitVRLittleEndian)

    # 6: compressed (DCMTK), from explicit VR LE sources ------------------
    os.makedirs(tmpdir, exist_ok=True)
    try:
        for rel, tool, tool_args, ts, pname, pid, seed in [
            ("compressed/jpeg-lossless.dcm", "dcmcjpeg", ["+e1"], JPEG_LOSSLESS_SV1,
             "Compressed^Jpeg", "MRN0001006", 6),
            ("compressed/rle.dcm", "dcmcrle", [], RLE_LOSSLESS,
             "Compressed^Rle", "MRN0001007", 7),
        ]:
            p = Patient(pname, pid, "19810606", "M")
            ds = ct_instance(p, simple_study(seed, f"ACC100{seed}", "20230110", "CT CHEST"),
                             size=32, seed=seed)
            src = os.path.join(tmpdir, "src.dcm")
            write_bytes(src, encode(ds, ExplicitVRLittleEndian))
            dst = os.path.join(outdir, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            run_dcmtk([tool, *tool_args, src, dst])
            # Check the result really carries the expected TS and UIDs.
            back = pydicom.dcmread(dst, stop_before_pixels=True)
            assert back.file_meta.TransferSyntaxUID == ts, (rel, back.file_meta.TransferSyntaxUID)
            assert back.SOPInstanceUID == ds.SOPInstanceUID
            entries.append(manifest_entry(rel, back, ts, file_digest(dst)))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    # 7: character sets ----------------------------------------------------
    # Same person in Latin-1 and UTF-8 encodings -> same PatientID.
    mueller_latin1 = Patient("Müller^Jürgen", "MRN0002001", "19650712", "M", charset="ISO_IR 100")
    mueller_utf8 = Patient("Müller^Jürgen", "MRN0002001", "19650712", "M", charset="ISO_IR 192")
    ds = ct_instance(mueller_latin1, simple_study(
        8, "ACC2001", "20230201", "CT THORAX", institution="Universitätsklinikum Köln",
        referring="Schäfer^Anna^^Dr. med."), seed=8)
    put("charset/latin1-mueller.dcm", ds)
    ds = ct_instance(mueller_utf8, simple_study(
        9, "ACC2002", "20230315", "CT THORAX", institution="Universitätsklinikum Köln",
        referring="Schäfer^Anna^^Dr. med."), seed=9)
    put("charset/utf8-mueller.dcm", ds)
    greek = Patient("Παπαδόπουλος^Νίκος", "MRN0002003", "19581124", "M", charset="ISO_IR 192")
    ds = ct_instance(greek, simple_study(
        10, "ACC2003", "20230402", "CT ΘΩΡΑΚΑ", institution="Γενικό Νοσοκομείο Αθηνών",
        referring="Γεωργίου^Μαρία"), seed=10)
    put("charset/utf8-greek.dcm", ds)

    # 8: nested sequences --------------------------------------------------
    p = Patient("Sequence^Nested", "MRN0003001", "19900909", "F")
    ds = ct_instance(p, simple_study(11, "ACC3001", "20230501", "CT ABDOMEN"), seed=11)
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Mgmt (retired)
    ref_study.ReferencedSOPInstanceUID = ds.StudyInstanceUID
    ds.ReferencedStudySequence = Sequence([ref_study])
    proc = Dataset()
    proc.CodeValue = "CTABD"
    proc.CodingSchemeDesignator = "99MEDVAULT"
    proc.CodeMeaning = "CT abdomen with contrast"
    ds.ProcedureCodeSequence = Sequence([proc])
    # RequestAttributesSequence -> item -> ScheduledProtocolCodeSequence -> item
    #   -> ProtocolContextSequence (third level)
    ctx = Dataset()
    ctx.ValueType = "TEXT"
    ctx.TextValue = "oral contrast given"
    proto = Dataset()
    proto.CodeValue = "P-ABD-1"
    proto.CodingSchemeDesignator = "99MEDVAULT"
    proto.CodeMeaning = "Abdomen routine"
    proto.ProtocolContextSequence = Sequence([ctx])
    req = Dataset()
    req.RequestedProcedureID = "RP3001"
    req.ScheduledProcedureStepID = "SPS3001"
    req.ScheduledProtocolCodeSequence = Sequence([proto])
    ds.RequestAttributesSequence = Sequence([req, Dataset()])  # second item empty
    # Encode some sequences / items with undefined length (delimiters), which
    # pydicom only keeps with write_like_original=True.
    ds["ProcedureCodeSequence"].is_undefined_length = True
    proc.is_undefined_length_sequence_item = True
    ds["RequestAttributesSequence"].is_undefined_length = True
    req.is_undefined_length_sequence_item = True
    proto["ProtocolContextSequence"].is_undefined_length = True
    rel = "sequences/nested-sequences.dcm"
    data = encode(ds, ExplicitVRLittleEndian, like_original=True)
    entries.append(manifest_entry(rel, ds, ExplicitVRLittleEndian,
                                  write_bytes(os.path.join(outdir, rel), data)))

    # 9: 3 patients, 4 studies, 2 series/study, 3 instances/series ---------
    patients = [
        Patient("Doe^Jane", "MRN0012345", "19800314", "F"),
        Patient("Smith^John^Q", "MRN0067890", "19551102", "M"),
        Patient("O'Brien^Siobhan^M^Dr.^PhD", "MRN0024680", "19921230", "F", charset="ISO_IR 100"),
    ]
    plan = [  # (patient index, date, accession, referring, institution, description, modality)
        (0, "20220117", "A2022011701", "House^Gregory", "Princeton-Plainsboro Teaching Hospital",
         "CT CHEST W/O CONTRAST", "CT"),
        (0, "20230622", "A2023062205", "Wilson^James", "Princeton-Plainsboro Teaching Hospital",
         "MR BRAIN W AND W/O CONTRAST", "MR"),
        (1, "20210930", "RAD-88213", "Kildare^James", "Blair General Hospital",
         "CT ABDOMEN PELVIS W CONTRAST", "CT"),
        (2, "20240304", "X00042", "Quinn^Michaela", "Seattle Grace Hospital",
         "MR KNEE LEFT", "MR"),
    ]
    series_names = {"CT": ["AXIAL 5mm", "CORONAL MPR 3mm"], "MR": ["T1 SAG", "T2 AX"]}
    for s_idx, (pi, date, acc, ref, inst, desc, mod) in enumerate(plan):
        pat = patients[pi]
        study = Study(uid(), date, f"{8 + s_idx:02d}2107", acc, ref, inst, desc, str(100 + s_idx))
        for se in range(2):
            series = Series(uid(), se + 1, mod, series_names[mod][se], frame_of_reference_uid=uid())
            for im in range(3):
                sop_class = CT_IMAGE_STORAGE if mod == "CT" else MR_IMAGE_STORAGE
                ds = make_dataset(pat, study, series, sop_class, uid(), im + 1)
                if mod == "CT":
                    ct_image_attrs(ds, z=-50.0 + 5 * im, size=16, spacing=0.8, thickness=5.0)
                else:
                    ds.ImagePositionPatient = ["-7.2", "-7.2", ds_str(4.0 * im)]
                    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
                    ds.PixelSpacing = ["0.9", "0.9"]
                    ds.SliceThickness = "4"
                set_pixels(ds, gradient_image(16, 16, 1000 + s_idx * 10 + se * 3 + im, 4095),
                           bits_stored=12)
                put(f"patients/p{pi + 1:02d}/st{s_idx + 1:02d}/se{se + 1:02d}/im{im + 1:03d}.dcm", ds)

    # 10-14: malformed ------------------------------------------------------
    def put_bad(relpath: str, data: bytes, reason: str, ds: Optional[Dataset] = None,
                ts: Optional[str] = None, corrupt_from_tag: Optional[int] = None) -> None:
        w = write_bytes(os.path.join(outdir, relpath), data)
        entries.append(manifest_entry(relpath, ds, ts, w, kind="malformed", reason=reason,
                                      corrupt_from_tag=corrupt_from_tag))

    # A fresh, valid explicit VR LE file to derive the broken ones from.
    src_p = Patient("Broken^Bob", "MRN0009001", "19770707", "M")
    src = ct_instance(src_p, simple_study(12, "ACC9001", "20230701", "CT SINUS"), size=32, seed=12)
    good = encode(src, ExplicitVRLittleEndian)
    ds_off = dataset_start(good)

    # 10a: cut inside the file meta (middle of the TransferSyntaxUID value).
    ts_pos = find_element(good, 0x00020010, b"UI")
    put_bad("malformed/truncated-file-meta.dcm", good[: ts_pos + 8 + 5],
            "truncated in file meta", src, None, corrupt_from_tag=0)
    # 10b: cut inside the dataset header (middle of the PatientName value), long before pixels.
    pn_pos = find_element(good, 0x00100010, b"PN", ds_off)
    pn_len = struct.unpack_from("<H", good, pn_pos + 6)[0]
    put_bad("malformed/truncated-header.dcm", good[: pn_pos + 8 + pn_len // 2],
            "truncated in dataset header (inside PatientName)", src, ExplicitVRLittleEndian,
            corrupt_from_tag=0x00100010)

    # 11: last half of the pixel data cut off.
    px_pos = find_element(good, PIXEL_DATA_TAG, b"OW", ds_off)
    px_len = struct.unpack_from("<I", good, px_pos + 8)[0]
    assert px_pos + 12 + px_len == len(good)
    put_bad("malformed/truncated-pixel-data.dcm", good[: px_pos + 12 + px_len // 2],
            "truncated in pixel data", src, ExplicitVRLittleEndian,
            corrupt_from_tag=PIXEL_DATA_TAG)

    # 12: garbage, empty, text.
    garbage = np.random.default_rng(4242).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert garbage[128:132] != b"DICM"
    put_bad("malformed/garbage.dcm", garbage, "random bytes (4 KiB)")
    put_bad("malformed/empty.dcm", b"", "empty file")
    put_bad("malformed/notes.txt", b"hello", "not DICOM (text file)")

    # 13: PatientName length field patched to 0xFFF0 (> rest of file).
    bad = bytearray(good)
    assert len(good) - (pn_pos + 8) < 0xFFF0
    struct.pack_into("<H", bad, pn_pos + 6, 0xFFF0)
    put_bad("malformed/bad-vr-length.dcm", bytes(bad),
            "wrong VR length: PatientName (0010,0010) length patched to 0xFFF0",
            src, ExplicitVRLittleEndian, corrupt_from_tag=0x00100010)

    # 14: syntactically valid Part 10 file, but no SOP Instance UID anywhere
    # (neither (0008,0018) in the dataset nor (0002,0003) in the file meta).
    p = Patient("Missing^Uid", "MRN0009002", "19880808", "F")
    ds = ct_instance(p, simple_study(13, "ACC9002", "20230702", "CT SINUS"), seed=13)
    del ds.SOPInstanceUID
    put_bad("malformed/missing-sop-instance-uid.dcm",
            encode(ds, ExplicitVRLittleEndian, like_original=True),
            "missing SOP Instance UID", ds, ExplicitVRLittleEndian)

    return entries


# --------------------------------------------------------------------------
# Mode: ct-series
# --------------------------------------------------------------------------


def build_ct_series(outdir: str, slices: int, size: int, patient_id: str, patient_name: str) -> list[dict]:
    uid = UIDGen(stable_arc(2, slices, size, patient_id, patient_name))
    patient = Patient(patient_name, patient_id, "19630419", "M",
                      charset="ISO_IR 192" if needs_utf8(patient_name, patient_id) else None)
    study = Study(uid(), "20240115", "093012", "CT24011501", "Grey^Meredith",
                  "Mercy West Medical Center", "CT CHEST ABDOMEN PELVIS W CONTRAST", "1")
    series = Series(uid(), 2, "CT", f"AXIAL {slices} slices 1.25mm", frame_of_reference_uid=uid())
    phantom = Phantom(size)
    spacing = round(350.0 / size, 4)  # ~35 cm field of view
    thickness = 1.25
    width = max(4, len(str(slices)))

    # One dataset reused for every slice; only instance-level values change.
    ds = make_dataset(patient, study, series, CT_IMAGE_STORAGE, None, 1)
    ds.AcquisitionDate = study.date
    ds.AcquisitionTime = study.time
    entries = []
    for i in range(slices):
        z = -thickness * i  # head first supine: moving towards the feet
        ds.SOPInstanceUID = uid()
        ds.InstanceNumber = i + 1
        ct_image_attrs(ds, z=z, size=size, spacing=spacing, thickness=thickness)
        set_pixels(ds, phantom.slice(i, slices), bits_stored=12)
        rel = f"CT{i + 1:0{width}d}.dcm"
        w = write_bytes(os.path.join(outdir, rel), encode(ds, ExplicitVRLittleEndian))
        entries.append(manifest_entry(rel, ds, ExplicitVRLittleEndian, w))
    return entries


# --------------------------------------------------------------------------
# Mode: small-files
# --------------------------------------------------------------------------

FAMILY = ["Doe", "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller",
          "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson",
          "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee"]
GIVEN = ["Jane", "John", "Maria", "David", "Linda", "James", "Susan", "Robert", "Karen",
         "Michael", "Lisa", "William", "Nancy", "Richard", "Betty", "Joseph", "Sandra",
         "Thomas", "Ashley", "Charles", "Emily", "Daniel"]
HOSPITALS = ["County General Hospital", "St. Mary's Medical Center", "Riverside Clinic",
             "Lakeview Imaging Center"]
REFERRERS = ["Carter^John", "Ross^Doug", "Lewis^Susan", "Greene^Mark", "Benton^Peter"]


def build_small_files(outdir: str, count: int, n_patients: int, n_studies: int) -> list[dict]:
    uid = UIDGen(stable_arc(3, count, n_patients, n_studies))
    n_studies = max(1, min(n_studies, count))
    n_patients = max(1, min(n_patients, n_studies))
    patients = [
        Patient(f"{FAMILY[i % len(FAMILY)]}^{GIVEN[(i * 7) % len(GIVEN)]}",
                f"MRN{5000000 + i * 137:07d}",
                f"{1940 + (i * 3) % 60}{1 + i % 12:02d}{1 + (i * 5) % 28:02d}",
                "F" if i % 2 == 0 else "M")
        for i in range(n_patients)
    ]
    modalities = [("CT", CT_IMAGE_STORAGE), ("MR", MR_IMAGE_STORAGE), ("CR", CR_IMAGE_STORAGE)]
    entries = []
    # Instances are split as evenly as possible over studies; each study has 2
    # series (or 1 if it has only one instance).
    for s in range(n_studies):
        first = s * count // n_studies
        last = (s + 1) * count // n_studies
        n_inst = last - first
        pi = s * n_patients // n_studies
        pat = patients[pi]
        mod, sop_class = modalities[s % len(modalities)]
        study = Study(uid(), f"{2015 + s % 10}{1 + s % 12:02d}{1 + (s * 3) % 28:02d}",
                      f"{8 + s % 10:02d}{(s * 7) % 60:02d}00", f"ACC{700000 + s}",
                      REFERRERS[s % len(REFERRERS)], HOSPITALS[s % len(HOSPITALS)],
                      f"{mod} ROUTINE", str(s + 1))
        n_series = 2 if n_inst >= 2 else 1
        series_list = [Series(uid(), k + 1, mod, f"{mod} SERIES {k + 1}",
                              frame_of_reference_uid=uid()) for k in range(n_series)]
        rng = np.random.default_rng(s)
        base = gradient_image(64, 64, 10_000 + s, 4095)
        for j in range(n_inst):
            k = j * n_series // n_inst
            series = series_list[k]
            ds = make_dataset(pat, study, series, sop_class, uid(), j + 1)
            if mod == "CR":
                ds.ImagerPixelSpacing = ["0.5", "0.5"]
                ds.ViewPosition = "PA"
            else:
                ds.ImagePositionPatient = ["-16", "-16", ds_str(j * 2.0)]
                ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
                ds.PixelSpacing = ["0.5", "0.5"]
            img = base + rng.integers(0, 64, size=(64, 64), dtype=np.uint16)
            set_pixels(ds, img, bits_stored=12)
            rel = f"p{pi + 1:03d}/st{s + 1:03d}/se{k + 1:02d}/im{j + 1:05d}.dcm"
            w = write_bytes(os.path.join(outdir, rel), encode(ds, ExplicitVRLittleEndian))
            entries.append(manifest_entry(rel, ds, ExplicitVRLittleEndian, w))
    return entries


# --------------------------------------------------------------------------
# Mode: big-file
# --------------------------------------------------------------------------


def build_big_file(outfile: str, mib: float, size: int) -> dict:
    """Multi-frame Secondary Capture (grayscale word) with ~mib MiB of pixels.

    The header is written by pydicom without Pixel Data; the (7FE0,0010) OW
    element is then appended by hand (explicit VR LE: tag, 'OW', 2 reserved
    bytes, 4-byte length) and filled frame by frame, so memory use is O(frame).
    """
    frame_bytes = size * size * 2
    frames = max(1, math.ceil(mib * MIB / frame_bytes))
    total = frames * frame_bytes
    if total >= 0xFFFFFFFE:
        sys.exit("gen-dicom: pixel data must be < 4 GiB (32-bit length field)")
    uid = UIDGen(stable_arc(4, mib, size))
    patient = Patient("Large^Lars", "MRN0777777", "19750520", "M")
    study = Study(uid(), "20240610", "141500", "BIG0001", "Bigelow^Ann",
                  "Hugefile Imaging Institute", "SYNTHETIC LARGE MULTIFRAME", "1")
    series = Series(uid(), 1, "OT", f"{frames} frames {size}x{size}")
    ds = make_dataset(patient, study, series, SC_MULTIFRAME_GRAY_WORD, uid(), 1)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # FrameTime
    ds.FrameTime = "33.3"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    header = encode(ds, ExplicitVRLittleEndian)

    base = gradient_image(size, size, 99, 4095 - 1024)
    frame = np.empty_like(base)
    sha = hashlib.sha256()
    os.makedirs(os.path.dirname(os.path.abspath(outfile)), exist_ok=True)
    with open(outfile, "wb") as f:
        elem_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, total)
        for chunk in (header, elem_header):
            f.write(chunk)
            sha.update(chunk)
        for k in range(frames):
            np.add(base, np.uint16((k * 4) % 1024), out=frame)  # a cheap per-frame change
            mv = memoryview(frame.astype("<u2", copy=False)).cast("B")
            f.write(mv)
            sha.update(mv)
    w = Written(len(header) + len(elem_header) + total, sha.hexdigest())
    return manifest_entry(os.path.basename(outfile), ds, ExplicitVRLittleEndian, w)



# --------------------------------------------------------------------------
# Mode: hostile (parser limits, issue 10)
# --------------------------------------------------------------------------

DEFLATED_EXPLICIT_LE = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
UNDEFINED = 0xFFFFFFFF


def _pad(vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr in (b"UI", b"OB", b"UN") else b" "
    return value


def el_explicit(tag: int, vr: bytes, value: bytes = b"", length: Optional[int] = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides (e.g. UNDEFINED)."""
    value = _pad(vr, value)
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    head += struct.pack("<HI", 0, n) if vr in LONG_VRS else struct.pack("<H", n)
    return head + value


def el_implicit(tag: int, value: bytes, length: Optional[int] = None) -> bytes:
    n = len(value) if length is None else length
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, n) + value


def item_tag(element: int, length: int) -> bytes:
    return struct.pack("<HHI", 0xFFFE, element, length)


def part10_meta(sop_class: str, sop_uid: str, ts: str) -> bytes:
    body = b"".join([
        el_explicit(0x00020001, b"OB", b"\0\1"),
        el_explicit(0x00020002, b"UI", sop_class.encode()),
        el_explicit(0x00020003, b"UI", sop_uid.encode()),
        el_explicit(0x00020010, b"UI", ts.encode()),
        el_explicit(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode()),
    ])
    return b"\0" * 128 + b"DICM" + el_explicit(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def base_elements(uid: "UIDGen", n: int, implicit: bool = False) -> tuple[list[tuple[int, bytes, bytes]], dict]:
    """The attributes an importable instance needs, as (tag, VR, value), sorted; plus manifest values."""
    study, series, sop = uid(), uid(), uid()
    name, pid = f"Hostile^Case{n}", f"MRNH{n:05d}"
    els = [
        (0x00080016, b"UI", SC_IMAGE_STORAGE.encode()),
        (0x00080018, b"UI", sop.encode()),
        (0x00080020, b"DA", b"20240101"),
        (0x00080060, b"CS", b"OT"),
        (0x00100010, b"PN", name.encode()),
        (0x00100020, b"LO", pid.encode()),
        (0x0020000D, b"UI", study.encode()),
        (0x0020000E, b"UI", series.encode()),
    ]
    info = {"patient_name": name, "patient_id": pid, "study_uid": study, "series_uid": series,
            "sop_uid": sop, "modality": "OT", "study_date": "20240101"}
    return els, info


def encode_elements(els: list[tuple[int, bytes, bytes]], implicit: bool) -> bytes:
    if implicit:
        return b"".join(el_implicit(t, _pad(vr, v)) for t, vr, v in els)
    return b"".join(el_explicit(t, vr, v) for t, vr, v in els)


CONTENT_SEQUENCE = 0x0040A730  # after every base element's tag


def nested_undefined(depth: int) -> bytes:
    """``depth`` sequences, each in an item of the one before, all with undefined lengths (explicit VR)."""
    opening = el_explicit(CONTENT_SEQUENCE, b"SQ", length=UNDEFINED) + item_tag(0xE000, UNDEFINED)
    closing = item_tag(0xE00D, 0) + item_tag(0xE0DD, 0)
    return opening * depth + closing * depth


def nested_defined_implicit(depth: int) -> bytes:
    """``depth`` sequences with defined lengths, implicit VR (the dictionary says (0040,A730) is SQ)."""
    inner = b""
    for _ in range(depth):
        item = item_tag(0xE000, len(inner)) + inner
        inner = el_implicit(CONTENT_SEQUENCE, item)
    return inner


def build_hostile(outdir: str, depth: int, n_elements: int) -> list[dict]:
    uid = UIDGen(stable_arc(4, depth, n_elements))
    entries: list[dict] = []

    def put(rel: str, data: bytes, reason: Optional[str], ts: str, info: Optional[dict] = None) -> None:
        w = write_bytes(os.path.join(outdir, rel), data)
        entry = {"path": rel, "kind": "malformed" if reason else "valid", "reason": reason,
                 "transfer_syntax": ts}
        entry.update({k: None for k in MANIFEST_FIELDS})
        entry.update(info or {})
        entry.update({"size": w.size, "sha256": w.sha256})
        entries.append(entry)

    def explicit_file(n: int, extra: bytes, ts: str = EXPLICIT_LE) -> tuple[bytes, dict]:
        els, info = base_elements(uid, n)
        return part10_meta(SC_IMAGE_STORAGE, info["sop_uid"], ts) + encode_elements(els, False) + extra, info

    data, info = explicit_file(1, b"")
    put("ordinary-1.dcm", data, None, EXPLICIT_LE, info)
    data, info = explicit_file(2, nested_undefined(3))
    put("ordinary-2-nested-3.dcm", data, None, EXPLICIT_LE, info)
    data, info = explicit_file(3, nested_undefined(64))
    put("nested-64.dcm", data, None, EXPLICIT_LE, info)

    data, _ = explicit_file(4, nested_undefined(65))
    put("nested-65.dcm", data, "nesting deeper than 64 levels", EXPLICIT_LE)
    data, _ = explicit_file(5, nested_undefined(depth))
    put(f"nested-{depth}.dcm", data, "nesting deeper than 64 levels", EXPLICIT_LE)
    data, _ = explicit_file(6, nested_undefined(100_000))
    put("nested-100000.dcm", data, "nesting deeper than 64 levels", EXPLICIT_LE)

    els, info = base_elements(uid, 7, implicit=True)
    data = part10_meta(SC_IMAGE_STORAGE, info["sop_uid"], IMPLICIT_LE) + encode_elements(els, True) \
        + nested_defined_implicit(depth)
    put(f"nested-{depth}-implicit-defined.dcm", data, "nesting deeper than 64 levels", IMPLICIT_LE)

    els, info = base_elements(uid, 8)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = z.compress(encode_elements(els, False) + nested_undefined(depth)) + z.flush()
    put(f"nested-{depth}-deflated.dcm", part10_meta(SC_IMAGE_STORAGE, info["sop_uid"], DEFLATED_EXPLICIT_LE) + body,
        "nesting deeper than 64 levels", DEFLATED_EXPLICIT_LE)
    els, info = base_elements(uid, 9)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = z.compress(encode_elements(els, False) + nested_undefined(3)) + z.flush()
    put("deflated-nested-3.dcm", part10_meta(SC_IMAGE_STORAGE, info["sop_uid"], DEFLATED_EXPLICIT_LE) + body,
        None, DEFLATED_EXPLICIT_LE, info)

    # Many small private elements in odd groups between (0008,xxxx) and (0010,xxxx): one group holds
    # at most 0xFF00 of them (xx10..FFFF after the creator block).
    def private_elements(count: int, value: bytes, vr: bytes = b"LO") -> bytes:
        out, group, element = [], 0x0009, 0x1000
        out.append(el_explicit(group << 16 | 0x0010, b"LO", b"MEDVAULT TEST"))
        for _ in range(count):
            if element > 0xFFFF:
                group, element = group + 2, 0x1000
                out.append(el_explicit(group << 16 | 0x0010, b"LO", b"MEDVAULT TEST"))
            out.append(el_explicit(group << 16 | element, vr, value))
            element += 1
        assert group < 0x0010 or count > 200_000
        return b"".join(out)

    els, info = base_elements(uid, 10)
    head, tail = [e for e in els if e[0] < 0x00100000], [e for e in els if e[0] >= 0x00100000]
    data = part10_meta(SC_IMAGE_STORAGE, info["sop_uid"], EXPLICIT_LE) + encode_elements(head, False) \
        + private_elements(n_elements, b"ab") + encode_elements(tail, False)
    put(f"elements-{n_elements}.dcm", data, None, EXPLICIT_LE, info)

    # Over the element limit: 1,100,000 empty elements (8 bytes each). Their groups run past 0x0010, so
    # the base attributes come first and the order is not ascending; the pre-scan refuses by count first.
    els, _ = base_elements(uid, 11)
    data = part10_meta(SC_IMAGE_STORAGE, els[1][2].decode(), EXPLICIT_LE) + encode_elements(els, False) \
        + private_elements(1_100_000, b"")
    put("elements-1100000.dcm", data, "more than 1000000 DICOM data elements", EXPLICIT_LE)
    return entries


# --------------------------------------------------------------------------
# Mode: pixels (frames, decoding and rendering; docs/pixels.md)
# --------------------------------------------------------------------------


def build_pixels(outdir: str) -> list[dict]:
    """Images whose pixels are known, in every layout and codec the pixel layer handles.

    Each entry of OUTDIR/pixels.json names a file, its expected layout, and ``raw``: a file with the
    pixels the generator wrote, native little endian, frames one after another, colour by pixel
    (what decoding the file's frames must give back; ``lossy`` ones within a tolerance).
    ``reason`` is set for files the layout must refuse (and says what it must mention).
    """
    uid = UIDGen(stable_arc(77, "pixels"))
    study, series = uid(), uid()
    tmp = os.path.join(outdir, ".gen-dicom-tmp")
    os.makedirs(tmp, exist_ok=True)
    entries: list[dict] = []

    def dataset(frames: np.ndarray, photometric: str, bits_stored: int, signed: bool = False,
                multi: bool = True) -> Dataset:
        """frames: (n, rows, cols) or (n, rows, cols, samples)."""
        ds = Dataset()
        ds.SOPClassUID = SC_IMAGE_STORAGE
        ds.SOPInstanceUID = uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "PIXELS-1", "Pixel^Test", "OT"
        ds.InstanceNumber = len(entries) + 1
        n, rows, cols = frames.shape[:3]
        spp = frames.shape[3] if frames.ndim == 4 else 1
        ds.SamplesPerPixel = spp
        ds.PhotometricInterpretation = photometric
        if spp > 1:
            ds.PlanarConfiguration = 0
        if multi:
            ds.NumberOfFrames = n
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated = frames.dtype.itemsize * 8
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        data = frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
        ds.add_new(PIXEL_DATA_TAG, "OB" if frames.dtype.itemsize == 1 else "OW", data)
        return ds

    def raw_of(frames: np.ndarray) -> bytes:
        return frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()

    def put(name: str, data: bytes, ds: Dataset, frames: np.ndarray, ts: str, *, lossy: bool = False,
            encapsulated: bool = False, bot: bool = False, eot: bool = False, photometric: Optional[str] = None,
            reason: Optional[str] = None) -> None:
        write_bytes(os.path.join(outdir, name), data)
        write_bytes(os.path.join(outdir, name + ".raw"), raw_of(frames))
        entries.append({
            "path": name, "raw": name + ".raw", "transfer_syntax": ts, "frames": int(frames.shape[0]),
            "rows": int(ds.Rows), "columns": int(ds.Columns), "samples": int(ds.SamplesPerPixel),
            "bits_allocated": int(ds.BitsAllocated), "bits_stored": int(ds.BitsStored),
            "photometric": photometric or str(ds.PhotometricInterpretation),
            "lossy": lossy, "encapsulated": encapsulated, "bot": bot, "eot": eot, "reason": reason,
        })

    def write(name: str, ds: Dataset, frames: np.ndarray, ts: str = ExplicitVRLittleEndian, **kw) -> bytes:
        data = encode(ds, ts)
        put(name, data, ds, frames, ts, **kw)
        return data

    def dcmtk(name: str, source: bytes, tool: list[str], frames: np.ndarray, **kw) -> bytes:
        src, dst = os.path.join(tmp, "in.dcm"), os.path.join(tmp, "out.dcm")
        write_bytes(src, source)
        run_dcmtk(tool + [src, dst])
        with open(dst, "rb") as f:
            data = f.read()
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        put(name, data, ds, frames, str(ds.file_meta.TransferSyntaxUID), encapsulated=True, **kw)
        return data

    def ramp(n: int, rows: int, cols: int, step: int, top: int, dtype) -> np.ndarray:
        """Every row strictly increasing left to right; frames differ by an offset."""
        y, x = np.mgrid[0:rows, 0:cols]
        return np.stack([np.clip(x * step + y + 7 * f, 0, top) for f in range(n)]).astype(dtype)

    def smooth_rgb(n: int, rows: int, cols: int) -> np.ndarray:
        y, x = np.mgrid[0:rows, 0:cols]
        frames = []
        for f in range(n):
            r = (x * 255 // max(cols - 1, 1))
            g = (y * 255 // max(rows - 1, 1))
            b = np.full_like(x, 40 + 60 * f)
            frames.append(np.stack([r, g, b], axis=-1))
        return np.stack(frames).astype(np.uint8)

    # Native, uncompressed.
    mono16 = ramp(1, 48, 64, 60, 4095, np.uint16)
    ds = dataset(mono16, "MONOCHROME2", 12, multi=False)
    ds.WindowCenter, ds.WindowWidth = "2000", "4000"
    write("native/mono16.dcm", ds, mono16)
    multi16 = ramp(5, 24, 32, 100, 65535, np.uint16)
    ds16 = dataset(multi16, "MONOCHROME2", 16)
    write("native/mono16-5-frames.dcm", ds16, multi16)
    odd8 = ramp(3, 7, 15, 16, 255, np.uint8)  # 105-byte frames: odd sizes
    write("native/mono8-odd-3-frames-implicit.dcm", dataset(odd8, "MONOCHROME2", 8), odd8,
          ImplicitVRLittleEndian)
    write("native/mono16-5-frames-big-endian.dcm", dataset(multi16, "MONOCHROME2", 16), multi16,
          ExplicitVRBigEndian)
    rgb = smooth_rgb(3, 30, 40)
    rgb_source = write("native/rgb-3-frames.dcm", dataset(rgb, "RGB", 8), rgb)
    # Palette colour: 8-bit indices, a 256-entry 16-bit LUT per channel.
    idx = ramp(1, 16, 32, 8, 255, np.uint8)
    ds = dataset(idx, "PALETTE COLOR", 8, multi=False)
    lut = np.arange(256, dtype=np.uint16) * 257
    for tag, data in ((0x00281101, None), (0x00281102, None), (0x00281103, None)):
        ds.add_new(tag, "US", [256, 0, 16])
    ds.add_new(0x00281201, "OW", lut.astype("<u2").tobytes())               # red rises
    ds.add_new(0x00281202, "OW", (65535 - lut).astype("<u2").tobytes())     # green falls
    ds.add_new(0x00281203, "OW", np.zeros(256, dtype="<u2").tobytes())     # no blue
    write("native/palette.dcm", ds, idx)

    # Compressed by DCMTK's own encoders, from the native files above.
    mono8 = ramp(3, 32, 48, 5, 255, np.uint8)
    mono8_source = encode(dataset(mono8, "MONOCHROME2", 8), ExplicitVRLittleEndian)
    mono12 = ramp(3, 32, 48, 80, 4095, np.uint16)
    mono12_source = encode(dataset(mono12, "MONOCHROME2", 12), ExplicitVRLittleEndian)
    multi16_source = encode(ds16, ExplicitVRLittleEndian)
    dcmtk("jpeg/baseline-mono8-3-frames.dcm", mono8_source, ["dcmcjpeg", "+eb", "+q", "95"], mono8, lossy=True, bot=True)
    dcmtk("jpeg/baseline-rgb-3-frames.dcm", rgb_source, ["dcmcjpeg", "+eb", "+q", "95"], rgb, lossy=True, bot=True,
          photometric="RGB")
    dcmtk("jpeg/extended-mono12-3-frames.dcm", mono12_source, ["dcmcjpeg", "+ee", "+q", "95"], mono12, lossy=True,
          bot=True)
    dcmtk("jpeg/lossless-mono16-5-frames.dcm", multi16_source, ["dcmcjpeg", "+el"], multi16, bot=True)
    dcmtk("jpeg/lossless-sv1-mono16-5-frames-no-bot.dcm", multi16_source, ["dcmcjpeg", "+e1", "-ot"], multi16)
    # Several fragments a frame, with a Basic Offset Table: 1 KiB fragments of noisy (~5 KiB) frames.
    noisy = (ramp(3, 40, 40, 100, 60000, np.uint16)
             + np.random.default_rng(5).integers(0, 4000, size=(3, 40, 40))).astype(np.uint16)
    noisy_source = encode(dataset(noisy, "MONOCHROME2", 16), ExplicitVRLittleEndian)
    dcmtk("jpeg/lossless-sv1-mono16-3-frames-fragmented.dcm", noisy_source, ["dcmcjpeg", "+e1", "+fs", "1"],
          noisy, bot=True)
    dcmtk("jpeg/lossless-sv1-mono16-3-frames-fragmented-no-bot.dcm", noisy_source,
          ["dcmcjpeg", "+e1", "+fs", "1", "-ot"], noisy)
    dcmtk("jpeg-ls/lossless-mono16-5-frames.dcm", multi16_source, ["dcmcjpls"], multi16, bot=True)
    dcmtk("jpeg-ls/near-lossless-mono16-5-frames.dcm", multi16_source, ["dcmcjpls", "+en"], multi16, lossy=True,
          bot=True)
    dcmtk("jpeg-ls/lossless-rgb-3-frames.dcm", rgb_source, ["dcmcjpls"], rgb, bot=True)
    rle = dcmtk("rle/mono16-5-frames-no-bot.dcm", multi16_source, ["dcmcrle", "-ot"], multi16)
    dcmtk("rle/rgb-3-frames.dcm", rgb_source, ["dcmcrle"], rgb, bot=True)

    # Extended Offset Table (7FE0,0001/0002), empty Basic Offset Table: the RLE frames re-encapsulated.
    rle_ds = pydicom.dcmread(io.BytesIO(rle))
    from pydicom.encaps import encapsulate_extended, generate_pixel_data_frame
    rle_frames = list(generate_pixel_data_frame(rle_ds.PixelData, 5))
    pixel_data, offsets, lengths = encapsulate_extended(rle_frames)
    rle_ds.PixelData = pixel_data
    rle_ds["PixelData"].VR = "OB"
    rle_ds.ExtendedOffsetTable = offsets
    rle_ds.ExtendedOffsetTableLengths = lengths
    rle_ds.SOPInstanceUID = uid()
    rle_ds.file_meta.MediaStorageSOPInstanceUID = rle_ds.SOPInstanceUID
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, rle_ds, write_like_original=False)
    put("rle/mono16-5-frames-eot.dcm", buf.getvalue(), rle_ds, multi16, RLE_LOSSLESS, encapsulated=True, eot=True)

    # JPEG 2000 (which DCMTK cannot decode here), encoded by Pillow when it has OpenJPEG.
    try:
        from PIL import Image
        codestream = io.BytesIO()
        Image.fromarray(mono8[0]).save(codestream, format="JPEG2000", irreversible=False, no_jp2=True)
        from pydicom.encaps import encapsulate
        ds = dataset(mono8[:1], "MONOCHROME2", 8, multi=False)
        ds.PixelData = encapsulate([codestream.getvalue()])
        ds["PixelData"].VR = "OB"
        data = encode(ds, "1.2.840.10008.1.2.4.90")
        put("jpeg2000/mono8.dcm", data, ds, mono8[:1], "1.2.840.10008.1.2.4.90", encapsulated=True, bot=False)
    except ImportError:
        print("gen-dicom: Pillow not installed: no JPEG 2000 file", file=sys.stderr)

    # Hostile: pixel headers that claim more than the file holds. ``reason``: what the refusal says.
    ds = dataset(mono16, "MONOCHROME2", 12, multi=False)
    ds.NumberOfFrames = 1000
    data = encode(ds, ExplicitVRLittleEndian)
    put("hostile/frames-past-the-data.dcm", data, ds, mono16, ExplicitVRLittleEndian, reason="fewer than 1000 frame(s)")
    huge = dataset(mono16, "MONOCHROME2", 16, multi=False)
    huge.Rows, huge.Columns, huge.SamplesPerPixel = 65535, 65535, 3
    huge.PlanarConfiguration, huge.PhotometricInterpretation = 0, "RGB"
    data = encode(huge, ExplicitVRLittleEndian)
    put("hostile/huge-dimensions-native.dcm", data, huge, mono16, ExplicitVRLittleEndian, reason="fewer than 1 frame(s)")
    with open(os.path.join(outdir, "rle/mono16-5-frames-no-bot.dcm"), "rb") as f:
        rle = bytearray(f.read())
    # A fragment whose length runs past the end of the file.
    pos = rle.rfind(struct.pack("<HH", 0xFFFE, 0xE000))
    struct.pack_into("<I", rle, pos + 4, 0x7FFFFFF0)
    put("hostile/fragment-past-the-end.dcm", bytes(rle), pydicom.dcmread(io.BytesIO(rle), stop_before_pixels=True),
        multi16, RLE_LOSSLESS, encapsulated=True, reason="truncated: encapsulated pixel data stops")
    shutil.rmtree(tmp)
    with open(os.path.join(outdir, "pixels.json"), "w", encoding="utf-8") as f:
        json.dump({"files": entries}, f, indent=1)
        f.write("\n")
    return entries


def build_bulk_elements(outdir: str) -> list[dict]:
    """One instance with binary values besides Pixel Data, in three transfer syntaxes (bulk.json).

    Values are built little endian; the big endian file holds them swapped by the VR's word size
    (OW 2, OF 4; OB unchanged), as that syntax requires: a server sends them back little endian.
    """
    uid = UIDGen(stable_arc(78, "bulk-elements"))
    study, series = uid(), uid()
    rng = np.random.default_rng(11)

    def blob(n: int) -> bytes:
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def floats(n: int, scale: float) -> bytes:
        return (np.arange(n, dtype="<f4") * np.float32(scale)).tobytes()

    # (path, VR, little endian value): the paths are /metadata's BulkDataURI scheme (tag / item / tag).
    elements = [
        ("00091010", "OB", blob(5000)),
        ("00091011", "OB", blob(16)),
        ("60003000", "OW", blob(128 * 128 // 8)),
        ("60023000", "OW", blob(16 * 16 // 8)),
        ("00880200/0/7FE00010", "OB", blob(64 * 64)),
        ("00660002/1/00660011/0/00660016", "OF", floats(1800, 0.5)),
        ("00660002/0/00660011/0/00660016", "OF", floats(6, 2.0)),
    ]
    value = {path: v for path, _, v in elements}

    def swapped(vr: str, v: bytes, big: bool) -> bytes:
        width = {"OW": 2, "OF": 4}.get(vr, 1)
        if not big or width == 1:
            return v
        return np.frombuffer(v, dtype=f"<u{width}").astype(f">u{width}").tobytes()

    def dataset(ts: str, sop: str) -> Dataset:
        big = ts == ExplicitVRBigEndian
        vr_of = {path: vr for path, vr, _ in elements}

        def v(path: str) -> bytes:
            return swapped(vr_of[path], value[path], big)

        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = SC_IMAGE_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "BULK-1", "Bulk^Elements", "OT"
        ds.StudyDate, ds.InstanceNumber = "20240102", 1
        block = ds.private_block(0x0009, "MEDVAULT BULK", create=True)
        block.add_new(0x10, "OB", v("00091010"))
        block.add_new(0x11, "OB", v("00091011"))
        for group, size, path in [(0x6000, 128, "60003000"), (0x6002, 16, "60023000")]:
            ds.add_new((group << 16) | 0x0010, "US", size)
            ds.add_new((group << 16) | 0x0011, "US", size)
            ds.add_new((group << 16) | 0x0040, "CS", "G")
            ds.add_new((group << 16) | 0x0050, "SS", [1, 1])
            ds.add_new((group << 16) | 0x0100, "US", 1)
            ds.add_new((group << 16) | 0x0102, "US", 0)
            ds.add_new((group << 16) | 0x3000, "OW", v(path))
        icon = Dataset()
        icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
        icon.Rows, icon.Columns = 64, 64
        icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
        icon.add_new(PIXEL_DATA_TAG, "OB", v("00880200/0/7FE00010"))
        ds.IconImageSequence = Sequence([icon])
        surfaces = []
        for i, n in [(0, 2), (1, 600)]:
            points = Dataset()
            points.NumberOfSurfacePoints = n
            points.add_new(0x00660016, "OF", v(f"00660002/{i}/00660011/0/00660016"))
            surface = Dataset()
            surface.SurfaceNumber = i + 1
            surface.SurfacePointsSequence = Sequence([points])
            surfaces.append(surface)
        ds.SurfaceSequence = Sequence(surfaces)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 8, 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.add_new(PIXEL_DATA_TAG, "OW", (np.arange(64, dtype="<u2") * 1000).tobytes())
        return ds

    files = []
    for ts, name in [(ExplicitVRLittleEndian, "explicit-le.dcm"), (ImplicitVRLittleEndian, "implicit-le.dcm"),
                     (ExplicitVRBigEndian, "explicit-be.dcm")]:
        sop = uid()
        write_bytes(os.path.join(outdir, name), encode(dataset(ts, sop), ts))
        files.append({"path": name, "transfer_syntax": ts, "study_uid": study, "series_uid": series, "sop_uid": sop})
    manifest = {
        "files": files,
        "elements": [{"path": p, "vr": vr, "value": v.hex(), "bulk": len(v) > 1024} for p, vr, v in elements],
    }
    with open(os.path.join(outdir, "bulk.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return files


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Generate synthetic DICOM test data for MedVault.")
    sub = ap.add_subparsers(dest="mode", required=True)

    p = sub.add_parser("corpus", help="small varied corpus of valid + malformed files")
    p.add_argument("outdir")

    p = sub.add_parser("ct-series", help="one CT series (explicit VR LE, 16-bit)")
    p.add_argument("outdir")
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=512, help="rows = columns")
    p.add_argument("--patient-id", default="MRN0424242")
    p.add_argument("--patient-name", default="Roe^Richard")

    p = sub.add_parser("small-files", help="many small instances for import benchmarks")
    p.add_argument("outdir")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--studies", type=int, default=40)

    p = sub.add_parser("hostile", help="files that attack the parser's limits, next to ordinary ones")
    p.add_argument("outdir")
    p.add_argument("--depth", type=int, default=5600)
    p.add_argument("--elements", type=int, default=80_000)

    p = sub.add_parser("pixels", help="images with known pixels in every layout and codec (pixels.json)")
    p.add_argument("outdir")

    p = sub.add_parser("bulk-elements", help="binary values besides Pixel Data, in three syntaxes (bulk.json)")
    p.add_argument("outdir")

    p = sub.add_parser("big-file", help="one multi-frame instance with ~N MiB of pixel data")
    p.add_argument("outfile")
    p.add_argument("--mib", type=float, default=1024)
    p.add_argument("--size", type=int, default=512, help="frame rows = columns")

    args = ap.parse_args(argv)

    if not pydicom.__version__.startswith("2.4."):
        print(f"gen-dicom: warning: written for pydicom 2.4.4, found {pydicom.__version__}",
              file=sys.stderr)

    t0 = time.monotonic()
    if args.mode == "big-file":
        if args.mib <= 0 or args.size < 1:
            ap.error("--mib and --size must be positive")
        entry = build_big_file(args.outfile, args.mib, args.size)
        print(json.dumps(entry, ensure_ascii=False))
        print(f"big-file: wrote {entry['size']} bytes to {args.outfile} "
              f"in {time.monotonic() - t0:.2f} s", file=sys.stderr)
        return 0

    os.makedirs(args.outdir, exist_ok=True)
    if args.mode == "pixels":
        entries = build_pixels(args.outdir)
        print(f"pixels: wrote {len(entries)} files + pixels.json to {args.outdir} "
              f"in {time.monotonic() - t0:.2f} s", file=sys.stderr)
        return 0
    if args.mode == "bulk-elements":
        files = build_bulk_elements(args.outdir)
        print(f"bulk-elements: wrote {len(files)} files + bulk.json to {args.outdir} "
              f"in {time.monotonic() - t0:.2f} s", file=sys.stderr)
        return 0
    if args.mode == "corpus":
        entries = build_corpus(args.outdir)
    elif args.mode == "hostile":
        entries = build_hostile(args.outdir, args.depth, args.elements)
    elif args.mode == "ct-series":
        if args.slices < 1 or args.size < 16:
            ap.error("--slices must be >= 1 and --size >= 16")
        entries = build_ct_series(args.outdir, args.slices, args.size, args.patient_id, args.patient_name)
    else:
        if args.count < 1:
            ap.error("--count must be >= 1")
        entries = build_small_files(args.outdir, args.count, args.patients, args.studies)
    write_manifest(args.outdir, entries)
    print(f"{args.mode}: wrote {len(entries)} files + manifest.json to {args.outdir} "
          f"in {time.monotonic() - t0:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
