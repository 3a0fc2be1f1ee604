// The engine's single mutation path (Sources/VaultStore/Change.swift): a caller that uses the library
// alone — as the API server or a DICOM receiver does — gets the audit record and the signed snapshot
// without asking for them, and a failure before or after the work is recorded as such.
import VaultKeys
import VaultCatalog
import VaultFormats
import VaultIO
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

@Suite struct ChangePathTests {
    let radiologist = AuditActor(name: "dr.meier", role: "radiologist", peerUID: 1234, peerPID: 5678)

    /// The newest signed manifest in the vault, checked with the vault's public key alone.
    func newestManifest(_ vault: Vault) throws -> BackupManifest {
        let names = FileIO.list(vault.layout.snapshots).compactMap { SnapshotNames.parse($0) }.filter { $0.kind == .manifest }
        let newest = try #require(names.map(\.sequence).max())
        let key = try #require(try VaultPublicInfo.load(vault: vault.layout.root).manifestPublicKey)
        return try SignedManifest.parse(readBytes(vault.layout.root + "/" + SnapshotNames.manifest(newest)), file: "manifest", publicKey: key).manifest
    }

    @Test func aLibraryImportIsAuditedAndPublished() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let before = try newestManifest(vault)
        let corpus = Corpus.shared
        let files = corpus.valid.filter { $0.path.hasPrefix("patients/p01/") }
        for f in files { try copyFile(corpus.path(f), dir.sub("input/" + f.path)) }

        let summary = try vault.importFiles([dir.sub("input")], by: radiologist)
        #expect(summary.count("imported") == files.count)

        let (records, report) = vault.readAudit()
        #expect(report.ok)
        let last = try #require(records.last?.event)
        #expect(last.action == .importFiles && last.outcome == .ok)
        #expect(last.actor == "dr.meier" && last.role == "radiologist" && last.peerUID == 1234 && last.peerPID == 5678)
        #expect(last.instances == files.count)
        #expect(Set(last.patientIDs) == Set(files.compactMap(\.patient_id)))

