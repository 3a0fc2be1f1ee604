// Sealed catalog snapshots and signed backup manifests: everything a backup job needs, so that it
// never needs a key (docs/backup.md). The vault writes them; `VaultBackup` copies and checks them.
public import VaultAudit
public import VaultKeys
public import VaultFormats
public import VaultIO
import Foundation
import VaultCatalog
public import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif


extension Vault {
    var snapshotKey: SymmetricKey {
        get throws(CryptoError) { try keyring.master.deriveSubkey(id: Keyring.SubkeyID.snapshot.rawValue, context: "MVaultv1") }
    }

    /// The manifest public key, after checking that the wrapped seed in vault.json opens with this
    /// vault's master key and matches it (a restore uses this to tie the backup to the passphrase).
    public func checkedManifestPublicKey() throws -> Ed25519PublicKey {
        try ManifestSigningKey.signingKey(config, master: keyring.master).publicKey
    }

    /// Writes a new sealed catalog snapshot, a copy of vault.json and a signed manifest to snapshots/,
    /// then keeps the newest few. Call after every change to the catalog. Safe to call while imports
    /// and other publishers run (publishers take snapshots/lock; it does not take the writer lock).
    /// `keeping` is how many snapshots stay in the vault, this one included; an erasure keeps only the
    /// new one, because the older ones still hold the erased patient's wrapped key.
    @discardableResult
    public func publishSnapshot(keeping: Int? = nil) throws -> SnapshotInfo {
        let lock: WriterLock
        do { lock = try WriterLock(path: layout.snapshots + "/lock", onWait: {}) } catch { throw SnapshotError.io(error) }
        defer { withExtendedLifetime(lock) {} }
        sweepSnapshotLeftoversLocked()  // an interrupted publish or prune
        for _ in 1...3 {
            if let info = try publishOnce(keeping: max(1, keeping ?? SnapshotFormat.keepInVault)) { return info }
        }
        throw SnapshotError.changedDuringSnapshot
    }

    /// One try; nil if vault.json changed while the catalog was copied.
    private func publishOnce(keeping: Int) throws -> SnapshotInfo? {
        var configBytes = try readConfigBytes()
        var config = try decodeConfig(configBytes)
        if config.wrappedManifestSigningSeed == nil {
            // A vault made before signed manifests: give it a key now (we hold MK).
            try ManifestSigningKey.install(in: &config, master: keyring.master)
            try FileIO.writeAtomically(try config.encoded(), to: layout.config, tmpDirectory: layout.snapshots)
            configBytes = try readConfigBytes()
            config = try decodeConfig(configBytes)
        }
        let signer = try ManifestSigningKey.signingKey(config, master: keyring.master)
        try fillMissingBlobHashes()

        let staging = layout.snapshots + "/.staging-" + FileIO.randomHex(8)
        defer { for s in ["", "-journal", "-wal", "-shm"] { _ = Glibc.unlink(staging + ".sqlite" + s) } }
        var generation: UInt64 = 0
        let blobs = try copyCatalog(to: staging + ".sqlite", generation: &generation)
        guard try readConfigBytes() == configBytes else { return nil }

        // Never below a sequence already published: an erasure whose publish failed removes every
        // snapshot from the vault, and a backup may hold a higher one (sync would then refuse the vault).
        let sequence = max(snapshotSequences().last ?? 0, publishedSequenceFloor()) + 1
        guard let prefix = SnapshotFormat.prefix(sequence: sequence, vaultID: config.vaultID) else {
            throw SnapshotError.malformed(file: layout.config, reason: "vaultID is not 32 hex characters")
        }
        let snapshotPath = layout.root + "/" + SnapshotNames.snapshot(sequence)
        let sealed = try sealFile(staging + ".sqlite", to: staging + ".mvsnap", prefix: prefix)
        do { try FileIO.rename(staging + ".mvsnap", snapshotPath) } catch { throw SnapshotError.io(error) }
        let configCopy = SnapshotNames.vaultConfig(sequence)
        do { try FileIO.writeAtomically(configBytes, to: layout.root + "/" + configCopy, tmpDirectory: layout.snapshots) } catch {
            throw SnapshotError.io(error)
        }
        let auditLog = try auditLogState()  // first: it may repair the log's tail (and move the head)
        let head = readAuditHead().map { BackupManifest.AuditHead(sequence: $0.sequence, mac: hex($0.mac)) }
        let manifest = BackupManifest(
            vaultID: config.vaultID, sequence: sequence, createdAt: ISO8601DateFormatter().string(from: Date()),
            snapshot: .init(name: SnapshotNames.snapshot(sequence), size: sealed.size, blake2b256: hex(sealed.hash)),
            vaultConfig: .init(name: configCopy, size: Int64(configBytes.count), blake2b256: hex(configBytes.withUnsafeBytes { blake2b256($0) })),
            auditHead: head, auditLog: auditLog, blobs: blobs, blobBytes: blobs.reduce(0) { $0 + $1.size },
            catalogGeneration: generation)
        // The manifest last: whoever sees it finds its snapshot and vault.json copy durable.
        let manifestBytes = try SignedManifest.encode(manifest, key: signer)
        do {
            try FileIO.writeAtomically(
                manifestBytes, to: layout.root + "/" + SnapshotNames.manifest(sequence),
                tmpDirectory: layout.snapshots)
        } catch { throw SnapshotError.io(error) }
        pruneSnapshots(keeping: keeping)
        return SnapshotInfo(sequence: sequence, blobs: blobs.count, blobBytes: manifest.blobBytes, snapshotBytes: sealed.size)
    }

