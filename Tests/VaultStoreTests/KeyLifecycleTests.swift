import VaultAudit
import VaultKeys
import Foundation
import GRDB
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore
@testable import VaultCatalog

/// Passphrase change, extra slots and master-key rotation, on real vaults with real files.
@Suite struct KeyLifecycleTests {
    func config(_ vault: Vault) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(readBytes(vault.layout.config))) as? [String: Any])
    }

    /// sha256 of every exported file, by SOP Instance UID.
    func exported(_ vault: Vault, _ dir: TempDir, _ name: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for study in Set(Corpus.shared.valid.compactMap(\.study_uid)) {
            _ = try vault.export(.study(study), to: dir.sub(name))
        }
        for f in allFiles(under: dir.sub(name)) { out[(f as NSString).lastPathComponent] = try sha256(ofFile: f) }
        return out
    }

    func catalogColumn(_ vault: Vault, _ sql: String) throws -> [Data] {
        try vault.catalog.pool.read { db in try Data.fetchAll(db, sql: sql) }
    }

    @Test func passphraseChangeAndSecondSlot() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, recovery) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let root = vault.layout.root
        let n = try vault.listPatients().count

        try vault.changePassphrase(to: try secure("a brand new passphrase"), kdf: testKDF)
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: root, passphrase: try secure(testPassphrase)) }
        let reopened = try Vault.open(at: root, passphrase: try secure("a brand new passphrase"))
        #expect(try reopened.listPatients().count == n)
        #expect(try Vault.open(at: root, recoveryKey: recovery).listPatients().count == n)
        #expect(throws: VaultError.passphraseRejected("the passphrase must be at least 10 characters long")) {
            try reopened.changePassphrase(to: try secure("short"), kdf: testKDF)
        }

        // A second administrator, then that slot removed again.
        let id = try reopened.addPassphraseSlot(label: "dr-second", passphrase: try secure("second admin passphrase"), kdf: testKDF)
        let second = try Vault.open(at: root, passphrase: try secure("second admin passphrase"))
        #expect(second.unlockedSlotID == id)
        #expect(try second.listPatients().count == n)
        #expect(throws: VaultError.self) { try reopened.addPassphraseSlot(label: "dr-second", passphrase: try secure("another one here"), kdf: testKDF) }
        try reopened.removeSlot("dr-second")
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: root, passphrase: try secure("second admin passphrase")) }
        #expect(try reopened.keySlots().map(\.kind) == [.passphrase, .recovery])
        // The last passphrase slot stays.
        #expect(throws: VaultError.self) { try reopened.removeSlot("admin") }
        #expect(throws: VaultError.self) { try reopened.removeSlot("no-such-slot") }
        #expect(try vault.verify().ok)

        // A recovery key that may have been seen: a new one, the old slot removed.
        let oldRecoverySlot = try #require(try reopened.keySlots().first { $0.kind == .recovery }).id
        let (newSlot, newRecovery) = try reopened.addRecoverySlot()
        #expect(newRecovery.hasPrefix("MVRK-") && newRecovery != recovery)
        try reopened.removeSlot(oldRecoverySlot)
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: root, recoveryKey: recovery) }
        let byNew = try Vault.open(at: root, recoveryKey: newRecovery)
        let patientsByNew = try byNew.listPatients().count
        #expect(byNew.unlockedSlotID == newSlot && patientsByNew == n)
    }

    @Test func rotationRewrapsPatientKeysResealsRecordsAndLeavesBlobsAlone() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, recovery) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let root = vault.layout.root
        try vault.addUser("reader", role: .viewer)
        let token = try vault.issueToken(for: "reader", lifetime: 3600).token
        try vault.audit(AuditEvent(actor: "t", role: "cli", action: .unrecognized("before"), outcome: .ok))
        _ = try vault.addPassphraseSlot(label: "dr-second", passphrase: try secure("second admin passphrase"), kdf: testKDF)
        let before = try exported(vault, dir, "before")
        let blobsBefore = Dictionary(uniqueKeysWithValues: blobFiles(vault).map { ($0, readBytes($0)) })
        let keysBefore = try catalogColumn(vault, "SELECT wrappedKey FROM patient ORDER BY id")
        let sealedBefore = try catalogColumn(vault, "SELECT sealed FROM study ORDER BY id")
        let oldConfig = readBytes(vault.layout.config)

        let rotated = try vault.rotateMasterKey()
        #expect(rotated.keyGeneration == 2)
        #expect(try config(rotated)["keyGeneration"] as? Int == 2)
        #expect(try config(rotated)["pendingKeyGeneration"] == nil)
        // Every patient key rewrapped and every record resealed; not one blob byte changed.
        let keysAfter = try catalogColumn(rotated, "SELECT wrappedKey FROM patient ORDER BY id")
        #expect(keysAfter.count == keysBefore.count && zip(keysAfter, keysBefore).allSatisfy { $0 != $1 })
        let sealedAfter = try catalogColumn(rotated, "SELECT sealed FROM study ORDER BY id")
        #expect(zip(sealedAfter, sealedBefore).allSatisfy { $0 != $1 })
        #expect(Dictionary(uniqueKeysWithValues: blobFiles(rotated).map { ($0, readBytes($0)) }) == blobsBefore)
        // The old master key no longer unwraps any patient key.
        for wrapped in keysAfter {
            #expect(throws: CryptoError.self) { try KeyWrap.unwrap(Array(wrapped), with: vault.keyring.master, associatedData: []) }
        }
        #expect(!vault.isMasterKeyCurrent() && rotated.isMasterKeyCurrent())
        #expect(throws: VaultError.keyRotated) { try vault.importFiles([dir.sub("input")]) }

        // Every slot opens the rotated vault; contents, tokens and the audit chain carry over.
        for open in [
            { try Vault.open(at: root, passphrase: try secure(testPassphrase)) },
            { try Vault.open(at: root, passphrase: try secure("second admin passphrase")) },
            { try Vault.open(at: root, recoveryKey: recovery) },
        ] {
            let v = try open()
            #expect(v.keyGeneration == 2)
            #expect(try exported(v, dir, "after-\(UUID().uuidString)") == before)
        }
        #expect(try rotated.verify().ok)
        #expect(try rotated.authenticate(token: token)?.name == "reader")
        try rotated.audit(AuditEvent(actor: "t", role: "cli", action: .unrecognized("after"), outcome: .ok))
        let (records, report) = rotated.readAudit()
        // The library records its own changes now (slot added, key rotated) between the two.
        #expect(report.ok && records.map(\.event.action).filter { if case .unrecognized = $0 { true } else { false } }
            == [.unrecognized("before"), .unrecognized("after")])
        #expect(records.map(\.event.action).contains(.keyRotate))

        // A removed slot's holder who kept the old vault.json: the key it opens is not the catalog's.
        let saved = dir.sub("old-vault.json")
        try writeBytes(saved, oldConfig)
        try rotated.removeSlot("dr-second")
        let again = try rotated.rotateMasterKey()
        #expect(again.keyGeneration == 3)
        let current = readBytes(rotated.layout.config)
        try writeBytes(rotated.layout.config, readBytes(saved))
        #expect(throws: VaultError.keyMismatch) { try Vault.open(at: root, passphrase: try secure("second admin passphrase")) }
        try writeBytes(rotated.layout.config, current)
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: root, passphrase: try secure("second admin passphrase")) }
    }

    @Test func sealedKeysAreBoundToVaultSlotAndGeneration() throws {
        let pair = try SealingKeyPair.random()
        let key = try SymmetricKey.random()
        let sealed = try KeySealing.seal(key, to: pair.publicKey, associatedData: Array("a".utf8))
        #expect(sealed.count == 104)
        #expect(try KeySealing.open(sealed, with: pair, associatedData: Array("a".utf8)).storage.equals(key.storage))
        #expect(throws: CryptoError.authenticationFailed) { try KeySealing.open(sealed, with: pair, associatedData: Array("b".utf8)) }
        #expect(throws: CryptoError.authenticationFailed) { try KeySealing.open(sealed, with: try SealingKeyPair.random(), associatedData: Array("a".utf8)) }
        for i in [0, 40, 103] {
            var flipped = sealed
            flipped[i] ^= 1
            #expect(throws: CryptoError.self) { try KeySealing.open(flipped, with: pair, associatedData: Array("a".utf8)) }
        }
        // Two seals of one key differ (fresh ephemeral key and nonce each time).
        #expect(try KeySealing.seal(key, to: pair.publicKey, associatedData: []) != KeySealing.seal(key, to: pair.publicKey, associatedData: []))
    }
}
