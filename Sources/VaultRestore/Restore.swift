// `medvault backup restore`: rebuilds a vault from a backup. Blobs and the sealed snapshot are
// checked against the signed manifest on the way; the passphrase (or recovery key) then opens the
// vault.json copy that goes with that snapshot, and the snapshot becomes catalog.sqlite.
import VaultFormats
public import VaultBackup
import VaultIO
import Foundation
public import VaultCrypto
public import VaultStore
#if canImport(Glibc)
import Glibc
#endif

public struct RestoreReport: Sendable {
    public let vault: Vault
    public var sequence: UInt64 = 0
    public var createdAt = ""
    public var blobsRestored = 0
    public var bytesRestored: Int64 = 0
    /// Blobs listed in the manifest that could not be restored intact (missing or altered in the backup).
    public var problems: [BackupProblem] = []
}

public enum BackupRestore {
    /// Restores the newest manifest of `target` (or `sequence`) into `newRoot`, which must not exist
    /// or be empty. The manifest's signature is checked with `publicKey` if given, else with the key in
    /// the backup's vault.json copy — which the master key then confirms (its wrapped seed must open
    /// and match), so a backup cannot be forged without the passphrase.
    public static func run(
        from target: any BackupTarget, to newRoot: String, unlock: VaultUnlock, publicKey: Ed25519PublicKey? = nil,
        sequence: UInt64? = nil, progress: (SyncProgress) -> Void = { _ in }
    ) throws -> RestoreReport {
        var root = newRoot
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        if Posix.exists(root) {
            guard Posix.isDirectory(root), Posix.list(root).isEmpty else { throw BackupError.destinationNotEmpty(root) }
        }
        let signed = try chooseManifest(target, publicKey: publicKey, sequence: sequence)
        let m = signed.manifest
        guard let configBytes = try target.read(m.vaultConfig.name),
            Int64(configBytes.count) == m.vaultConfig.size, blake2bHex(configBytes) == m.vaultConfig.blake2b256
        else { throw BackupError.blobDamaged("\(target.location)/\(m.vaultConfig.name) is missing or does not match manifest \(m.sequence)") }
        let info = try VaultPublicInfo.parse(configBytes, file: m.vaultConfig.name)
        guard info.vaultID == m.vaultID else { throw BackupError.wrongVault(location: target.location, expected: m.vaultID, found: info.vaultID) }

        // The layout `Vault.create` makes.
        try Posix.makeDirectory(root)
        guard chmod(root, 0o700) == 0 else { throw BackupError.io(operation: "chmod", path: root, errno: errno) }
        for dir in ["blobs", "tmp", "audit", "snapshots", "run"] { try Posix.makeDirectory(root + "/" + dir) }
        for i in 0..<256 { try Posix.makeDirectory(root + "/blobs/" + hex([UInt8(i)])) }

        var placeholder = RestoreProgressState(total: m.files.count, bytes: m.files.reduce(0) { $0 + $1.size })
        progress(placeholder.progress)
        var problems: [BackupProblem] = []
        var restored = 0
        var bytes: Int64 = 0
        var lastReport = Date.distantPast
        for f in m.files {
            do {
                try copyOut(f, from: target, to: root + "/" + f.name, staging: root + "/tmp")
                if f.name.hasPrefix("blobs/") {
                    restored += 1
                    bytes += f.size
                }
            } catch let p as BackupProblem {
                guard f.name.hasPrefix("blobs/") || f.name.hasPrefix("audit/") else {
                    throw BackupError.blobDamaged("\(target.location)/\(f.name): \(p.detail); restore from another backup or an older snapshot (--sequence)")
                }
                problems.append(p)
            }
            placeholder.advance(f.size)
            if Date().timeIntervalSince(lastReport) > 0.1 {
                progress(placeholder.progress)
                lastReport = Date()
            }
        }
        progress(placeholder.progress)
        if let head = m.auditHeadBytes {
            // The audit log as of the snapshot: segments copied above, and the head that closes them.
            try Posix.writeAtomically(head, to: root + "/audit/head")
        }
        try Posix.writeAtomically(signed.fileBytes, to: root + "/" + SnapshotNames.manifest(m.sequence))
        // The restored catalog is that snapshot: it starts at the snapshot's generation, so that the
        // restored vault's next commit makes its snapshot stale, as it should.
        try Posix.writeAtomically(Array("\(m.catalogGeneration ?? 0)\n".utf8), to: root + "/" + CatalogGeneration.fileName)
        try Posix.writeAtomically(configBytes, to: root + "/vault.json")
        try Posix.syncFilesystem(root)

        let vault = try Vault.restoreCatalog(
            at: root, snapshot: root + "/" + m.snapshot.name, sequence: m.sequence, unlock: unlock)
        // The passphrase opened MK; MK must open the signing seed whose public key signed the manifest.
        let confirmed = try vault.checkedManifestPublicKey()
        guard (try? SignedManifest.parse(signed.fileBytes, file: m.snapshot.name, publicKey: confirmed)) != nil else {
            throw BackupError.keyMismatch("manifest \(m.sequence) is not signed by the key of the vault it restores; the backup is not trustworthy")
        }
        var report = RestoreReport(vault: vault)
        report.sequence = m.sequence
        report.createdAt = m.createdAt
        report.blobsRestored = restored
        report.bytesRestored = bytes
        report.problems = problems
        return report
    }

