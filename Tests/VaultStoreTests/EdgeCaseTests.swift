import VaultKeys
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

@Suite struct EdgeCaseTests {
    let corpus = Corpus.shared

    /// Rewrites a DICOM file with pydicom, setting the given attributes (keyword → value).
    func rewrite(_ from: String, _ to: String, _ changes: [String: String]) throws {
        try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let sets = changes.map { "ds.\($0.key) = \"\($0.value)\"" }.joined(separator: "; ")
        let r = try run("/usr/bin/env", ["python3", "-c", "import pydicom; ds = pydicom.dcmread('\(from)'); \(sets); ds.save_as('\(to)')"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func aStudyStaysWithItsFirstPatientEvenIfLaterFilesDisagree() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("explicit-vr-le.dcm") })
        try copyFile(corpus.path(f), dir.sub("in/1.dcm"))
        try rewrite(corpus.path(f), dir.sub("in/2.dcm"), ["PatientID": "OTHER-ID", "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.77.1"])
        try rewrite(corpus.path(f), dir.sub("later/3.dcm"), ["PatientID": "THIRD-ID", "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.77.2"])
        #expect(try vault.importFiles([dir.sub("in")]).count("imported") == 2)
        #expect(try vault.importFiles([dir.sub("later")]).count("imported") == 1)  // across runs too
        #expect(try vault.listPatients().count == 1)
        #expect(try vault.export(.study(f.study_uid!), to: dir.sub("out")).files.count == 3)
        #expect(try vault.verify().ok)
    }

    @Test func aSeriesStaysWithItsFirstPatientEvenUnderAnotherStudyUID() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("explicit-vr-le.dcm") })
        try copyFile(corpus.path(f), dir.sub("a/1.dcm"))
        #expect(try vault.importFiles([dir.sub("a")]).count("imported") == 1)
        // Same series UID, but another patient and another study UID.
        try rewrite(corpus.path(f), dir.sub("b/2.dcm"), [
            "PatientID": "ELSEWHERE-1", "StudyInstanceUID": "1.2.826.0.1.3680043.10.999.81.1",
            "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.81.2",
        ])
        #expect(try vault.importFiles([dir.sub("b")]).count("imported") == 1)
        #expect(try vault.verify().ok)
        #expect(try vault.export(.series(f.series_uid!), to: dir.sub("out")).files.count == 2)
    }

    @Test func unidentifiedStudiesAreNotMergedIntoOnePatient() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("explicit-vr-le.dcm") })
        for i in 1...2 {
            try rewrite(corpus.path(f), dir.sub("in/\(i).dcm"), [
                "PatientID": "", "PatientName": "", "PatientBirthDate": "",
                "StudyInstanceUID": "1.2.826.0.1.3680043.10.999.78.\(i)", "SOPInstanceUID": "1.2.826.0.1.3680043.10.999.79.\(i)",
                "SeriesInstanceUID": "1.2.826.0.1.3680043.10.999.80.\(i)",
            ])
        }
        #expect(try vault.importFiles([dir.sub("in")]).count("imported") == 2)
        #expect(try vault.listPatients().count == 2)
    }

    @Test func aCDWithADICOMDIRImportsItsImagesAndSkipsTheIndexWithoutFailing() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let files = corpus.valid.filter { $0.transfer_syntax == "1.2.840.10008.1.2.1" }.prefix(2)
        for (i, f) in files.enumerated() { try copyFile(corpus.path(f), dir.sub("cd/IM\(i + 1)")) }
        let mk = try run("/usr/bin/dcmmkdir", ["+r", "IM1", "IM2"], currentDirectory: dir.sub("cd"))
        #expect(mk.status == 0, "\(mk.stderr)")
        let r = try vault.importFiles([dir.sub("cd")])
        #expect(r.count("imported") == 2)
        #expect(r.count("skipped") == 1)
        #expect(!r.anyFailed)
    }

    @Test func symlinkLoopsAreNotFollowed() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let f = try #require(corpus.valid.first)
        try copyFile(corpus.path(f), dir.sub("in/a/x.dcm"))
        try FileManager.default.createSymbolicLink(atPath: dir.sub("in/a/loop"), withDestinationPath: dir.sub("in"))
        let r = try vault.importFiles([dir.sub("in")])
        #expect(r.results.count == 1)
        #expect(r.count("imported") == 1)
    }

    @Test func aVaultWhoseCatalogVanishedDoesNotOpenAsAnEmptyVault() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: vault.layout.catalog + s) }
        #expect(throws: VaultError.self) { try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase)) }
        #expect(!FileManager.default.fileExists(atPath: vault.layout.catalog))
    }
}
