import Foundation
import TestSupport
@testable import VaultCrypto
@testable import VaultStore

/// Fast Argon2id for tests only (the vault default is `moderate`).
let testKDF = Argon2idParameters(opsLimit: 1, memLimit: 8 << 20)
let testPassphrase = "correct horse battery staple"

func secure(_ s: String) throws -> SecureBytes {
    var b = Array(s.utf8)
    return try SecureBytes(consuming: &b)
}

/// A new vault in a fresh temp dir.
func makeVault(_ dir: TempDir) throws -> (Vault, String) {
    let (v, recovery) = try Vault.create(at: dir.sub("vault"), passphrase: try secure(testPassphrase), kdf: testKDF)
    return (v, recovery)
}

/// Paths of every blob file in a vault.
func blobFiles(_ vault: Vault) -> [String] {
    allFiles(under: vault.layout.blobs)
}

func copyFile(_ from: String, _ to: String) throws {
    try? FileManager.default.removeItem(atPath: to)
    try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: from, toPath: to)
}

func readBytes(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }
func writeBytes(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// Imports the corpus's valid files (copied into `dir/input`) and returns the summary.
@discardableResult
func importValidCorpus(into vault: Vault, dir: TempDir) throws -> ImportSummary {
    let corpus = Corpus.shared
    for f in corpus.valid { try copyFile(corpus.path(f), dir.sub("input/" + f.path)) }
    return try vault.importFiles([dir.sub("input")])
}