    static func chooseManifest(_ target: any BackupTarget, publicKey: Ed25519PublicKey?, sequence: UInt64?) throws -> SignedManifest {
        let candidates = manifestCandidates(try target.list(prefix: SnapshotNames.directory + "/").map(\.name))
            .filter { sequence == nil || $0.sequence == sequence }
        guard !candidates.isEmpty else {
            throw BackupError.noManifest(
                sequence.map { "\(target.location) has no manifest \($0)" } ?? "\(target.location) holds no manifest: is it a MedVault backup?")
        }
        var firstError: (any Error)?
        for c in candidates {
            do {
                guard let bytes = try target.read(c.name) else { continue }
                let key: Ed25519PublicKey
                if let publicKey {
                    key = publicKey
                } else {
                    guard let cfg = try target.read(SnapshotNames.vaultConfig(c.sequence)),
                        let k = try VaultPublicInfo.parse(cfg, file: SnapshotNames.vaultConfig(c.sequence)).manifestPublicKey
                    else { throw SnapshotError.malformed(file: SnapshotNames.vaultConfig(c.sequence), reason: "missing, or without a public key") }
                    key = k
                }
                let signed = try SignedManifest.parse(bytes, file: c.name, publicKey: key)
                guard signed.manifest.sequence == c.sequence else { throw SnapshotError.malformed(file: c.name, reason: "stored under another sequence") }
                return signed
            } catch {
                // A damaged newest manifest: say so, and only fall back when no sequence was asked for.
                if firstError == nil { firstError = error }
                if sequence != nil { break }
            }
        }
        throw firstError ?? BackupError.noManifest("no usable manifest in \(target.location)")
    }

    /// Copies one object out of the backup into a local file, checking size and hash before it gets its name.
    private static func copyOut(_ f: BackupManifest.File, from target: any BackupTarget, to path: String, staging: String) throws {
        guard let size = try target.size(of: f.name) else {
            throw BackupProblem(kind: .missing, name: f.name, detail: "not in the backup")
        }
        // An audit segment is append-only: a later (interrupted) sync may have left it longer than this
        // manifest lists. Its listed prefix is what this snapshot goes with (as `backup verify` checks).
        let appendOnly = f.name.hasPrefix("audit/")
        guard size == f.size || (appendOnly && size > f.size) else {
            throw BackupProblem(kind: size < f.size ? .truncated : .altered, name: f.name, detail: "\(size) of \(f.size) bytes")
        }
        let tmp = staging + "/" + (path as NSString).lastPathComponent + ".partial"
        let out = try PosixFile(tmp, flags: O_WRONLY | O_CREAT | O_TRUNC)
        let hasher = BLAKE2bHasher()
        var remaining = f.size
        do {
            try target.read(f.name) { chunk in
                let piece = UnsafeRawBufferPointer(rebasing: chunk[0..<Int(min(Int64(chunk.count), remaining))])
                remaining -= Int64(piece.count)
                guard piece.count > 0 else { return }
                hasher.update(piece)
                try out.write(piece)
            }
            try out.close()
        } catch {
            unlink(tmp)
            throw error
        }
        guard hex(hasher.finalize()) == f.blake2b256 else {
            unlink(tmp)
            throw BackupProblem(kind: .altered, name: f.name, detail: "its BLAKE2b-256 differs from the signed manifest's")
        }
        // Durability comes from the one syncfs before the catalog is written (`run`).
        guard rename(tmp, path) == 0 else { throw BackupError.io(operation: "rename", path: path, errno: errno) }
    }
}

extension BackupProblem: Error {}

private struct RestoreProgressState {
    var progress: SyncProgress
    init(total: Int, bytes: Int64) { progress = SyncProgress(filesDone: 0, filesTotal: total, bytesDone: 0, bytesTotal: bytes) }
    mutating func advance(_ n: Int64) {
        progress.filesDone += 1
        progress.bytesDone += n
    }
}
