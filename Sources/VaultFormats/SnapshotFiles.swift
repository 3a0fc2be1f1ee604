// Snapshot sets as files: names, the signed backup manifest, the sealed snapshot's framing, the
// catalog generation counter. Everything a keyless backup job reads; the engine writes them.
public import VaultIO
import Foundation
public import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Why a snapshot or manifest could not be written or read. Names the file; never a patient value.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(file: String, reason: String)
    /// The signature does not verify with the public key given: altered, or another vault's manifest.
    case badSignature(file: String)
    case wrongVault(file: String, expected: String, found: String)
    /// vault.json has no manifest public key (a vault made before signed manifests, never snapshotted).
    case noPublicKey(String)
    /// The signing seed in vault.json does not open with this process's master key, or does not match the public key.
    case signingKeyMismatch(String)
    case blobDamaged(id: String, reason: String)
    case io(IOFailure)
    case catalog(String)
    case changedDuringSnapshot

    public var description: String {
        switch self {
        case .malformed(let f, let r): "\(f) is not a valid MedVault file: \(r)"
        case .badSignature(let f): "\(f): the signature does not verify (altered, or signed by another vault's key)"
        case .wrongVault(let f, let e, let found): "\(f) belongs to vault \(found), not to vault \(e)"
        case .noPublicKey(let p): "\(p) has no manifest public key yet; run `medvault backup publish` once (needs the passphrase)"
        case .signingKeyMismatch(let m): "the manifest signing key does not match: \(m)"
        case .blobDamaged(let id, let r): "blob \(id) in the vault is \(r); run `medvault verify` (the backup keeps its previous snapshot)"
        case .io(let f): f.description
        case .catalog(let m): "snapshot failed while \(m)"
        case .changedDuringSnapshot: "vault.json kept changing during the snapshot (a key change in progress?); run it again"
        }
    }
}

// MARK: Names and public information

/// File names of the snapshot sets, relative to the vault (or backup) root. One set per sequence number.
public enum SnapshotNames {
    public static let directory = "snapshots"
    package static let digits = 12

    package static func padded(_ sequence: UInt64) -> String {
        let s = String(sequence)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }

    public static func snapshot(_ sequence: UInt64) -> String { "\(directory)/snapshot-\(padded(sequence)).mvsnap" }
    public static func vaultConfig(_ sequence: UInt64) -> String { "\(directory)/vault-\(padded(sequence)).json" }
    public static func manifest(_ sequence: UInt64) -> String { "\(directory)/manifest-\(padded(sequence)).manifest" }

    /// The sequence and kind of a file name in snapshots/ (without the directory), or nil for any other name.
    public static func parse(_ fileName: String) -> (sequence: UInt64, kind: Kind)? {
        for kind in Kind.allCases {
            let (prefix, suffix) = kind.affixes
            guard fileName.hasPrefix(prefix), fileName.hasSuffix(suffix) else { continue }
            let middle = fileName.dropFirst(prefix.count).dropLast(suffix.count)
            guard middle.count == digits, middle.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(middle) else { return nil }
            return (n, kind)
        }
        return nil
    }

    public enum Kind: CaseIterable, Sendable {
        case snapshot, vaultConfig, manifest
        package var affixes: (String, String) {
            switch self {
            case .snapshot: ("snapshot-", ".mvsnap")
            case .vaultConfig: ("vault-", ".json")
            case .manifest: ("manifest-", ".manifest")
            }
        }
    }

    /// `audit/segment-NNNNNN.log`, as the audit log names its segments.
    public static func isAuditSegment(_ name: String) -> Bool {
        guard name.hasPrefix("audit/segment-"), name.hasSuffix(".log") else { return false }
        let digits = name.dropFirst("audit/segment-".count).dropLast(4)
        return !digits.isEmpty && digits.count <= 12 && digits.allSatisfy { $0.isASCII && $0.isNumber }
    }

    /// `blobs/ab/<id>` for a blob id in 32 lowercase hex characters, or nil for anything else.
    public static func blobPath(_ id: String) -> String? { BlobID(hex: id)?.relativePath }
}

/// What a keyless reader may take from vault.json: the vault id and the manifest public key.
/// Decodes only those fields, so that it works whatever the key-slot format is.
public struct VaultPublicInfo: Sendable, Equatable {
    public let vaultID: String
    public let manifestPublicKey: Ed25519PublicKey?

