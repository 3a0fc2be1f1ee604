// `medvault backup verify`: checks a backup with the public key only — the manifest's signature,
// then every listed file's size and BLAKE2b-256 — and names what is missing, extra, truncated or altered.
import VaultFormats
import Foundation
public import VaultCrypto

public struct BackupProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case missing, extra, truncated, altered
        /// A manifest whose signature does not verify, or that is malformed.
        case badManifest = "bad-manifest"
        /// The newest manifest is older than one seen before (or differs at the same sequence).
        case rollback
        case notABackup = "not-a-backup"
    }
    public let kind: Kind
    /// The object's name, relative to the backup root.
    public let name: String
    public let detail: String
    public var description: String { "\(kind.rawValue): \(name): \(detail)" }
    package init(kind: Kind, name: String, detail: String) {
        self.kind = kind
        self.name = name
        self.detail = detail
    }
}

public struct BackupVerifyReport: Sendable {
    public var sequence: UInt64 = 0
    public var createdAt = ""
    public var filesChecked = 0
    public var bytesChecked: Int64 = 0
    public var blobs = 0
    public var problems: [BackupProblem] = []
    public var ok: Bool { problems.isEmpty }
}

public enum BackupVerifier {
    /// Checks `target` against the newest manifest that `publicKey` verifies, and every kept snapshot set.
    /// With `state`, a manifest older than the newest one seen for this backup is a `rollback` problem;
    /// a newer one is recorded.
    public static func run(
        _ target: any BackupTarget, publicKey: Ed25519PublicKey, state: BackupStateFile? = nil,
        progress: (SyncProgress) -> Void = { _ in }
    ) throws -> BackupVerifyReport {
        var report = BackupVerifyReport()
        let marker: BackupMarker?
        do { marker = try BackupMarker.load(target) } catch { marker = nil }
        if marker == nil {
            report.problems.append(.init(kind: .notABackup, name: BackupMarker.name, detail: "missing or damaged"))
        }

        let all = try target.list(prefix: "")
        let sizes = Dictionary(all.map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        // Every manifest must verify; the newest that does is the one the blobs are checked against.
        let (valid, manifestNames) = try verifiedManifests(all.map(\.name), target: target, publicKey: publicKey, marker: marker, report: &report)
        guard let newest = valid.first else {
            report.problems.append(.init(
                kind: .missing, name: SnapshotNames.directory + "/", detail: "no manifest that verifies with this public key"))
            return report
        }
        let m = newest.manifest
        report.sequence = m.sequence
        report.createdAt = m.createdAt
        report.blobs = m.blobs.count
        if let state, let marker { try checkRollback(newest, marker: marker, state: state, report: &report) }

        // Expected files: the newest manifest's blobs, and the snapshot files of every valid manifest.
        var expected: [BackupManifest.File] = m.files
        for other in valid.dropFirst() { expected += [other.manifest.snapshot, other.manifest.vaultConfig] }
        let expectedNames = checkFiles(expected, sizes: sizes, sequence: m.sequence, target: target, report: &report, progress: progress)
        for name in sizes.keys.sorted() where !expectedNames.contains(name) && !manifestNames.contains(name) && name != BackupMarker.name {
            report.problems.append(.init(kind: .extra, name: name, detail: "not listed in any manifest"))
        }
        return report
    }

    /// The manifests among `names` that verify with `publicKey`, are stored under their own sequence
    /// and belong to the marker's vault, newest first; every manifest file's name (verified or not, so
    /// that none is reported as extra). Each one that fails is a `badManifest` problem.
    private static func verifiedManifests(
        _ names: [String], target: any BackupTarget, publicKey: Ed25519PublicKey, marker: BackupMarker?, report: inout BackupVerifyReport
    ) throws -> (valid: [SignedManifest], names: Set<String>) {
        var valid: [SignedManifest] = []
        var seenNames = Set<String>()
        for c in manifestCandidates(names) {
            seenNames.insert(c.name)
            do {
                guard let bytes = try target.read(c.name) else { continue }
                let m = try SignedManifest.parse(bytes, file: c.name, publicKey: publicKey)
                guard m.manifest.sequence == c.sequence else {
                    report.problems.append(.init(kind: .badManifest, name: c.name, detail: "signed for sequence \(m.manifest.sequence), stored under another number"))
                    continue
                }
                if let marker, m.manifest.vaultID != marker.vaultID {
                    report.problems.append(.init(kind: .badManifest, name: c.name, detail: "belongs to vault \(m.manifest.vaultID), the backup to \(marker.vaultID)"))
                    continue
                }
                valid.append(m)
            } catch let e as SnapshotError {
                let detail: String = if case .badSignature = e { "the signature does not verify with this public key (altered, or another vault's)" } else { e.description }
                report.problems.append(.init(kind: .badManifest, name: c.name, detail: detail))
            }
        }
        return (valid, seenNames)
    }

    /// Rollback: the backup must not be older than what this host saw of it before (nor differ at the
    /// same sequence). When it is not, its newest manifest is recorded as seen.
    private static func checkRollback(
        _ newest: SignedManifest, marker: BackupMarker, state: BackupStateFile, report: inout BackupVerifyReport
    ) throws {
        let m = newest.manifest
        let manifestHash = blake2bHex(newest.fileBytes)
        if let seen = try state.entry(vaultID: m.vaultID, backupID: marker.backupID) {
            if seen.sequence > m.sequence {
                report.problems.append(.init(
                    kind: .rollback, name: SnapshotNames.manifest(m.sequence),
                    detail: "the newest manifest is sequence \(m.sequence), but sequence \(seen.sequence) was seen on \(seen.seenAt): the backup was rolled back or its newer manifests deleted"))
            } else if seen.sequence == m.sequence && seen.manifestHash != manifestHash {
                report.problems.append(.init(
                    kind: .rollback, name: SnapshotNames.manifest(m.sequence), detail: "differs from the manifest with the same sequence seen on \(seen.seenAt)"))
            }
        }
        if report.problems.allSatisfy({ $0.kind != .rollback }) {
            try state.record(vaultID: m.vaultID, backupID: marker.backupID, sequence: m.sequence, manifestHash: manifestHash)
        }
    }

    /// Checks each expected file's size and hash against manifest `sequence`, reporting progress;
    /// returns the names checked.
    private static func checkFiles(
        _ expected: [BackupManifest.File], sizes: [String: Int64], sequence: UInt64, target: any BackupTarget,
        report: inout BackupVerifyReport, progress: (SyncProgress) -> Void
    ) -> Set<String> {
        var prog = SyncProgress(filesDone: 0, filesTotal: expected.count, bytesDone: 0, bytesTotal: expected.reduce(0) { $0 + $1.size })
        progress(prog)
        var lastReport = Date.distantPast
        var expectedNames = Set<String>()
        for f in expected {
            defer {
                prog.filesDone += 1
                prog.bytesDone += f.size
                if Date().timeIntervalSince(lastReport) > 0.1 || prog.filesDone == prog.filesTotal {
                    progress(prog)
                    lastReport = Date()
                }
            }
            guard expectedNames.insert(f.name).inserted else { continue }
            if let problem = fileProblem(f, size: sizes[f.name], sequence: sequence, target: target) {
                report.problems.append(problem)
            } else {
                report.filesChecked += 1
                report.bytesChecked += f.size
            }
        }
        return expectedNames
    }

    /// What is wrong with one listed file at the target (`size`: its size there, nil if absent), or nil.
    private static func fileProblem(_ f: BackupManifest.File, size: Int64?, sequence: UInt64, target: any BackupTarget) -> BackupProblem? {
        guard let size else { return .init(kind: .missing, name: f.name, detail: "listed in manifest \(sequence), not in the backup") }
        if size < f.size { return .init(kind: .truncated, name: f.name, detail: "\(size) of \(f.size) bytes") }
        // An audit segment is append-only: a sync interrupted after copying a longer prefix (for a
        // newer manifest) leaves it longer than this manifest lists. Its listed prefix must match.
        let appendOnly = f.name.hasPrefix("audit/")
        if size > f.size && !appendOnly { return .init(kind: .altered, name: f.name, detail: "\(size - f.size) bytes more than listed") }
        let h: String
        do { h = try BackupSync.hashObject(target, f.name, prefix: f.size) } catch {
            return .init(kind: .missing, name: f.name, detail: "unreadable: \(error)")
        }
        if h != f.blake2b256 { return .init(kind: .altered, name: f.name, detail: "its BLAKE2b-256 differs from the signed manifest's") }
        return nil
    }
}
