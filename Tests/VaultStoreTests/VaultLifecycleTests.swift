import VaultKeys
import Foundation
import Testing
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

@Suite struct VaultLifecycleTests {
    @Test func createsAPrivateVaultAndRefusesToOverwriteIt() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, recovery) = try makeVault(dir)
        var st = stat()
        #expect(stat(vault.layout.root, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o700)
        #expect(recovery.hasPrefix("MVRK-"))
        let json = String(decoding: readBytes(vault.layout.config), as: UTF8.self)
        #expect(json.contains("argon2id13"))
        #expect(!json.contains(recovery))
        for d in ["blobs", "tmp", "audit", "snapshots", "run"] { #expect(FileManager.default.fileExists(atPath: vault.layout.root + "/" + d)) }
        #expect(throws: VaultError.alreadyExists(vault.layout.root)) {
            try Vault.create(at: vault.layout.root, passphrase: try secure(testPassphrase), kdf: testKDF)
        }
    }

    @Test func wrongPassphraseIsOneClearErrorAndChangesNothing() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, _) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let before = allFiles(under: vault.layout.root).map { ($0, readBytes($0)) }
        #expect(throws: VaultError.wrongPassphrase) {
            try Vault.open(at: vault.layout.root, passphrase: try secure("not the passphrase"))
        }
        let after = allFiles(under: vault.layout.root).map { ($0, readBytes($0)) }
        #expect(before.map(\.0) == after.map(\.0))
        #expect(zip(before, after).allSatisfy { $0.1 == $1.1 })
        #expect(VaultError.wrongPassphrase.description == "wrong passphrase or recovery key")
    }

    @Test func passphraseAndRecoveryKeyBothOpenTheSameVault() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let (vault, recovery) = try makeVault(dir)
        try importValidCorpus(into: vault, dir: dir)
        let n = try vault.listPatients().count
        let byPass = try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        #expect(try byPass.listPatients().count == n)
        // The recovery key as a person might type it: lower case, spaces instead of dashes.
        let typed = recovery.lowercased().replacingOccurrences(of: "-", with: " ")
        let byRecovery = try Vault.open(at: vault.layout.root, recoveryKey: typed)
        #expect(try byRecovery.listPatients().count == n)
        #expect(throws: VaultError.wrongPassphrase) {
            try Vault.open(at: vault.layout.root, recoveryKey: "MVRK-" + String(repeating: "AAAA-", count: 12) + "AAAA")
        }
        #expect(throws: VaultError.wrongPassphrase) { try Vault.open(at: vault.layout.root, recoveryKey: "garbage") }
    }

    @Test func shortPassphraseIsRefused() throws {
        let dir = TempDir()
        defer { dir.remove() }
        #expect(throws: VaultError.self) { try Vault.create(at: dir.sub("v"), passphrase: try secure("short"), kdf: testKDF) }
        #expect(!FileManager.default.fileExists(atPath: dir.sub("v")))
    }

    @Test func notAVaultAndDamagedConfigAreNamed() throws {
        let dir = TempDir()
        defer { dir.remove() }
        #expect(throws: VaultError.notAVault(dir.path)) { try Vault.open(at: dir.path, passphrase: try secure(testPassphrase)) }
        let (vault, _) = try makeVault(dir)
        try writeBytes(vault.layout.config, Array("{not json".utf8))
        #expect(throws: VaultError.corruptConfig("not valid JSON for a vault configuration")) {
            try Vault.open(at: vault.layout.root, passphrase: try secure(testPassphrase))
        }
    }

    @Test func recoveryKeyTextRoundTrips() throws {
        for _ in 0..<20 {
            let bytes = secureRandomBytes(32)
            let text = RecoveryKey.format(bytes)
            #expect(text.count == 5 + 52 + 12)
            #expect(RecoveryKey.parse(text) == bytes)
        }
        #expect(RecoveryKey.parse("MVRK-ABCD") == nil)
        #expect(RecoveryKey.parse("MVRK-!!!!") == nil)
    }
}