    private struct Fields: Decodable {
        package var format: String
        package var vaultID: String
        package var manifestPublicKey: String?
    }

    public static func parse(_ bytes: [UInt8], file: String) throws(SnapshotError) -> VaultPublicInfo {
        guard let f = try? JSONDecoder().decode(Fields.self, from: Data(bytes)), f.format == "medvault-vault" else {
            throw .malformed(file: file, reason: "not a vault.json")
        }
        var key: Ed25519PublicKey?
        if let k = f.manifestPublicKey {
            guard let parsed = Ed25519PublicKey(base64: k) else { throw .malformed(file: file, reason: "manifestPublicKey is not a 32-byte base64 key") }
            key = parsed
        }
        return VaultPublicInfo(vaultID: f.vaultID, manifestPublicKey: key)
    }

    public static func load(vault root: String) throws(SnapshotError) -> VaultPublicInfo {
        let path = VaultLayout(root: root).config
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .io(IOFailure(operation: "read", path: path, errno: FileIO.exists(path) ? EACCES : ENOENT))
        }
        return try parse(Array(data), file: path)
    }
}

// MARK: The manifest

/// What one snapshot of the vault holds, as the backup needs it: no patient value, no key.
public struct BackupManifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        /// Relative to the vault or backup root.
        public var name: String
        public var size: Int64
        /// BLAKE2b-256 of the file's bytes, hex.
        public var blake2b256: String
        public init(name: String, size: Int64, blake2b256: String) {
            self.name = name
            self.size = size
            self.blake2b256 = blake2b256
        }
    }

    public struct Blob: Codable, Sendable, Equatable {
        public var id: String
        public var size: Int64
        public var blake2b256: String
        public var path: String { SnapshotNames.blobPath(id) ?? "blobs/invalid" }
        package init(id: String, size: Int64, blake2b256: String) {
            self.id = id
            self.size = size
            self.blake2b256 = blake2b256
        }
    }

    public struct AuditHead: Codable, Sendable, Equatable {
        public var sequence: UInt64
        public var mac: String
        package init(sequence: UInt64, mac: String) {
            self.sequence = sequence
            self.mac = mac
        }
    }

    /// The audit log as of the snapshot: its head file (base64, 72 bytes) and each segment's first
    /// `size` bytes (segments only grow; a copy takes that prefix).
    public struct AuditLog: Codable, Sendable, Equatable {
        public var head: String
        public var segments: [File]
        package init(head: String, segments: [File]) {
            self.head = head
            self.segments = segments
        }
    }

    public static let formatName = "medvault-backup-manifest"
    public var format = BackupManifest.formatName
    public var formatVersion = 1
    public var vaultID: String
    public var sequence: UInt64
    public var createdAt: String
    public var snapshot: File
    public var vaultConfig: File
    public var auditHead: AuditHead?
    /// Absent when the vault had no audit log yet, or from a medvault that did not back it up.
    public var auditLog: AuditLog? = nil
    /// Sorted by id.
    public var blobs: [Blob]
    public var blobBytes: Int64
    /// `catalog.generation` when the snapshot was copied (absent from manifests of older releases).
    public var catalogGeneration: UInt64? = nil

    package init(
        vaultID: String, sequence: UInt64, createdAt: String, snapshot: File, vaultConfig: File, auditHead: AuditHead?,
        auditLog: AuditLog?, blobs: [Blob], blobBytes: Int64, catalogGeneration: UInt64?
    ) {
        self.vaultID = vaultID
        self.sequence = sequence
        self.createdAt = createdAt
        self.snapshot = snapshot
        self.vaultConfig = vaultConfig
        self.auditHead = auditHead
        self.auditLog = auditLog
        self.blobs = blobs
        self.blobBytes = blobBytes
        self.catalogGeneration = catalogGeneration
    }

    /// Every file of this snapshot set other than the manifest itself: blobs, snapshot, vault.json copy.
    public var files: [File] {
        [snapshot, vaultConfig] + (auditLog?.segments ?? []) + blobs.map { File(name: $0.path, size: $0.size, blake2b256: $0.blake2b256) }
    }

    /// The audit head bytes to restore, if the manifest carries the log.
    public var auditHeadBytes: [UInt8]? { auditLog.flatMap { Data(base64Encoded: $0.head) }.map { Array($0) } }

    /// Rejects anything a correct writer never produces (names outside the layout, bad hashes).
    package func validate(file: String) throws(SnapshotError) {
        func bad(_ r: String) -> SnapshotError { .malformed(file: file, reason: r) }
        guard format == Self.formatName else { throw bad("format is not \(Self.formatName)") }
        guard formatVersion == 1 else { throw bad("manifest format version \(formatVersion) is not supported; upgrade medvault") }
        guard snapshot.name == SnapshotNames.snapshot(sequence), vaultConfig.name == SnapshotNames.vaultConfig(sequence) else {
            throw bad("snapshot file names do not match sequence \(sequence)")
        }
        var previous = ""
        for b in blobs {
            guard SnapshotNames.blobPath(b.id) != nil, b.id > previous else { throw bad("blob ids must be sorted, unique, 32 lowercase hex") }
            previous = b.id
            guard b.size >= 0, b.blake2b256.utf8.count == 64, unhex(b.blake2b256) != nil else { throw bad("blob \(b.id) has a bad size or hash") }
        }
        for f in [snapshot, vaultConfig] + (auditLog?.segments ?? []) where f.size < 0 || f.blake2b256.utf8.count != 64 || unhex(f.blake2b256) == nil {
            throw bad("\(f.name) has a bad size or hash")
        }
        if let log = auditLog {
            guard auditHeadBytes?.count == 72 else { throw bad("the audit head is not 72 bytes of base64") }
            for f in log.segments where !SnapshotNames.isAuditSegment(f.name) { throw bad("\(f.name) is not an audit segment name") }
        }
    }
}

