import Foundation
import Testing
import TestSupport
@testable import VaultDICOM

/// The PS3.10 file meta generated for bare datasets (served by WADO-RS in front of the stored bytes).
@Suite struct FileMetaTests {
    let corpus = Corpus.shared

    var noMeta: String { get throws { corpus.path(try #require(corpus.valid.first { $0.path.hasSuffix("no-file-meta.dcm") })) } }

    @Test func buildsTheExactBytes() {
        let meta = DICOMFileMeta.build(sopClassUID: "1.2", sopInstanceUID: "1.2.3", transferSyntaxUID: "1.2.840.10008.1.2")
        let ascii = { (s: String) in Array(s.utf8) }
        let impl = "2.25.162272183342313715344675476885190061632"
        #expect(impl.utf8.count == 44 && DICOMFileMeta.implementationClassUID == impl)
        let group: [UInt8] =
            [0x02, 0x00, 0x01, 0x00] + ascii("OB") + [0, 0, 2, 0, 0, 0, 0x00, 0x01]
            + [0x02, 0x00, 0x02, 0x00] + ascii("UI") + [4, 0] + ascii("1.2") + [0]
            + [0x02, 0x00, 0x03, 0x00] + ascii("UI") + [6, 0] + ascii("1.2.3") + [0]
            + [0x02, 0x00, 0x10, 0x00] + ascii("UI") + [18, 0] + ascii("1.2.840.10008.1.2") + [0]
            + [0x02, 0x00, 0x12, 0x00] + ascii("UI") + [44, 0] + ascii(impl)
            + [0x02, 0x00, 0x13, 0x00] + ascii("SH") + [8, 0] + ascii("MEDVAULT")
        #expect(group.count == 134)
        let expected = [UInt8](repeating: 0, count: 128) + ascii("DICM")
            + [0x02, 0x00, 0x00, 0x00] + ascii("UL") + [4, 0, 134, 0, 0, 0] + group
        #expect(meta == expected)
        #expect(DICOMFileMeta.hasPart10Header(meta))
        #expect(!DICOMFileMeta.hasPart10Header(Array(meta.prefix(131))))
    }

    /// The bare dataset with the meta in front parses as Part 10 with the same values and syntax, whether
    /// the meta was built from the whole file or from a prefix cut inside Pixel Data.
    @Test func aBareDatasetBecomesAValidPart10File() throws {
        let original = readBytes(try noMeta)
        let bare = try DICOMParser.parse(bytes: original)
        #expect(!bare.hasFileMeta && bare.transferSyntaxUID == "1.2.840.10008.1.2")
        let meta = try #require(try DICOMFileMeta.forStoredBytes(prefix: original, complete: true))
        let layout = try DICOMPixelLayout.read(original)
        let cut = Array(original.prefix(Int(layout.valueOffset) + 7))
        #expect(try DICOMFileMeta.forStoredBytes(prefix: cut, complete: false) == meta)
        let dir = TempDir("medvault-filemeta")
        defer { dir.remove() }
        try writeBytes(dir.sub("served.dcm"), meta + original)
        let served = try DICOMParser.parse(path: dir.sub("served.dcm"))
        #expect(served.hasFileMeta)
        #expect(served.transferSyntaxUID == bare.transferSyntaxUID)
        #expect(served.values == bare.values)
        // pydicom reads it without force, and its dataset equals the original's read with force.
        let check = """
            import sys, pydicom
            a = pydicom.dcmread(sys.argv[1])
            b = pydicom.dcmread(sys.argv[2], force=True)
            assert a.preamble == bytes(128)
            fm = a.file_meta
            assert fm.MediaStorageSOPClassUID == b.SOPClassUID and fm.MediaStorageSOPInstanceUID == b.SOPInstanceUID
            assert fm.TransferSyntaxUID == "1.2.840.10008.1.2", fm.TransferSyntaxUID
            assert fm.ImplementationVersionName == "MEDVAULT"
            assert a == b
            """
        let r = try run("/usr/bin/env", ["python3", "-c", check, dir.sub("served.dcm"), try noMeta])
        #expect(r.status == 0, "\(r.stderr)")
        // dcmdump (DCMTK) reads it as a file with meta information.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/dcmdump") {
            let d = try run("/usr/bin/dcmdump", ["-M", "+E", dir.sub("served.dcm")])
            #expect(d.status == 0 && d.stdout.contains("# Dicom-Meta-Information-Header"), "\(d.stderr)")
            #expect(d.stdout.contains("(0002,0013) SH [MEDVAULT]"))
        }
    }

    @Test func aPart10FileGetsNoMeta() throws {
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("implicit-vr-le.dcm") })
        #expect(try DICOMFileMeta.forStoredBytes(prefix: readBytes(corpus.path(f)), complete: true) == nil)
    }
}