    /// The audit log's head and segment prefixes, read under the audit lock so that they agree.
    /// Closed segments never change: their hashes come from a cache (`snapshots/audit-hashes.json`,
    /// a plain optimisation; a wrong entry would only make the backup's verify report the segment).
    private func auditLogState() throws -> BackupManifest.AuditLog? {
        let lock: WriterLock
        do { lock = try WriterLock(path: layout.audit + "/lock", onWait: {}) } catch { throw SnapshotError.io(error) }
        defer { withExtendedLifetime(lock) {} }
        // What an interrupted append left is repaired first, so that no manifest lists a torn tail.
        _ = try? repairAuditTailLocked()
        guard let head = FileManager.default.contents(atPath: layout.audit + "/head"), head.count == 72 else { return nil }
        let cachePath = layout.snapshots + "/audit-hashes.json"
        var cache = (FileManager.default.contents(atPath: cachePath)).flatMap { try? JSONDecoder().decode([String: BackupManifest.File].self, from: $0) } ?? [:]
        var segments: [BackupManifest.File] = []
        for name in auditSegments() {
            let rel = "audit/" + name
            guard let size = FileIO.fileSize(layout.root + "/" + rel) else { continue }
            if let c = cache[rel], c.size == size {
                segments.append(c)
                continue
            }
            let h: (size: Int64, hash: [UInt8])
            do { h = try hashFile(layout.root + "/" + rel, limit: size) } catch { throw SnapshotError.io(error) }
            let f = BackupManifest.File(name: rel, size: h.size, blake2b256: hex(h.hash))
            segments.append(f)
            cache[rel] = f
        }
        let enc = JSONEncoder()
        enc.outputFormatting = .sortedKeys
        if let data = try? enc.encode(cache) { try? FileIO.writeAtomically(Array(data), to: cachePath, tmpDirectory: layout.snapshots) }
        return BackupManifest.AuditLog(head: head.base64EncodedString(), segments: segments)
    }

