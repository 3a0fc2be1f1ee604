// What the backup side remembers between runs, and the marker that makes a directory a backup.
package import VaultFormats
package import VaultIO
import Foundation
package import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// `medvault-backup.json` at the backup root: which vault this backup is of, and the backup's own
/// random id (rollback detection is per backup, so that rotated off-site disks do not trip it).
public struct BackupMarker: Codable, Sendable, Equatable {
    public static let name = "medvault-backup.json"
    public var format = "medvault-backup"
    public var formatVersion = 1
    public var vaultID: String
    public var backupID: String
    public var createdAt: String

    package static func load(_ target: any BackupTarget) throws -> BackupMarker? {
        guard let bytes = try target.read(name) else { return nil }
        guard let m = try? JSONDecoder().decode(BackupMarker.self, from: Data(bytes)), m.format == "medvault-backup" else {
            throw BackupError.notABackup(target.location)
        }
        return m
    }

    package func encoded() throws(JSONEncodingFailure) -> [UInt8] {
        try JSONFiles.encode(self, "the backup marker", formatting: .prettyPrinted) + [0x0A]
    }
}

/// The newest manifest sequence seen for each backup, kept outside every backup (an attacker who
/// can write the backup cannot roll this back with it). Default: `$XDG_STATE_HOME/medvault/backup-state.json`,
/// else `~/.local/state/medvault/backup-state.json`; `--state FILE` chooses another.
public struct BackupStateFile: Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public var sequence: UInt64
        /// BLAKE2b-256 of the manifest file, hex: the same sequence with other bytes is a fork.
        public var manifestHash: String
        public var seenAt: String
    }

    public let path: String
    public init(path: String) {
        self.path = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    public static var defaultPath: String {
        let env = ProcessInfo.processInfo.environment
        if let x = env["XDG_STATE_HOME"], x.hasPrefix("/") { return x + "/medvault/backup-state.json" }
        let home = env["HOME"] ?? NSHomeDirectory()
        return home + "/.local/state/medvault/backup-state.json"
    }

    package static func key(vaultID: String, backupID: String) -> String { vaultID + "/" + backupID }

    public func load() throws -> [String: Entry] {
        guard Posix.exists(path) else { return [:] }
        let bytes = try Posix.readFile(path)
        guard let entries = try? JSONDecoder().decode([String: Entry].self, from: Data(bytes)) else {
            throw BackupError.noManifest("the backup state file \(path) is damaged; move it aside (rollback detection starts afresh)")
        }
        return entries
    }

    public func entry(vaultID: String, backupID: String) throws -> Entry? {
        try load()[Self.key(vaultID: vaultID, backupID: backupID)]
    }

    /// Records a manifest as seen, unless a newer one is already recorded.
    public func record(vaultID: String, backupID: String, sequence: UInt64, manifestHash: String) throws {
        var all = try load()
        let k = Self.key(vaultID: vaultID, backupID: backupID)
        if let e = all[k], e.sequence > sequence { return }
        all[k] = Entry(sequence: sequence, manifestHash: manifestHash, seenAt: ISO8601DateFormatter().string(from: Date()))
        let dir = (path as NSString).deletingLastPathComponent
        try Posix.makeDirectories(dir, under: "/")
        try Posix.writeAtomically(try JSONFiles.encode(all, "the backup state file", formatting: .prettyPrinted) + [0x0A], to: path)
    }
}

/// The manifests a backup (or a vault's snapshots/) holds, newest first, each authenticated or not.
package struct ManifestCandidate {
    package let sequence: UInt64
    package let name: String
}

package func manifestCandidates(_ names: [String]) -> [ManifestCandidate] {
    names.compactMap { name -> ManifestCandidate? in
        guard name.hasPrefix(SnapshotNames.directory + "/"),
            let p = SnapshotNames.parse(String(name.dropFirst(SnapshotNames.directory.count + 1))), p.kind == .manifest
        else { return nil }
        return ManifestCandidate(sequence: p.sequence, name: name)
    }.sorted { $0.sequence > $1.sequence }
}

package func blake2bHex(_ bytes: [UInt8]) -> String {
    hex(bytes.withUnsafeBytes { blake2b256($0) })
}

/// The vault-side files a sync reads, by name relative to the vault root. Plain bytes: nothing here
/// can decrypt anything.
package struct VaultSource {
    package let root: String

    package func path(_ name: String) -> String { root + "/" + name }

    /// The newest manifest in the vault's snapshots/ that verifies with `key`.
    package func newestManifest(key: Ed25519PublicKey) throws -> SignedManifest {
        let names = Posix.list(root + "/" + SnapshotNames.directory).map { SnapshotNames.directory + "/" + $0 }
        var lastError: (any Error)?
        for c in manifestCandidates(names) {
            do {
                let bytes = try Posix.readFile(path(c.name))
                return try SignedManifest.parse(bytes, file: path(c.name), publicKey: key)
            } catch {
                if case BackupError.io(_, _, let e) = error, e == ENOENT { continue }  // pruned meanwhile
                lastError = error
                break
            }
        }
        if let lastError { throw lastError }
        throw BackupError.noManifest(
            "\(root)/snapshots holds no manifest yet; run `medvault backup publish --vault \(root)` once (needs the passphrase)")
    }
}
