import VaultKeys
import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

@Suite struct ImportExportTests {
    let corpus = Corpus.shared

    @Test func importsValidFilesRejectsMalformedOnesWithReasons() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let summary = try vault.importFiles([corpus.root])
        #expect(summary.count("imported") == corpus.valid.count)
        // manifest.json is not DICOM either.
        #expect(summary.count("rejected") == corpus.malformed.count + 1)
        #expect(summary.anyFailed)
        for f in corpus.malformed {
            let r = try #require(summary.results.first { $0.path == corpus.path(f) })
            #expect(r.outcome.label == "rejected", "\(f.path)")
            #expect((r.outcome.reason ?? "").isEmpty == false)
        }
        let empty = try #require(summary.results.first { $0.path.hasSuffix("empty.dcm") })
        #expect(empty.outcome == .rejected("empty file"))
        let missing = try #require(summary.results.first { $0.path.hasSuffix("missing-sop-instance-uid.dcm") })
        #expect(missing.outcome.reason?.contains("missing SOP Instance UID") == true)
        let garbage = try #require(summary.results.first { $0.path.hasSuffix("garbage.dcm") })
        #expect(garbage.outcome.reason?.hasPrefix("not a DICOM file") == true)
        #expect(blobFiles(vault).count == corpus.valid.count)
        #expect(FileIO.list(vault.layout.tmp).isEmpty)
        let report = try vault.verify()
        #expect(report.ok, "\(report.problems)")
        #expect(report.blobsChecked == corpus.valid.count)
    }

    @Test func exportGivesBackTheOriginalBytesForEveryStudy() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let studies = Set(corpus.valid.compactMap(\.study_uid))
        var exported = 0
        for uid in studies.sorted() {
            let s = try vault.export(.study(uid), to: dir.sub("out"))
            exported += s.files.count
        }
        #expect(exported == corpus.valid.count)
        for f in corpus.valid {
            let out = dir.sub("out/\(f.study_uid!)/\(f.series_uid!)/\(f.sop_uid!).dcm")
            #expect(try sha256(ofFile: out) == f.sha256, "\(f.path)")
        }
        // DCMTK's own dcmdump reads an exported file.
        let one = try #require(corpus.valid.first { $0.path.contains("latin1") })
        let dump = try run("/usr/bin/dcmdump", ["-q", dir.sub("out/\(one.study_uid!)/\(one.series_uid!)/\(one.sop_uid!).dcm")])
        #expect(dump.status == 0)
        // Series and single instance selections, and existing files are never overwritten.
        let s = try vault.export(.series(one.series_uid!), to: dir.sub("out2"))
        #expect(s.files.count == corpus.valid.filter { $0.series_uid == one.series_uid }.count)
        #expect(try vault.export(.instance(one.sop_uid!), to: dir.sub("out3")).files.count == 1)
        #expect(throws: VaultError.self) { try vault.export(.instance(one.sop_uid!), to: dir.sub("out3")) }
        #expect(throws: VaultError.notFound("no study with that UID in this vault")) {
            try vault.export(.study("1.2.3.4.5.6.7"), to: dir.sub("out4"))
        }
    }

    @Test func reimportIsANoOpAndADifferentFileWithTheSameUIDIsAConflict() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let blobsBefore = blobFiles(vault)
        let again = try vault.importFiles([dir.sub("input")])
        #expect(again.count("already-present") == corpus.valid.count)
        #expect(!again.anyFailed)
        #expect(blobFiles(vault) == blobsBefore)

        // Same SOP Instance UID, one pixel byte different.
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("explicit-vr-le.dcm") })
        var bytes = readBytes(corpus.path(f))
        bytes[bytes.count - 1] ^= 0xFF
        try writeBytes(dir.sub("changed.dcm"), bytes)
        let r = try vault.importFiles([dir.sub("changed.dcm")])
        #expect(r.results.first?.outcome.label == "conflict")
        #expect(r.anyFailed)
        #expect(blobFiles(vault) == blobsBefore)
        // The first file is what the vault keeps.
        try vault.export(.instance(f.sop_uid!), to: dir.sub("out"))
        #expect(try sha256(ofFile: dir.sub("out/\(f.study_uid!)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)

        // Both in one run: the first is imported, the second is the conflict.
        let dir2 = TempDir()
        defer { dir2.remove() }
        let (v2, _) = try makeVault(dir2)
        try copyFile(corpus.path(f), dir2.sub("in/a.dcm"))
        try writeBytes(dir2.sub("in/b.dcm"), bytes)
        let both = try v2.importFiles([dir2.sub("in")])
        #expect(both.results.map(\.outcome.label) == ["imported", "conflict"])
    }

    @Test func sameAndDifferentCharacterSetsFindTheSamePatient() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let muellers = try vault.listPatients(patientID: "MRN0002001")
        #expect(muellers.count == 1)
        #expect(muellers.first?.patient.name == "Müller^Jürgen")
        #expect(muellers.first?.studies == 2)
        #expect(Normalize.personName("MÜLLER^Jürgen^^ ") == Normalize.personName("Mu\u{0308}ller^jürgen"))
        let studies = try vault.listStudies(patientID: "MRN0012345")
        #expect(studies.count == Set(corpus.valid.filter { $0.patient_id == "MRN0012345" }.compactMap(\.study_uid)).count)
        #expect(try vault.listStudies(patientID: "nobody").isEmpty)
        let series = try vault.listSeries()
        #expect(series.reduce(0) { $0 + $1.instances } == corpus.valid.count)
    }

    @Test func removeSourceDeletesOriginalsOnlyAfterTheyAreSafe() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let f = try #require(corpus.valid.first { $0.path.hasSuffix("implicit-vr-le.dcm") })
        try copyFile(corpus.path(f), dir.sub("in/a.dcm"))
        try copyFile(corpus.path(corpus.malformed[0]), dir.sub("in/bad.dcm"))
        let r = try vault.importFiles([dir.sub("in")], options: ImportOptions(removeSource: true))
        #expect(r.results.first { $0.path.hasSuffix("a.dcm") }?.sourceRemoved == true)
        #expect(!FileManager.default.fileExists(atPath: dir.sub("in/a.dcm")))
        // A rejected file is never removed.
        #expect(FileManager.default.fileExists(atPath: dir.sub("in/bad.dcm")))
        try vault.export(.instance(f.sop_uid!), to: dir.sub("out"))
        #expect(try sha256(ofFile: dir.sub("out/\(f.study_uid!)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)

        // A re-run (e.g. after a crash between commit and removal) removes originals already in the vault.
        let g = try #require(corpus.valid.first { $0.path.hasSuffix("explicit-vr-le.dcm") })
        try copyFile(corpus.path(g), dir.sub("again/g.dcm"))
        #expect(try vault.importFiles([dir.sub("again")]).count("imported") == 1)
        #expect(FileManager.default.fileExists(atPath: dir.sub("again/g.dcm")))
        let rerun = try vault.importFiles([dir.sub("again")], options: ImportOptions(removeSource: true))
        #expect(rerun.results.map(\.outcome) == [.alreadyPresent])
        #expect(rerun.results.first?.sourceRemoved == true)
        #expect(!FileManager.default.fileExists(atPath: dir.sub("again/g.dcm")))
        // …but not when the vault's copy is damaged.
        try copyFile(corpus.path(g), dir.sub("again/g.dcm"))
        let blob = try #require(blobFiles(vault).first { ($0 as NSString).lastPathComponent == (try? vault.resolve(.instance(g.sop_uid!)).first?.row.blobID) })
        var b = readBytes(blob); b[200] ^= 1; try writeBytes(blob, b)
        let damaged = try vault.importFiles([dir.sub("again")], options: ImportOptions(removeSource: true))
        #expect(damaged.results.first?.sourceRemoved == false)
        #expect(FileManager.default.fileExists(atPath: dir.sub("again/g.dcm")))
    }

    @Test func largeFilesStreamThroughManyChunksByteIdentical() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let big = dir.sub("big.dcm")
        let gen = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", big, "--mib", "9"])
        #expect(gen.status == 0, "\(gen.stderr)")
        let r = try vault.importFiles([big])
        #expect(r.count("imported") == 1)
        let sop = try #require(gen.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }.first?["sop_uid"] as? String)
        let s = try vault.export(.instance(sop), to: dir.sub("out"))
        #expect(try sha256(ofFile: dir.sub("out/" + s.files[0])) == sha256(ofFile: big))
        let blob = try #require(blobFiles(vault).first)
        let size = try #require(FileIO.fileSize(blob))
        #expect(size == BlobFormat.blobSize(forPlainSize: try #require(FileIO.fileSize(big))))
    }
}
