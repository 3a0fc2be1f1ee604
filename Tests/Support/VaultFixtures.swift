// Vault helpers shared by every test target: built on the library, never copied between targets.
import Foundation
public import VaultCrypto
public import VaultStore

/// Fast Argon2id for tests only (the vault default is `moderate`).
public let testKDF = Argon2idParameters(opsLimit: 1, memLimit: 8 << 20)
public let testPassphrase = "correct horse battery staple"

public func secure(_ s: String) throws -> SecureBytes {
    var b = Array(s.utf8)
    return try SecureBytes(consuming: &b)
}

/// A new vault in `dir/name`, with its recovery key.
public func makeVault(_ dir: TempDir, _ name: String = "vault") throws -> (vault: Vault, recoveryKey: String) {
    try Vault.create(at: dir.sub(name), passphrase: try secure(testPassphrase), kdf: testKDF)
}

/// Paths of every blob file in a vault.
public func blobFiles(_ vault: Vault) -> [String] {
    allFiles(under: vault.layout.blobs)
}

public func copyFile(_ from: String, _ to: String) throws {
    try? FileManager.default.removeItem(atPath: to)
    try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: from, toPath: to)
}

/// Copies corpus files under `dir`, keeping their relative paths.
public func copyFiles(_ files: [CorpusFile], to dir: String) throws {
    for f in files { try copyFile(Corpus.shared.path(f), dir + "/" + f.path) }
}

public func readBytes(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }
public func writeBytes(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

/// Imports the corpus's valid files (copied into `dir/input`) and returns the summary.
@discardableResult
public func importValidCorpus(into vault: Vault, dir: TempDir) throws -> ImportSummary {
    try copyFiles(Corpus.shared.valid, to: dir.sub("input"))
    return try vault.importFiles([dir.sub("input")])
}

/// Copies `files` into `dir/input-<batch>` and imports them.
@discardableResult
public func importFiles(_ files: [CorpusFile], into vault: Vault, dir: TempDir, batch: String) throws -> ImportSummary {
    try copyFiles(files, to: dir.sub("input-" + batch))
    return try vault.importFiles([dir.sub("input-" + batch)])
}

extension Corpus {
    /// Every identifying value in the corpus, as the bytes that could appear on disk: what no file of a
    /// vault, a backup or a log may contain.
    public static func identifiers() -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        for f in Corpus.shared.valid {
            for v in [f.patient_name, f.patient_id, f.birth_date, f.study_uid, f.series_uid, f.sop_uid, f.accession, f.referring, f.institution, f.study_date] {
                guard let v, v.utf8.count >= 6 else { continue }
                out.append((v, Array(v.utf8)))
                if let latin1 = v.data(using: .isoLatin1) { out.append((v + " (Latin-1)", Array(latin1))) }
            }
            // Name components long enough not to occur by chance in random bytes.
            for part in (f.patient_name ?? "").split(separator: "^") where part.utf8.count >= 6 {
                out.append((String(part), Array(part.utf8)))
                if let latin1 = String(part).data(using: .isoLatin1) { out.append((part + " (Latin-1)", Array(latin1))) }
            }
        }
        return out
    }
}
