import VaultKeys
import VaultFormats
import VaultIO
import Foundation
import GRDB
import Testing
import TestSupport
@testable import VaultBackup
import VaultRestore
@testable import VaultCrypto
@testable import VaultStore
@testable import VaultCatalog

// MARK: Helpers

func publicKey(_ vault: Vault) throws -> Ed25519PublicKey {
    try #require(try VaultPublicInfo.load(vault: vault.layout.root).manifestPublicKey)
}

func newestManifest(_ vault: Vault) throws -> SignedManifest {
    try VaultSource(root: vault.layout.root).newestManifest(key: try publicKey(vault))
}

// MARK: Snapshots and manifests (the vault side)

@Suite struct SnapshotTests {
    @Test func aManifestIsSignedAndListsEveryBlobWithItsCiphertextHash() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try makeVault(dir).vault
        try importFiles(Corpus.shared.valid, into: vault, dir: dir, batch: "all")
        let info = try vault.publishSnapshot()
        let signed = try newestManifest(vault)
        let m = signed.manifest
        #expect(m.sequence == info.sequence)
        #expect(m.vaultID == vault.config.vaultID)
        #expect(m.blobs.count == Corpus.shared.valid.count)
        // The hashes recorded at import are those of the files on disk.
        for b in m.blobs {
            let (size, hash) = try hashFile(vault.layout.root + "/" + b.path)
            #expect(size == b.size && hex(hash) == b.blake2b256, "\(b.id)")
        }
        let snap = try hashFile(vault.layout.root + "/" + m.snapshot.name)
        #expect(hex(snap.hash) == m.snapshot.blake2b256 && snap.size == m.snapshot.size)
        // Expected failures: a flipped byte anywhere in the body, another vault's key.
        let file = vault.layout.root + "/" + SnapshotNames.manifest(m.sequence)
        var bytes = readBytes(file)
        bytes[bytes.count - 10] ^= 0x01
        #expect(throws: SnapshotError.badSignature(file: "m")) { try SignedManifest.parse(bytes, file: "m", publicKey: try publicKey(vault)) }
        let other = try makeVault(dir, "other").vault
        #expect(throws: SnapshotError.badSignature(file: "m")) { try SignedManifest.parse(signed.fileBytes, file: "m", publicKey: try publicKey(other)) }
        // The vault keeps its newest three snapshot sets.
        for _ in 0..<4 { try vault.publishSnapshot() }
        #expect(vault.snapshotSequences() == [info.sequence + 2, info.sequence + 3, info.sequence + 4])
        #expect(FileIO.list(vault.layout.snapshots).filter { $0.hasPrefix(".staging") || $0.hasSuffix(".tmp") }.isEmpty)
    }

    @Test func aVaultMadeBeforeSignedManifestsGetsItsKeyAndHashesAtItsFirstSnapshot() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let created = try makeVault(dir).vault
        try importFiles(Array(Corpus.shared.valid.prefix(6)), into: created, dir: dir, batch: "a")
        // The state an older medvault leaves: no key fields in vault.json, no cached hashes.
        var json = try #require(try JSONSerialization.jsonObject(with: Data(readBytes(created.layout.config))) as? [String: Any])
        json.removeValue(forKey: "manifestPublicKey")
        json.removeValue(forKey: "wrappedManifestSigningSeed")
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: created.layout.config))
        try created.catalog.pool.write { db in try db.execute(sql: "DELETE FROM blobHash") }
        let vault = try Vault.open(at: created.layout.root, passphrase: try secure(testPassphrase))
        #expect(vault.config.manifestPublicKey == nil)
        #expect(throws: SnapshotError.noPublicKey(vault.layout.config)) {
            try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: dir.sub("b"), locking: .exclusive))
        }

        try vault.publishSnapshot()
        let reopened = try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        #expect(reopened.config.manifestPublicKey != nil)
        #expect(try reopened.checkedManifestPublicKey().base64 == reopened.config.manifestPublicKey)
        let m = try newestManifest(reopened).manifest
        #expect(m.blobs.count == 6)
        for b in m.blobs { #expect(hex(try hashFile(vault.layout.root + "/" + b.path).hash) == b.blake2b256) }
        #expect(try vault.catalog.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM blobHash") } == 6)
        // A damaged blob is not signed into a manifest: the backup keeps its previous snapshot.
        try vault.catalog.pool.write { db in try db.execute(sql: "DELETE FROM blobHash") }
        let victim = vault.layout.root + "/" + m.blobs[0].path
        try writeBytes(victim, Array(readBytes(victim).dropLast(4)))
        #expect(throws: SnapshotError.self) { try vault.publishSnapshot() }
        #expect(try newestManifest(vault).manifest.sequence == m.sequence)
    }

    @Test func aSnapshotDecryptsOnlyWithItsVaultsKeyAndOnlyWhole() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try makeVault(dir).vault
        try importFiles(Array(Corpus.shared.valid.prefix(4)), into: vault, dir: dir, batch: "a")
        let info = try vault.publishSnapshot()
        let path = vault.layout.root + "/" + SnapshotNames.snapshot(info.sequence)
        try vault.openSnapshot(path, sequence: info.sequence, to: dir.sub("plain.sqlite"))
        let q = try DatabaseQueue(path: dir.sub("plain.sqlite"))
        #expect(try q.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM instance") } == 4)
        try q.close()
        // The clear SQLite copy never stays in snapshots/, and the sealed file has no SQLite header.
        #expect(!readBytes(path).starts(with: Array("SQLite format 3".utf8)))
        // Expected failures: another vault's key, a flipped bit, a truncated file, the wrong sequence.
        let other = try makeVault(dir, "other").vault
        #expect(throws: SnapshotError.self) { try other.openSnapshot(path, sequence: info.sequence, to: dir.sub("x1")) }
        #expect(throws: SnapshotError.self) { try vault.openSnapshot(path, sequence: info.sequence + 1, to: dir.sub("x2")) }
        var bytes = readBytes(path)
        bytes[bytes.count / 2] ^= 0x10
        try writeBytes(dir.sub("flipped"), bytes)
        #expect(throws: SnapshotError.self) { try vault.openSnapshot(dir.sub("flipped"), sequence: info.sequence, to: dir.sub("x3")) }
        try writeBytes(dir.sub("cut"), Array(readBytes(path).dropLast(20)))
        #expect(throws: SnapshotError.self) { try vault.openSnapshot(dir.sub("cut"), sequence: info.sequence, to: dir.sub("x4")) }
        for x in ["x1", "x2", "x3", "x4"] { #expect(!FileManager.default.fileExists(atPath: dir.sub(x))) }
    }
}