/// A manifest file: one header line `medvault-manifest-v1 ed25519 <base64 signature>`, then the
/// manifest's JSON. The signature covers `"medvault.v1.manifest\0" ‖ JSON bytes`, exactly as stored.
public struct SignedManifest: Sendable {
    public let manifest: BackupManifest
    /// The whole file, to copy as it is.
    public let fileBytes: [UInt8]

    package static let magic = "medvault-manifest-v1 ed25519 "
    package static func signedMessage(_ body: [UInt8]) -> [UInt8] { Array("medvault.v1.manifest".utf8) + [0] + body }

    package static func encode(_ manifest: BackupManifest, key: Ed25519SigningKey) throws(JSONEncodingFailure) -> [UInt8] {
        let body = try JSONFiles.encode(manifest, "the backup manifest", formatting: .withoutEscapingSlashes) + [0x0A]
        let sig = key.sign(signedMessage(body))
        return Array((magic + Data(sig).base64EncodedString() + "\n").utf8) + body
    }

    /// Parses and authenticates a manifest file. Nothing in it is trusted before the signature verifies.
    public static func parse(_ bytes: [UInt8], file: String, publicKey: Ed25519PublicKey) throws(SnapshotError) -> SignedManifest {
        guard let nl = bytes.firstIndex(of: 0x0A) else { throw .malformed(file: file, reason: "no header line") }
        let header = String(decoding: bytes[..<nl], as: UTF8.self)
        guard header.hasPrefix(magic), let sig = Data(base64Encoded: String(header.dropFirst(magic.count))) else {
            throw .malformed(file: file, reason: "bad header line")
        }
        let body = Array(bytes[(nl + 1)...])
        guard publicKey.isValidSignature(Array(sig), for: signedMessage(body)) else { throw .badSignature(file: file) }
        let manifest: BackupManifest
        do { manifest = try JSONDecoder().decode(BackupManifest.self, from: Data(body)) } catch {
            throw .malformed(file: file, reason: "signed, but not a manifest this medvault understands")
        }
        try manifest.validate(file: file)
        return SignedManifest(manifest: manifest, fileBytes: bytes)
    }
}

// MARK: Writing snapshots

public struct SnapshotInfo: Sendable, Equatable {
    public let sequence: UInt64
    public let blobs: Int
    public let blobBytes: Int64
    public let snapshotBytes: Int64
    package init(sequence: UInt64, blobs: Int, blobBytes: Int64, snapshotBytes: Int64) {
        self.sequence = sequence
        self.blobs = blobs
        self.blobBytes = blobBytes
        self.snapshotBytes = snapshotBytes
    }
}