    private func readConfigBytes() throws(SnapshotError) -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: layout.config) else {
            throw .io(IOFailure(operation: "read", path: layout.config, errno: ENOENT))
        }
        return Array(d)
    }

    private func decodeConfig(_ bytes: [UInt8]) throws -> VaultConfig {
        guard let c = try? JSONDecoder().decode(VaultConfig.self, from: Data(bytes)) else {
            throw VaultError.corruptConfig("not valid JSON for a vault configuration")
        }
        guard c.vaultID == config.vaultID else { throw SnapshotError.wrongVault(file: layout.config, expected: config.vaultID, found: c.vaultID) }
        return c
    }

    /// Sequence numbers of the manifests in snapshots/, ascending.
    /// Whether any snapshot set has been published (`backup sync` needs one).
    public var hasPublishedSnapshot: Bool { !snapshotSequences().isEmpty }

    func snapshotSequences() -> [UInt64] {
        FileIO.list(layout.snapshots).compactMap { SnapshotNames.parse($0) }.filter { $0.kind == .manifest }.map(\.sequence).sorted()
    }

    static let sequenceFloorName = "published-sequence"

    /// The highest snapshot sequence this vault published before pruning (0 if none recorded).
    func publishedSequenceFloor() -> UInt64 {
        guard let d = FileManager.default.contents(atPath: layout.snapshots + "/" + Self.sequenceFloorName),
            let t = String(data: d, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines)
        else { return 0 }
        return UInt64(t) ?? 0
    }

    /// Removes every snapshot from the vault (manifests first). For an erasure whose new snapshot could
    /// not be written: no snapshot is better than one holding an erased patient's key.
    func removeAllSnapshots() {
        pruneSnapshots(keeping: 0)
    }

    /// Keeps the newest `n` manifests and their files; removes every other snapshot file, also those
    /// a crashed prune left without their manifest (manifests first, so that no manifest ever names a
    /// file already gone).
    private func pruneSnapshots(keeping n: Int) {
        // Remember the highest sequence before any manifest goes (see publishOnce).
        if let top = snapshotSequences().last, top > publishedSequenceFloor() {
            try? FileIO.writeAtomically(Array("\(top)\n".utf8), to: layout.snapshots + "/" + Self.sequenceFloorName, tmpDirectory: layout.snapshots)
        }
        let keep = Set(snapshotSequences().suffix(n))
        let files = FileIO.list(layout.snapshots).compactMap { name in SnapshotNames.parse(name).map { (name, $0) } }
            .filter { !keep.contains($0.1.sequence) }
        guard !files.isEmpty else { return }
        for (name, _) in files.sorted(by: { ($0.1.kind == .manifest ? 0 : 1) < ($1.1.kind == .manifest ? 0 : 1) }) {
            try? FileIO.unlink(layout.snapshots + "/" + name)
        }
        try? FileIO.fsyncDirectory(layout.snapshots)
    }

    /// Hashes the blob files of instances imported before the hash was recorded at import.
    private func fillMissingBlobHashes() throws {
        let missing = try catalog.blobsWithoutHash()
        guard !missing.isEmpty else { return }
        var hashes: [(id: String, hash: [UInt8])] = []
        for m in missing { hashes.append((m.id, try hashBlob(id: m.id, expectedSize: m.size))) }
        try catalog.recordBlobHashes(hashes)
    }

    private func hashBlob(id: String, expectedSize: Int64) throws(SnapshotError) -> [UInt8] {
        guard let blob = BlobID(hex: id) else { throw .blobDamaged(id: id, reason: "named by an invalid id in the catalog") }
        let path = layout.blob(blob)
        let result: (size: Int64, hash: [UInt8])
        do { result = try hashFile(path) } catch {
            throw .blobDamaged(id: id, reason: error.errno == ENOENT ? "missing" : "unreadable (\(error))")
        }
        guard result.size == expectedSize else { throw .blobDamaged(id: id, reason: "\(result.size) bytes instead of \(expectedSize)") }
        return result.hash
    }

    /// A consistent copy of the catalog and the blob list read from that very copy, so that the
    /// manifest and the snapshot always agree (`Catalog.copy`).
    private func copyCatalog(to path: String, generation: inout UInt64) throws -> [BackupManifest.Blob] {
        let copy = try catalog.copy(to: path, vaultRoot: layout.root)
        generation = copy.generation
        let rows = copy.blobs
        let patientSample = copy.patientSample
        // The catalog must be the one this process's MK opens (not one resealed by a key rotation meanwhile).
        if let p = patientSample, (try? KeyWrap.unwrap(p.wrapped, with: keyring.master, associatedData: Vault.patientKeyAssociatedData(p.ref))) == nil {
            throw SnapshotError.signingKeyMismatch("the catalog's patient keys do not open with this process's master key (were the keys rotated meanwhile?)")
        }
        var out: [BackupManifest.Blob] = []
        out.reserveCapacity(rows.count)
        for r in rows {
            // Imported by an older medvault between the fill and the copy: hash it now.
            let h = try r.hash ?? hashBlob(id: r.id, expectedSize: r.size)
            out.append(.init(id: r.id, size: r.size, blake2b256: hex(h)))
        }
        return out
    }

    /// Encrypts `source` into `destination` (new file) as a snapshot and makes it durable.
    private func sealFile(_ source: String, to destination: String, prefix: [UInt8]) throws -> (size: Int64, hash: [UInt8]) {
        let key = try snapshotKey
        let input = try FileIO.Descriptor.open(source, flags: O_RDONLY)
        let out = try FileIO.Descriptor.open(destination, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        let hasher = BLAKE2bHasher()
        var size: Int64 = 0
        func emit(_ bytes: UnsafeRawBufferPointer) throws {
            hasher.update(bytes)
            try out.writeAll(bytes)
            size += Int64(bytes.count)
        }
        try prefix.withUnsafeBytes { b in try emit(b) }
        _ = try StreamCodec.seal(from: input, key: key, associatedData: prefix, chunkSize: SnapshotFormat.chunkSize, emit: emit)
        try out.sync()
        try out.close()
        try input.close()
        return (size, hasher.finalize())
    }

    /// Decrypts a snapshot of this vault into a new file at `destination`, checking every chunk, the
    /// header's vault id and `sequence`.
    func openSnapshot(_ path: String, sequence: UInt64, to destination: String) throws {
        try Self.openSnapshot(path, sequence: sequence, vaultID: config.vaultID, key: try snapshotKey, configPath: layout.config, to: destination)
    }

    /// Decrypts a snapshot with the snapshot key of a given master key (a restore has no catalog yet).
    static func openSnapshot(_ path: String, sequence: UInt64, vaultID: String, key snapshotKey: SymmetricKey, configPath: String, to destination: String) throws {
        guard let prefix = SnapshotFormat.prefix(sequence: sequence, vaultID: vaultID) else {
            throw SnapshotError.malformed(file: configPath, reason: "vaultID is not 32 hex characters")
        }
        let input = try FileIO.Descriptor.open(path, flags: O_RDONLY)
        var header = [UInt8](repeating: 0, count: SnapshotFormat.prefixLength + SecretStream.headerByteCount)
        let got = try header.withUnsafeMutableBytes { (b) throws(IOFailure) in try input.readFully(into: b) }
        guard got == header.count, Array(header[0..<8]) == SnapshotFormat.magic else {
            throw SnapshotError.malformed(file: path, reason: "not a MedVault snapshot")
        }
        guard Array(header[0..<SnapshotFormat.prefixLength]) == prefix else {
            throw SnapshotError.malformed(file: path, reason: "its header names another vault, sequence or version")
        }
        let out = try FileIO.Descriptor.open(destination, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        do {
            do {
                _ = try StreamCodec.open(
                    from: input, key: snapshotKey, streamHeader: Array(header[SnapshotFormat.prefixLength...]), associatedData: prefix,
                    chunkSize: SnapshotFormat.chunkSize
                ) { plain in try out.writeAll(plain) }
            } catch let failure as StreamCodec.Failure {
                switch failure {
                case .truncated: throw SnapshotError.malformed(file: path, reason: "truncated")
                case .unauthentic: throw SnapshotError.malformed(file: path, reason: "altered or truncated: a chunk fails authentication")
                case .trailingData: throw SnapshotError.malformed(file: path, reason: "unexpected bytes after the final chunk")
                case .io(let e): throw SnapshotError.io(e)
                }
            }
            try out.sync()
            try out.close()
        } catch {
            _ = Glibc.unlink(destination)
            throw error
        }
    }
}

// MARK: Restoring a catalog

/// How to unlock a vault: a passphrase, or the printed recovery key.
public enum VaultUnlock: Sendable {
    case passphrase(SecureBytes)
    case recoveryKey(String)

    func open(_ path: String) throws -> Vault {
        switch self {
        case .passphrase(let p): try Vault.open(at: path, passphrase: p)
        case .recoveryKey(let k): try Vault.open(at: path, recoveryKey: k)
        }
    }

    func slot(in config: VaultConfig) throws(VaultError) -> (KeySlot, SealingKeyPair) {
        switch self {
        case .passphrase(let p): try Vault.findSlot(config, passphrase: p)
        case .recoveryKey(let k): try Vault.findSlot(config, recoveryKey: k)
        }
    }
}

extension Vault {
    /// Rebuilds `root/catalog.sqlite` from a sealed snapshot. `root` must already hold the
    /// vault.json that goes with the snapshot (the manifest's copy) and a `tmp/` directory. The
    /// master key is the slot's key whose snapshot key authenticates the snapshot (no catalog yet), so the same
    /// unlock code as `Vault.open` is used whatever the key-slot format. Returns the opened vault.
    public static func restoreCatalog(at root: String, snapshot: String, sequence: UInt64, unlock: VaultUnlock) throws -> Vault {
        let layout = VaultLayout(root: root)
        guard !FileIO.exists(layout.catalog) else { throw VaultError.alreadyExists(layout.catalog) }
        let staged = layout.tmp + "/" + FileIO.randomHex(16) + ".catalog.partial"
        defer { _ = Glibc.unlink(staged) }
        // The catalog is not there yet, so the slot's master keys cannot be checked against it: the one
        // whose snapshot key authenticates the snapshot is the right one (mid-rotation, a slot holds two).
        func decrypt() throws {
            let config = try VaultConfig.load(from: layout.config)
            let (slot, secret) = try unlock.slot(in: config)
            var lastError: (any Error)?
            for candidate in try Vault.sealedMasterKeys(config, slot: slot, secret: secret) {
                do {
                    let key = try candidate.key.deriveSubkey(id: Keyring.SubkeyID.snapshot.rawValue, context: "MVaultv1")
                    try openSnapshot(snapshot, sequence: sequence, vaultID: config.vaultID, key: key, configPath: layout.config, to: staged)
                    return
                } catch {
                    lastError = error
                }
            }
            throw lastError ?? VaultError.wrongPassphrase
        }
        try decrypt()
        try FileIO.rename(staged, layout.catalog)
        try FileIO.fsyncDirectory(layout.root)
        return try unlock.open(root)
    }
}


extension Vault {
    /// Files in snapshots/ that no complete snapshot set accounts for: staging of an interrupted
    /// publish (`.staging-*`, its `-journal`, a staged `.mvsnap`, `*.tmp`) and snapshot or vault.json
    /// copies whose manifest is absent.
    public func snapshotLeftovers() -> [String] {
        let names = FileIO.list(layout.snapshots)
        let manifests = Set(names.compactMap { SnapshotNames.parse($0) }.filter { $0.kind == .manifest }.map(\.sequence))
        return names.filter { name in
            if name == "lock" || name == "audit-hashes.json" || name == Self.sequenceFloorName { return false }
            if let p = SnapshotNames.parse(name) { return p.kind != .manifest && !manifests.contains(p.sequence) }
            return true
        }.sorted()
    }

    /// Removes the leftovers, under snapshots/lock (so never a publish in progress). Returns their names.
    @discardableResult
    public func sweepSnapshotLeftovers() throws -> [String] {
        let lock: WriterLock
        do { lock = try WriterLock(path: layout.snapshots + "/lock", onWait: {}) } catch { throw SnapshotError.io(error) }
        defer { withExtendedLifetime(lock) {} }
        return sweepSnapshotLeftoversLocked()
    }

    @discardableResult
    func sweepSnapshotLeftoversLocked() -> [String] {
        let found = snapshotLeftovers()
        for name in found { try? FileIO.unlink(layout.snapshots + "/" + name) }
        if !found.isEmpty { try? FileIO.fsyncDirectory(layout.snapshots) }
        return found
    }

    /// The catalog generation of the newest manifest in snapshots/ (nil: no manifest, or one written
    /// before manifests carried it).
    public func newestSnapshotGeneration() -> UInt64?? {
        guard let seq = snapshotSequences().last,
            let bytes = FileManager.default.contents(atPath: layout.root + "/" + SnapshotNames.manifest(seq)),
            let key = try? checkedManifestPublicKey(),
            let m = try? SignedManifest.parse(Array(bytes), file: SnapshotNames.manifest(seq), publicKey: key)
        else { return nil }
        return .some(m.manifest.catalogGeneration)
    }

    /// True when the catalog holds commits the newest snapshot lacks (or there is no snapshot).
    public func snapshotIsStale() -> Bool {
        let current = CatalogGeneration.read(vault: layout.root)
        switch newestSnapshotGeneration() {
        case .none: return true
        case .some(.none): return current > 0
        case .some(.some(let g)): return g < current
        }
    }
}
