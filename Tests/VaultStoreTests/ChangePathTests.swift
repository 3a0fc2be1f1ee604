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