        // A new signed snapshot lists every new blob and carries the audit record just written.
        let after = try newestManifest(vault)
        #expect(after.sequence > before.sequence)
        #expect(after.blobs.count == before.blobs.count + files.count)
        #expect(after.auditLog != nil)
        let head = try #require(after.auditHeadBytes)
        #expect(head == readBytes(vault.layout.audit + "/head"))
    }

    /// An import of many catalog transactions raises catalog.generation once (each raise is two fsyncs),
    /// and still leaves a snapshot that is not stale; a vault without the copy mark (an earlier
    /// release's) raises it on every transaction, as before.
    @Test func manyTransactionsRaiseTheCatalogGenerationOnceAndTheSnapshotStaysExact() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let root = vault.layout.root
        let corpus = Corpus.shared
        let files = corpus.valid.filter { $0.path.hasPrefix("patients/") }
        #expect(files.count >= 6)
        for (i, f) in files.enumerated() { try copyFile(corpus.path(f), dir.sub((i % 2 == 0 ? "a/" : "b/") + f.path)) }
        let before = CatalogGeneration.read(vault: root)
        #expect(CatalogGeneration.readCopied(vault: root) == before)  // the vault's first snapshot recorded it

        // Batches of 2 files: two transactions per batch (pending blobs, then filing).
        let small = ImportOptions(batchFiles: 2)
        let a = try vault.importFiles([dir.sub("a")], options: small, by: radiologist)
        #expect(a.count("imported") == (files.count + 1) / 2)
        let afterA = CatalogGeneration.read(vault: root)
        #expect(afterA == before + 1)
        #expect(try newestManifest(vault).catalogGeneration == afterA)
        #expect(CatalogGeneration.readCopied(vault: root) == afterA)
        #expect(!vault.snapshotIsStale())

        // Without the mark, every changing transaction raises it; the publish then records the mark.
        try FileManager.default.removeItem(atPath: root + "/" + CatalogGeneration.copiedFileName)
        let b = try vault.importFiles([dir.sub("b")], options: small, by: radiologist)
        #expect(b.count("imported") == files.count / 2)
        let afterB = CatalogGeneration.read(vault: root)
        #expect(afterB >= afterA + 4)
        #expect(try newestManifest(vault).catalogGeneration == afterB)
        #expect(CatalogGeneration.readCopied(vault: root) == afterB)
        #expect(!vault.snapshotIsStale())

        // A change after the publish raises it again: the newest snapshot is then behind the counter.
        try vault.addUser("dr.weber", role: .viewer, by: radiologist)
        #expect(CatalogGeneration.read(vault: root) == afterB + 1)
        #expect(!vault.snapshotIsStale())
    }

    @Test func accountChangesThroughTheLibraryAreAuditedAndPublished() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let before = try newestManifest(vault).sequence
        try vault.addUser("dr.weber", role: .viewer, by: radiologist)
        let (_, info) = try vault.issueToken(for: "dr.weber", lifetime: 3600, by: radiologist)
        let actions = vault.readAudit().records.suffix(2).map { ($0.event.action, $0.event.outcome, $0.event.detail) }
        #expect(actions.map(\.0) == [.userAdd, .tokenIssue] && actions.allSatisfy { $0.1 == .ok })
        #expect(actions[1].2 == "token \(info.id) for dr.weber, 1h")
        #expect(try newestManifest(vault).sequence == before + 2)
    }

    @Test func aFailedChangeIsRecordedAsFailedAndChangesNothing() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let before = try newestManifest(vault).sequence
        #expect(throws: VaultError.self) { try vault.forget(patientID: "NO-SUCH-PATIENT", by: radiologist) }
        #expect(throws: AccountError.exists("admin")) {
            try vault.addUser("admin", role: .admin, by: radiologist)
            try vault.addUser("admin", role: .admin, by: radiologist)
        }
        let records = vault.readAudit().records.map(\.event)
        let forget = try #require(records.first { $0.action == .forget })
        #expect(forget.outcome == .failed && forget.detail.contains("no patient with that Patient ID"))
        #expect(forget.actor == "dr.meier")
        let adds = records.filter { $0.action == .userAdd }.map(\.outcome)
        #expect(adds == [.ok, .failed])
        // Only the successful account change published a snapshot.
        #expect(try newestManifest(vault).sequence == before + 1)
    }

    @Test func aSnapshotThatFailsAfterTheWorkIsReportedAndRecorded() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        let corpus = Corpus.shared
        let file = try #require(corpus.valid.first { $0.path.hasPrefix("patients/p02/") })
        try copyFile(corpus.path(file), dir.sub("input/a.dcm"))
        // snapshots/ replaced by a plain file: the publisher cannot take its lock or write there (root
        // ignores permission bits, so a mode change would not do).
        let snapshots = vault.layout.snapshots
        try FileManager.default.moveItem(atPath: snapshots, toPath: dir.sub("snapshots-away"))
        try writeBytes(snapshots, Array("not a directory".utf8))

        let error = try #require(throws: SnapshotNotPublished.self) { try vault.importFiles([dir.sub("input")], by: radiologist) }
        #expect(error.action == .importFiles)
        // The work is done and its result still reaches the caller.
        let summary = try #require(error.value as? ImportSummary)
        #expect(summary.count("imported") == 1)
        #expect(try vault.listInstances().count == 1)
        // The audit log says the import happened and the snapshot after it did not.
        let (records, report) = vault.readAudit()
        #expect(report.ok)
        let tail = records.suffix(2).map(\.event)
        #expect(tail.map(\.action) == [.importFiles, .snapshotPublish])
        #expect(tail[0].outcome == .ok && tail[1].outcome == .failed)
        #expect(tail[1].detail.hasPrefix("after import:"))

        // Once snapshots/ is back, the next change publishes, and its manifest lists the import's blob.
        try FileManager.default.removeItem(atPath: snapshots)
        try FileManager.default.moveItem(atPath: dir.sub("snapshots-away"), toPath: snapshots)
        try vault.addUser("dr.next", role: .viewer)
        #expect(try newestManifest(vault).blobs.count == 1)
    }
}
