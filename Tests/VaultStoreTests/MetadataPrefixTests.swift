// /metadata reads an instance's attributes from a decrypted prefix (256 KiB, then 16 MiB). A prefix
// that ends exactly between two elements before the Pixel Data parses as a smaller dataset: it must
// not be taken for the whole header.
import Foundation
import Testing
import TestSupport
import VaultDICOM
@testable import VaultStore

@Suite struct MetadataPrefixTests {
    /// A CT image whose first 256 KiB end exactly where Patient's Name (0010,0010) starts: a private
    /// OB value in group 0009 is sized for it.
    static let script = """
        import sys, pydicom, pydicom.uid
        from pydicom.dataset import Dataset, FileMetaDataset
        def build(n):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.999.77.3"
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.999.77.1", "1.2.826.0.1.3680043.10.999.77.2"
            ds.Modality = "CT"
            ds.add_new(0x00090010, "LO", "MEDVAULT TEST")
            ds.add_new(0x00091001, "OB", bytes(n))
            ds.PatientName, ds.PatientID = "Boundary^Bettina", "PREFIX-1"
            ds.Rows = ds.Columns = 8; ds.BitsAllocated = ds.BitsStored = 16; ds.HighBit = 15
            ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = "MONOCHROME2"; ds.PixelRepresentation = 0
            ds.PixelData = bytes(128)
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(sys.argv[1], write_like_original=False)
            return open(sys.argv[1], "rb").read().find(b"\\x10\\x00\\x10\\x00PN")
        at = build(1000)
        at = build(1000 + 262144 - at)
        assert at == 262144, at
        """

    @Test func aPrefixThatEndsBetweenTwoElementsIsNotTakenForTheWholeHeader() throws {
        let dir = TempDir("medvault-metadata-prefix")
        let file = dir.sub("in/boundary.dcm")
        try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
        let r = try run("/usr/bin/env", ["python3", "-c", Self.script, file])
        try #require(r.status == 0, "\(r.stderr)")
        let vault = try makeVault(dir).vault
        _ = try vault.importFiles([file])
        let item = try #require(try vault.instanceForRetrieval(
            study: "1.2.826.0.1.3680043.10.999.77.1", series: "1.2.826.0.1.3680043.10.999.77.2", instance: "1.2.826.0.1.3680043.10.999.77.3"))
        // The first 256 KiB alone parse, without the patient: the bug this guards against.
        let cut = Array(readBytes(file).prefix(256 << 10))
        #expect(!(try DICOMParser.json(bytes: cut)).contains("00100010"))
        let json = try vault.metadataJSON(item)
        #expect(json.contains("Boundary") && json.contains("PREFIX-1"))
        let metadata = try vault.metadataWithPixelLayout(item)
        #expect(metadata.json.contains("Boundary") && metadata.pixelLayout != nil)
    }
}