/// Snapshot file: `"MEDVSNAP" ‖ version u16 BE (1) ‖ 0x0000 ‖ sequence u64 BE ‖ vault id (16 bytes)`
/// (36 bytes, the AD of every chunk), a secretstream header (24), then 64 KiB chunks, the last FINAL.
/// Key: crypto_kdf(MK, id 4 "snapshot", "MVaultv1").
package enum SnapshotFormat {
    package static let magic: [UInt8] = Array("MEDVSNAP".utf8)
    package static let version: UInt16 = 1
    package static let prefixLength = 36
    package static let chunkSize = 64 * 1024
    /// Snapshot sets kept in the vault's snapshots/ (the backup keeps its own number, `--keep`).
    package static let keepInVault = 3

    package static func prefix(sequence: UInt64, vaultID: String) -> [UInt8]? {
        guard let id = unhex(vaultID), id.count == 16 else { return nil }
        return magic + [UInt8(version >> 8), UInt8(version & 0xFF), 0, 0] + AuditFormat.be64(sequence) + id
    }
}

/// BLAKE2b-256 and size of a file (or of its first `limit` bytes), read in 1 MiB pieces.
public func hashFile(_ path: String, limit: Int64 = .max) throws(IOFailure) -> (size: Int64, hash: [UInt8]) {
    let d = try FileIO.Descriptor.open(path, flags: O_RDONLY)
    let hasher = BLAKE2bHasher()
    let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
    defer { buf.deallocate() }
    var size: Int64 = 0
    while size < limit {
        let n = try d.readFully(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(Int64(buf.count), limit - size))]))
        if n == 0 { break }
        hasher.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        size += Int64(n)
    }
    try d.close()
    return (size, hasher.finalize())
}

// MARK: The catalog generation (is the newest snapshot older than the catalog?)

/// `vault/catalog.generation`: a clear, non-secret counter (decimal ASCII, one line) that the engine
/// raises, durably, before a catalog transaction that changed something commits. Each manifest carries
/// the value its snapshot was copied at (`catalogGeneration`), read while holding SQLite's write lock,
/// so the copy holds every commit up to it. A manifest whose generation is below the file's is stale —
/// a writer committed and was stopped before it published — and the keyless `backup sync` can see that
/// without a key. A transaction that raised it and then did not commit (killed, rolled back) only makes
/// the snapshot look stale until the next publish. See docs/backup.md §3.1.
///
/// `vault/catalog.generation.copied` holds the highest value a snapshot copy has read. The counter
/// only needs raising when a copy may hold its current value: until then every snapshot is already
/// older than it. So an import of many transactions raises it once, not once per transaction (each
/// raise is two fsyncs). Without the mark (a vault from an earlier release) every commit raises it.
public enum CatalogGeneration {
    public static let fileName = "catalog.generation"
    public static let copiedFileName = "catalog.generation.copied"

    public static func read(vault root: String) -> UInt64 {
        readCounter(root + "/" + fileName) ?? 0
    }

    /// The highest generation a snapshot copy has read, or nil if no copy recorded one.
    package static func readCopied(vault root: String) -> UInt64? {
        readCounter(root + "/" + copiedFileName)
    }

    /// The value to raise the counter to before a commit, or nil if it need not be raised.
    package static func raise(vault root: String) -> UInt64? {
        let current = read(vault: root)
        guard let copied = readCopied(vault: root) else { return current + 1 }
        return copied < current ? nil : max(current, copied) + 1
    }

    /// Temp file, fsync, rename, directory fsync. Called under SQLite's write lock (one writer at a
    /// time), so the temp file has a fixed name: a kill leaves at most that one, overwritten next time.
    package static func write(_ value: UInt64, vault root: String) throws {
        try writeCounter(value, root: root, name: fileName)
    }

    /// Records that a snapshot copy read `value`, durably, before the snapshot that holds it can be
    /// published (so a crash can only leave the mark ahead of the snapshots, never behind them).
    package static func recordCopied(_ value: UInt64, vault root: String) throws {
        try writeCounter(value, root: root, name: copiedFileName)
    }

    private static func readCounter(_ path: String) -> UInt64? {
        guard let d = FileManager.default.contents(atPath: path),
            let s = String(data: d, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines)
        else { return nil }
        return UInt64(s)
    }

    private static func writeCounter(_ value: UInt64, root: String, name: String) throws {
        let tmp = root + "/" + name + ".tmp"
        do {
            let d = try FileIO.Descriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            do {
                try d.writeAll(Array("\(value)\n".utf8))
                try d.sync()
            } catch {
                try? d.close()
                throw error
            }
            try d.close()
            try FileIO.rename(tmp, root + "/" + name)
            try FileIO.fsyncDirectory(root)
        } catch {
            _ = Glibc.unlink(tmp)
            throw error
        }
    }
}

