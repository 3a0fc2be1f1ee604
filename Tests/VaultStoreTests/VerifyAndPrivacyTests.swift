import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore
@testable import VaultCatalog

@Suite struct VerifyTests {
    @Test func namesEveryKindOfDamageByBlob() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        #expect(try vault.verify().ok)
        let blobs = blobFiles(vault)
        #expect(blobs.count >= 8)
        func id(_ p: String) -> String { (p as NSString).lastPathComponent }

        // A flipped bit in the middle of a blob.
        var b0 = readBytes(blobs[0]); b0[b0.count / 2] ^= 0x04; try writeBytes(blobs[0], b0)
        // Truncated.
        let b1 = readBytes(blobs[1]); try writeBytes(blobs[1], Array(b1.prefix(b1.count - 5)))
        // Swapped: blob 3's bytes under blob 2's name (blob 2's content moved aside).
        try writeBytes(blobs[2], readBytes(blobs[3]))
        // Missing.
        try FileManager.default.removeItem(atPath: blobs[4])
        // Extra bytes after the final chunk.
        try writeBytes(blobs[5], readBytes(blobs[5]) + [0, 1, 2])
        // An orphan: a well-named blob the catalog does not know.
        let orphan = BlobID.random()
        try copyFile(blobs[6], vault.layout.blob(orphan))
        // A flipped bit in the wrapped file key of blob 7.
        var b7 = readBytes(blobs[7]); b7[40] ^= 0x80; try writeBytes(blobs[7], b7)

        let report = try vault.verify()
        #expect(!report.ok)
        let byBlob = Dictionary(report.problems.map { ($0.subject, $0.kind) }, uniquingKeysWith: { a, _ in a })
        #expect(byBlob[id(blobs[0])] == .tampered)
        #expect(byBlob[id(blobs[1])] == .truncated)
        #expect(byBlob[id(blobs[2])] == .swapped)
        #expect(byBlob[id(blobs[4])] == .missing)
        #expect(byBlob[id(blobs[5])] == .trailingData)
        #expect(byBlob[orphan.hexString] == .orphan)
        #expect(byBlob[id(blobs[7])] == .tampered)
        #expect(report.problems.count == 7, "\(report.problems)")
        // Export refuses the damaged blob rather than writing altered bytes.
        let dir2 = TempDir()
        defer { dir2.remove() }
        var failures = 0
        for f in Corpus.shared.valid {
            do { try vault.export(.instance(f.sop_uid!), to: dir2.path) } catch { failures += 1 }
        }
        #expect(failures == 6)
        #expect(allFiles(under: dir2.path).filter { $0.hasSuffix(".partial") }.isEmpty)
    }

    @Test func aTamperedCatalogRecordIsReported() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        // Move one study's sealed record onto another row: authentic bytes, wrong place.
        try vault.catalog.pool.write { db in
            try db.execute(sql: "UPDATE study SET sealed = (SELECT sealed FROM study ORDER BY id LIMIT 1) WHERE id = (SELECT max(id) FROM study)")
        }
        let report = try vault.verify()
        #expect(report.problems.map(\.kind) == [.catalog])
        #expect(report.problems.first?.subject.hasPrefix("study #") == true)
        // The same for an instance record.
        try vault.catalog.pool.write { db in
            try db.execute(sql: "UPDATE instance SET sealed = (SELECT sealed FROM instance ORDER BY id LIMIT 1) WHERE id = (SELECT max(id) FROM instance)")
        }
        #expect(try vault.verify().problems.filter { $0.subject.hasPrefix("instance #") }.count == 1)
    }

    @Test func anInterruptedImportIsNotAnErrorAndIsCleanedByTheNextImport() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        // The state a crash leaves between "rename into blobs/" and "commit the rows": a blob on disk
        // marked pending, plus a staging file in tmp/.
        let leftover = BlobID.random()
        try copyFile(blobFiles(vault)[0], vault.layout.blob(leftover))
        try vault.catalog.pool.write { db in try db.execute(sql: "INSERT INTO pendingBlob(blobID) VALUES (?)", arguments: [leftover.hexString]) }
        try writeBytes(vault.layout.tmp + "/x.partial", [1, 2, 3])
        let report = try vault.verify()
        #expect(report.ok)
        #expect(report.interruptedLeftovers == 1)
        _ = try vault.importFiles([])
        #expect(!FileManager.default.fileExists(atPath: vault.layout.blob(leftover)))
        #expect(FileIO.list(vault.layout.tmp).isEmpty)
        let after = try vault.verify()
        #expect(after.ok && after.interruptedLeftovers == 0)
    }
}

@Suite struct PrivacyTests {
    @Test func noPatientIdentifierIsReadableAnywhereInTheVault() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        // Exercise every reading path too, so WAL, temp files and any log would hold what they would.
        _ = try vault.listStudies()
        _ = try vault.listPatients(patientID: "MRN0012345")
        #expect(try vault.verify().ok)
        try vault.export(.study(Corpus.shared.valid[0].study_uid!), to: dir.sub("exported"))

        let files = allFiles(under: vault.layout.root)
        #expect(files.contains { $0.hasSuffix("catalog.sqlite") })
        #expect(files.filter { $0.contains("/blobs/") }.count == Corpus.shared.valid.count)
        let ids = Corpus.identifiers()
        #expect(ids.count > 100)
        for path in files {
            for (label, bytes) in ids {
                #expect(!fileContains(path, bytes), "\(label) readable in \(path)")
            }
            // File names reveal nothing either: blob names are random hex, never a UID.
            let name = (path as NSString).lastPathComponent
            #expect(!ids.contains { name.contains($0.0) }, "\(name)")
        }
        // The same check with grep, as an auditor would run it.
        for (label, _) in ids.prefix(40) where !label.hasSuffix("(Latin-1)") {
            let g = try run("/usr/bin/grep", ["-r", "-l", "-F", label, vault.layout.root])
            #expect(g.status == 1, "grep found \(label): \(g.stdout)")
        }
    }
}
