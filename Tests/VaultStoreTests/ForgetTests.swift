import VaultKeys
import VaultFormats
import VaultIO
import Foundation
import GRDB
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore
@testable import VaultCatalog

/// Crypto-shredding and retention on real vaults: the key is gone from every file, and copies of the
/// blobs no longer decrypt with anything the vault holds.
@Suite struct ForgetTests {
    let corpus = Corpus.shared

    func blobIDs(_ vault: Vault, patientID: String) throws -> [String] {
        let index = vault.keyring.blindIndex(.patientID, Normalize.identifier(patientID))
        return try vault.catalog.pool.read { db in
            try String.fetchAll(db, sql: """
                SELECT i.blobID FROM instance i JOIN series se ON se.id = i.seriesID JOIN study st ON st.id = se.studyID
                JOIN patient p ON p.id = st.patientID WHERE p.patientIDIndex = ?
                """, arguments: [Data(index)])
        }
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        Data(haystack).range(of: Data(needle)) != nil
    }

    @Test func forgetDestroysTheKeyRowsAndBlobsAndNothingDecryptsTheCopies() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let pid = "MRN0012345"
        let theirs = corpus.valid.filter { $0.patient_id == pid }
        let ids = try blobIDs(vault, patientID: pid)
        #expect(ids.count == theirs.count && !ids.isEmpty)
        // Copied aside beforehand, as a thief or a stale backup would have them.
        var aside: [(BlobID, String)] = []
        for id in ids {
            let blob = try #require(BlobID(hex: id))
            try copyFile(vault.layout.blob(blob), dir.sub("aside/\(id)"))
            aside.append((blob, dir.sub("aside/\(id)")))
        }
        let index = vault.keyring.blindIndex(.patientID, Normalize.identifier(pid))
        let wrappedKey = try #require(try vault.catalog.pool.read { db in
            try Data.fetchOne(db, sql: "SELECT wrappedKey FROM patient WHERE patientIDIndex = ?", arguments: [Data(index)])
        })
        let other = try #require(corpus.valid.first { $0.patient_id == "MRN0024680" })

        try vault.publishSnapshot()
        let snapshotsBefore = Set(FileIO.list(vault.layout.snapshots).filter { $0.hasSuffix(".mvsnap") })
        #expect(!snapshotsBefore.isEmpty)
        let preview = try vault.forgetPreview(patientID: pid)
        let done = try vault.forget(patientID: pid)
        #expect(done.patients == 1 && preview.patients == 1)
        #expect(done.instances == theirs.count && done.studies == Set(theirs.compactMap(\.study_uid)).count)
        #expect(done.bytes == Int64(theirs.compactMap(\.size).reduce(0, +)))
        #expect(done.pseudonyms.count == 1 && !done.pseudonyms[0].contains(pid))

        // The older snapshots (sealed copies of the catalog with the wrapped key) are gone; one new one.
        let snapshotsAfter = Set(FileIO.list(vault.layout.snapshots).filter { $0.hasSuffix(".mvsnap") })
        #expect(done.snapshotPublished && snapshotsAfter.count == 1 && snapshotsAfter.isDisjoint(with: snapshotsBefore))
        // Rows and blobs gone; the wrapped key is in no file of the vault (catalog, WAL, anything).
        #expect(try vault.listPatients(patientID: pid).isEmpty)
        for (blob, _) in aside { #expect(!FileManager.default.fileExists(atPath: vault.layout.blob(blob))) }
        for file in allFiles(under: vault.layout.root) {
            let found = contains(readBytes(file), Array(wrappedKey))
            #expect(!found, "the forgotten patient's wrapped key is still in \(file)")
        }
        // No key the vault still holds decrypts the copies: not any remaining patient key, not the master key.
        let remainingKeys = try vault.catalog.pool.read { db in
            try Row.fetchAll(db, sql: "SELECT ref, wrappedKey FROM patient").map { (Array($0["ref"] as Data), Array($0["wrappedKey"] as Data)) }
        }
        #expect(!remainingKeys.isEmpty)
        for (blob, path) in aside {
            for (ref, wrapped) in remainingKeys {
                let key = try KeyWrap.unwrap(wrapped, with: vault.keyring.master, associatedData: Vault.patientKeyAssociatedData(ref))
                #expect(throws: (any Error).self) {
                    _ = try BlobCodec.decrypt(path: path, id: blob, patientKey: key, contentKey: vault.keyring.contentMAC) { _ in }
                }
            }
            #expect(throws: (any Error).self) {
                _ = try BlobCodec.decrypt(path: path, id: blob, patientKey: vault.keyring.master, contentKey: vault.keyring.contentMAC) { _ in }
            }
        }
        // Everyone else is untouched, and the vault verifies.
        _ = try vault.export(.instance(other.sop_uid!), to: dir.sub("out"))
        #expect(try sha256(ofFile: allFiles(under: dir.sub("out"))[0]) == other.sha256)
        let report = try vault.verify()
        #expect(report.ok && report.blobsChecked == corpus.valid.count - theirs.count)
        #expect(throws: VaultError.self) { try vault.forget(patientID: pid) }
    }

    @Test func retentionRemovesOldStudiesAndErasesPatientsLeftWithNone() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let cutoff = "20230101"
        let old = corpus.valid.filter { ($0.study_date ?? "") < cutoff && !($0.study_date ?? "").isEmpty }
        let oldStudies = Set(old.compactMap(\.study_uid))
        #expect(!oldStudies.isEmpty)
        let kept = corpus.valid.filter { !oldStudies.contains($0.study_uid ?? "") }
        let patientsAfter = Set(kept.compactMap(\.patient_id))
        let patientsBefore = Set(corpus.valid.compactMap(\.patient_id))

        let plan = try vault.retentionPlan(cutoff: cutoff)
        #expect(Set(plan.items.map(\.studyUID)) == oldStudies)
        #expect(plan.instances == old.count)
        #expect(plan.patientsErased == patientsBefore.subtracting(patientsAfter).count)
        #expect(try vault.listStudies().count == Set(corpus.valid.compactMap(\.study_uid)).count)  // a plan changes nothing

        let (_, erased) = try vault.applyRetention(cutoff: cutoff)
        #expect(erased.instances == old.count && erased.studies == oldStudies.count)
        #expect(Set(try vault.listStudies().map(\.study.studyUID)) == Set(kept.compactMap(\.study_uid)))
        #expect(Set(try vault.listPatients().map(\.patient.patientID)) == patientsAfter)
        #expect(blobFiles(vault).count == kept.count)
        #expect(try vault.verify().ok)
        #expect(try vault.retentionPlan(cutoff: cutoff).items.isEmpty)
    }

    @Test func retentionPeriodsParse() throws {
        let now = ISO8601DateFormatter().date(from: "2026-11-23T10:00:00Z") ?? Date()
        #expect(try RetentionPeriod.cutoff(olderThan: "20y", now: now) == "20061123")
        #expect(try RetentionPeriod.cutoff(olderThan: "18mo", now: now) == "20250523")
        #expect(try RetentionPeriod.cutoff(olderThan: "30d", now: now) == "20261024")
        for bad in ["", "20", "y", "-3y", "3w", "twenty-y", "0d", "99999y"] {
            #expect(throws: DurationError.self, "\(bad)") { try RetentionPeriod.cutoff(olderThan: bad, now: now) }
        }
        // A bare "m" meant months here but minutes for tokens: refused, with both spellings suggested.
        let error = try #require(throws: DurationError.self) { try RetentionPeriod.cutoff(olderThan: "18m", now: now) }
        #expect(error.description.contains("18mo"))
    }
}