// MARK: Sync, verify, restore (the backup side)

@Suite struct BackupSyncTests {
    /// The proof, in the library: sync → add studies → sync (only new blobs) → forget a patient →
    /// sync (their blobs leave the backup) → damage the backup → verify names each → repair → restore →
    /// verify → export byte-identical.
    @Test func syncAddForgetDamageVerifyRestoreExport() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let corpus = Corpus.shared
        let vault = try makeVault(dir).vault
        let first = Array(corpus.valid.prefix(corpus.valid.count / 2)), rest = Array(corpus.valid.dropFirst(first.count))
        try importFiles(first, into: vault, dir: dir, batch: "1")
        try vault.publishSnapshot()
        let dest = dir.sub("backup")
        let state = BackupStateFile(path: dir.sub("state.json"))
        func sync(rehash: Bool = false) throws -> SyncReport {
            try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: dest, locking: .exclusive), options: SyncOptions(rehash: rehash), state: state)
        }
        func verify() throws -> BackupVerifyReport {
            try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: try publicKey(vault), state: state)
        }
        let s1 = try sync()
        #expect(s1.blobsCopied == first.count && s1.blobsAlreadyPresent == 0 && s1.blobsDeleted == 0)
        #expect(try verify().ok)
        #expect(try sync().blobsCopied == 0)  // nothing new: nothing copied

        try importFiles(rest, into: vault, dir: dir, batch: "2")
        try vault.publishSnapshot()
        let s2 = try sync()
        #expect(s2.blobsCopied == rest.count, "only the new blobs are copied")
        #expect(s2.blobsAlreadyPresent == first.count)
        #expect(s2.bytesCopied == (try newestManifest(vault)).manifest.blobs.reduce(0) { $0 + $1.size } - s1.bytesCopied)

        // Forget a patient: their blobs leave the backup too.
        let forgotten = "MRN0012345"
        let listedBefore = Set(try newestManifest(vault).manifest.blobs.map(\.id))
        _ = try vault.forget(patientID: forgotten)
        let gone = Array(listedBefore.subtracting(try newestManifest(vault).manifest.blobs.map(\.id)))
        #expect(!gone.isEmpty)
        let s3 = try sync()
        #expect(s3.blobsDeleted == gone.count && s3.blobsCopied == 0)
        for id in gone { #expect(!FileManager.default.fileExists(atPath: dest + "/" + SnapshotNames.blobPath(id)!)) }
        #expect(try verify().ok)

        // Damage: one altered, one truncated, one missing, one extra blob, one extra file; an altered snapshot.
        let listed = try newestManifest(vault).manifest
        let paths = listed.blobs.map { dest + "/" + $0.path }
        var b0 = readBytes(paths[0]); b0[b0.count / 2] ^= 0x40; try writeBytes(paths[0], b0)
        try writeBytes(paths[1], Array(readBytes(paths[1]).dropLast(7)))
        try FileManager.default.removeItem(atPath: paths[2])
        let extraBlob = dest + "/blobs/00/" + String(repeating: "0", count: 32)
        try FileManager.default.createDirectory(atPath: dest + "/blobs/00", withIntermediateDirectories: true)
        try writeBytes(extraBlob, readBytes(paths[3]))
        try writeBytes(dest + "/notes.txt", Array("hello".utf8))
        try writeBytes(paths[4], readBytes(paths[4]) + [1, 2, 3])
        let report = try verify()
        #expect(!report.ok)
        let byName = Dictionary(report.problems.map { ($0.name, $0.kind) }, uniquingKeysWith: { a, _ in a })
        #expect(byName[listed.blobs[0].path] == .altered)
        #expect(byName[listed.blobs[1].path] == .truncated)
        #expect(byName[listed.blobs[2].path] == .missing)
        #expect(byName["blobs/00/" + String(repeating: "0", count: 32)] == .extra)
        #expect(byName["notes.txt"] == .extra)
        #expect(byName[listed.blobs[4].path] == .altered)
        #expect(report.problems.count == 6, "\(report.problems)")

        // A sync with --rehash repairs the backup from the vault (and removes the extra blob).
        let repaired = try sync(rehash: true)
        #expect(repaired.blobsRepaired == 1 && repaired.blobsCopied == 3 && repaired.blobsDeleted == 1)
        try FileManager.default.removeItem(atPath: dest + "/notes.txt")
        #expect(try verify().ok)

        // Restore into a new directory: it opens with the passphrase, verifies, and serves the same bytes.
        let restored = try BackupRestore.run(
            from: try DirectoryTarget(root: dest, locking: .shared), to: dir.sub("restored"), unlock: .passphrase(try secure(testPassphrase)))
        #expect(restored.problems.isEmpty && restored.blobsRestored == listed.blobs.count)
        let check = try restored.vault.verify()
        #expect(check.ok, "\(check.problems)")
        #expect(check.blobsChecked == listed.blobs.count)
        let reopened = try Vault.open(at: dir.sub("restored"), passphrase: try secure(testPassphrase))
        var exported = 0
        for f in corpus.valid where f.patient_id != forgotten {
            try reopened.export(.instance(f.sop_uid!), to: dir.sub("out"))
            #expect(try sha256(ofFile: dir.sub("out/\(f.study_uid!)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)
            exported += 1
        }
        #expect(exported == listed.blobs.count)
        #expect(throws: VaultError.self) { try reopened.export(.instance(corpus.valid.first { $0.patient_id == forgotten }!.sop_uid!), to: dir.sub("o2")) }
        // The restored vault continues the snapshot sequence and can itself be backed up to the same place.
        let next = try reopened.publishSnapshot()
        #expect(next.sequence == listed.sequence + 1)
        let again = try BackupSync.run(vault: reopened.layout.root, to: try DirectoryTarget(root: dest, locking: .exclusive))
        #expect(again.blobsCopied == 0 && again.sequence == next.sequence)
        // A wrong passphrase restores nothing usable.
        #expect(throws: VaultError.wrongPassphrase) {
            try BackupRestore.run(from: try DirectoryTarget(root: dest, locking: .shared), to: dir.sub("r2"), unlock: .passphrase(try secure("wrong passphrase!!")))
        }
    }

    @Test func verifyRefusesARolledBackManifestAndSyncAnOlderVault() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try makeVault(dir).vault
        try importFiles(Array(Corpus.shared.valid.prefix(3)), into: vault, dir: dir, batch: "1")
        try vault.publishSnapshot()
        let dest = dir.sub("backup")
        let state = BackupStateFile(path: dir.sub("state.json"))
        _ = try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: dest, locking: .exclusive))
        try FileManager.default.copyItem(atPath: dest, toPath: dir.sub("old-backup"))
        try FileManager.default.copyItem(atPath: vault.layout.root, toPath: dir.sub("old-vault"))
        try importFiles(Array(Corpus.shared.valid.dropFirst(3).prefix(3)), into: vault, dir: dir, batch: "2")
        try vault.publishSnapshot()
        _ = try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: dest, locking: .exclusive), state: state)
        let key = try publicKey(vault)
        #expect(try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: key, state: state).ok)

        // Roll the backup back to its older, genuinely signed state: verify refuses it.
        try FileManager.default.removeItem(atPath: dest)
        try FileManager.default.copyItem(atPath: dir.sub("old-backup"), toPath: dest)
        let rolled = try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: key, state: state)
        #expect(rolled.problems.map(\.kind) == [.rollback], "\(rolled.problems)")
        // Without the state (a first look from another host) the old backup is intact, not rolled back.
        #expect(try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: key).ok)

        // An older copy of the vault never overwrites a newer backup.
        let newer = dir.sub("newer-backup")
        _ = try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: newer, locking: .exclusive))
        #expect(throws: BackupError.self) {
            try BackupSync.run(vault: dir.sub("old-vault"), to: try DirectoryTarget(root: newer, locking: .exclusive))
        }
        #expect(try BackupVerifier.run(try DirectoryTarget(root: newer, locking: .shared), publicKey: key).ok)
        // Nor does another vault's sync touch this backup.
        let other = try makeVault(dir, "other").vault
        try other.publishSnapshot()
        #expect(throws: BackupError.wrongVault(location: newer, expected: other.config.vaultID, found: vault.config.vaultID)) {
            try BackupSync.run(vault: other.layout.root, to: try DirectoryTarget(root: newer, locking: .exclusive))
        }
    }

    /// The backup side holds no key: a copy of the vault with no catalog and no key slot at all, and
    /// blobs that no key could open, syncs all the same; and nothing in the backup names a patient.
    @Test func syncWorksWithoutAnyKeyOrCatalogAndTheBackupNamesNoPatient() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try makeVault(dir).vault
        try importFiles(Corpus.shared.valid, into: vault, dir: dir, batch: "all")
        try vault.publishSnapshot()
        let keyless = dir.sub("keyless")
        try FileManager.default.copyItem(atPath: vault.layout.root, toPath: keyless)
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: keyless + "/catalog.sqlite" + s) }
        var json = try #require(try JSONSerialization.jsonObject(with: Data(readBytes(keyless + "/vault.json"))) as? [String: Any])
        json["slots"] = [[String: Any]]()
        json.removeValue(forKey: "wrappedManifestSigningSeed")
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: keyless + "/vault.json"))
        #expect(throws: VaultError.self) { try Vault.open(at: keyless, passphrase: try secure(testPassphrase)) }

        let dest = dir.sub("backup")
        let r = try BackupSync.run(vault: keyless, to: try DirectoryTarget(root: dest, locking: .exclusive))
        #expect(r.blobsCopied == Corpus.shared.valid.count)
        #expect(try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: try publicKey(vault)).ok)

        let files = allFiles(under: dest)
        #expect(files.filter { $0.contains("/blobs/") }.count == Corpus.shared.valid.count)
        let ids = Corpus.identifiers()
        #expect(ids.count > 100)
        for path in files {
            for (label, bytes) in ids { #expect(!fileContains(path, bytes), "\(label) readable in \(path)") }
            let name = (path as NSString).lastPathComponent
            #expect(!ids.contains { name.contains($0.0) }, "\(name)")
        }
        for (label, _) in ids.prefix(40) where !label.hasSuffix("(Latin-1)") {
            let g = try run("/usr/bin/grep", ["-r", "-l", "-F", label, dest])
            #expect(g.status == 1, "grep found \(label): \(g.stdout)")
        }
    }

    @Test func syncKeepsTheNewestSnapshotSetsAndNeverAForgedManifest() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try makeVault(dir).vault
        try importFiles(Array(Corpus.shared.valid.prefix(2)), into: vault, dir: dir, batch: "1")
        let dest = dir.sub("backup")
        func sync(keep: Int) throws -> SyncReport {
            try BackupSync.run(vault: vault.layout.root, to: try DirectoryTarget(root: dest, locking: .exclusive), options: SyncOptions(keep: keep))
        }
        for _ in 0..<4 {
            try vault.publishSnapshot()
            _ = try sync(keep: 2)
        }
        let newest = try newestManifest(vault).manifest.sequence
        func manifests() -> [String] { FileIO.list(dest + "/snapshots").filter { $0.hasPrefix("manifest-") }.sorted() }
        #expect(manifests() == [newest - 1, newest].map { String(SnapshotNames.manifest($0).dropFirst(10)) })
        #expect(FileIO.list(dest + "/snapshots").count == 6)
        // A manifest with a higher sequence that does not verify (forged, or damaged) neither stops the
        // sync nor survives it, even with --keep 1.
        let forged = dest + "/" + SnapshotNames.manifest(newest + 100)
        try writeBytes(forged, readBytes(dest + "/" + SnapshotNames.manifest(newest)))
        try vault.publishSnapshot()
        let r = try sync(keep: 1)
        #expect(r.sequence == newest + 1)
        #expect(manifests() == [String(SnapshotNames.manifest(newest + 1).dropFirst(10))])
        #expect(try BackupVerifier.run(try DirectoryTarget(root: dest, locking: .shared), publicKey: try publicKey(vault)).ok)
    }
}
