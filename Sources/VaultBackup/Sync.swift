// `medvault backup sync`: copies what the vault's newest signed manifest lists, as opaque bytes,
// and removes from the backup what it no longer lists. No passphrase, no key, no catalog.
import VaultFormats
import VaultIO
import Foundation
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

public struct SyncOptions: Sendable {
    /// Snapshot sets (manifest, sealed catalog, vault.json copy) kept at the destination.
    public var keep = 3
    /// Re-read every blob already at the destination and replace those whose hash is wrong.
    public var rehash = false
    /// Objects and bytes per commit (one durability barrier each): what a kill can cost.
    public var batchFiles = 256
    public var batchBytes: Int64 = 256 << 20
    public init(keep: Int = 3, rehash: Bool = false) {
        self.keep = max(1, keep)
        self.rehash = rehash
    }
}

public struct SyncProgress: Sendable {
    public var filesDone: Int
    public var filesTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
    package init(filesDone: Int, filesTotal: Int, bytesDone: Int64, bytesTotal: Int64) {
        self.filesDone = filesDone
        self.filesTotal = filesTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
    }
}

public struct SyncReport: Sendable {
    public var sequence: UInt64 = 0
    public var blobsListed = 0
    public var blobsCopied = 0
    public var bytesCopied: Int64 = 0
    /// Present at the destination with the right size (and, with `rehash`, the right hash).
    public var blobsAlreadyPresent = 0
    /// Destination copies found damaged by `rehash` and copied again.
    public var blobsRepaired = 0
    public var blobsDeleted = 0
    public var snapshotsDeleted = 0
    public var seconds: Double = 0
    /// Set when the vault's catalog.generation is ahead of the synced manifest's: the vault committed
    /// changes (an import, a forget…) that its newest snapshot, and so this backup, lacks.
    public var stale: (snapshot: UInt64?, catalog: UInt64)?
}

public enum BackupSync {
    /// Brings `target` up to the newest manifest in `vault`'s snapshots/. Idempotent and resumable:
    /// run it again after any interruption. `state`, if given, records the sequence written.
    public static func run(
        vault: String, to target: any BackupTarget, options: SyncOptions = SyncOptions(), state: BackupStateFile? = nil,
        progress: (SyncProgress) -> Void = { _ in }
    ) throws -> SyncReport {
        let started = Date()
        let info = try VaultPublicInfo.load(vault: vault)
        guard let key = info.manifestPublicKey else { throw SnapshotError.noPublicKey(VaultLayout(root: vault).config) }
        let source = VaultSource(root: vault)
        try target.recover()
        let marker = try ensureMarker(target, vaultID: info.vaultID)

        // The vault may publish (and prune) while we copy: if a listed file vanishes, start again from
        // the newer manifest; what was already copied is not copied twice.
        var attempt = 0
        while true {
            attempt += 1
            let signed = try source.newestManifest(key: key)
            guard signed.manifest.vaultID == info.vaultID else {
                throw BackupError.wrongVault(location: vault, expected: info.vaultID, found: signed.manifest.vaultID)
            }
            do {
                var report = try syncOnce(signed, source: source, target: target, key: key, options: options, progress: progress)
                // Keyless staleness check: the engine's clear commit counter against the signed one.
                let current = CatalogGeneration.read(vault: vault)
                if signed.manifest.catalogGeneration.map({ $0 < current }) ?? (current > 0) {
                    report.stale = (signed.manifest.catalogGeneration, current)
                }
                try? state?.record(
                    vaultID: info.vaultID, backupID: marker.backupID, sequence: signed.manifest.sequence,
                    manifestHash: blake2bHex(signed.fileBytes))
                report.seconds = Date().timeIntervalSince(started)
                return report
            } catch let BackupError.sourceChanged(why) {
                if attempt >= 5 { throw BackupError.sourceChanged(why + "; the vault keeps changing, run the sync again") }
                let newer = try? source.newestManifest(key: key)
                if (newer?.manifest.sequence ?? 0) <= signed.manifest.sequence {
                    throw BackupError.sourceChanged(why + "; run `medvault verify` on the vault")
                }
            }
        }
    }

    package static func ensureMarker(_ target: any BackupTarget, vaultID: String) throws -> BackupMarker {
        if let m = try BackupMarker.load(target) {
            guard m.vaultID == vaultID else { throw BackupError.wrongVault(location: target.location, expected: vaultID, found: m.vaultID) }
            return m
        }
        guard try target.list(prefix: "").isEmpty else { throw BackupError.notABackup(target.location + " (and it is not empty)") }
        var g = SystemRandomNumberGenerator()
        let m = BackupMarker(
            vaultID: vaultID, backupID: hex((0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }),
            createdAt: ISO8601DateFormatter().string(from: Date()))
        try target.put(BackupMarker.name, bytes: try m.encoded())
        try target.commit()
        return m
    }

    /// One pass towards `signed`: check that it does not take the backup back in time, copy what is
    /// missing or damaged in durable batches, publish the manifest last, then prune.
    private static func syncOnce(
        _ signed: SignedManifest, source: VaultSource, target: any BackupTarget, key: Ed25519PublicKey, options: SyncOptions,
        progress: (SyncProgress) -> Void
    ) throws -> SyncReport {
        let manifest = signed.manifest
        var report = SyncReport()
        report.sequence = manifest.sequence
        report.blobsListed = manifest.blobs.count
        try refuseOlderOrForkedState(signed, target: target, key: key)

        let present = Dictionary(try target.list(prefix: "blobs/").map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        let presentAudit = Dictionary(try target.list(prefix: "audit/").map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        let work = try filesToCopy(manifest, presentBlobs: present, presentAudit: presentAudit, target: target, options: options, report: &report)
        let state = try copyInBatches(work, from: source, to: target, options: options, report: &report, progress: progress)
        try target.commit()
        report.blobsCopied -= report.blobsRepaired
        // The manifest last: a manifest at the destination always finds everything it lists.
        try target.put(SnapshotNames.manifest(manifest.sequence), bytes: signed.fileBytes)
        try target.commit()
        progress(state)

        try pruneUnlisted(manifest, presentBlobs: present, presentAudit: presentAudit, target: target, report: &report)
        try pruneSnapshotSets(newest: manifest.sequence, keep: options.keep, target: target, key: key, report: &report)
        try target.commit()
        return report
    }

    /// Never lets an older vault state overwrite a newer backup (a vault restored from an old copy), nor
    /// another manifest with the same sequence replace the one there (a forked vault).
    private static func refuseOlderOrForkedState(_ signed: SignedManifest, target: any BackupTarget, key: Ed25519PublicKey) throws {
        let manifest = signed.manifest
        let existing = try target.list(prefix: SnapshotNames.directory + "/")
        for c in manifestCandidates(existing.map(\.name)) where c.sequence >= manifest.sequence {
            guard let bytes = try target.read(c.name),
                (try? SignedManifest.parse(bytes, file: c.name, publicKey: key))?.manifest.sequence == c.sequence
            else { continue }  // does not verify: not a newer backup, and pruned later
            if c.sequence > manifest.sequence {
                throw BackupError.backupIsNewer(location: target.location, backup: c.sequence, vault: manifest.sequence)
            }
            if bytes != signed.fileBytes { throw BackupError.forked(location: target.location, sequence: c.sequence) }
        }
    }

    /// What the manifest lists that the target lacks, has with another size, or (with `rehash`) has
    /// with another hash: blobs first, then audit segments, then the snapshot and the vault.json copy.
    /// Counts the blobs already present and those found damaged.
    private static func filesToCopy(
        _ manifest: BackupManifest, presentBlobs present: [String: Int64], presentAudit: [String: Int64], target: any BackupTarget,
        options: SyncOptions, report: inout SyncReport
    ) throws -> [BackupManifest.File] {
        var work: [BackupManifest.File] = []
        for b in manifest.blobs {
            if present[b.path] == b.size {
                if options.rehash, try hashObject(target, b.path) != b.blake2b256 {
                    report.blobsRepaired += 1
                    work.append(.init(name: b.path, size: b.size, blake2b256: b.blake2b256))
                } else {
                    report.blobsAlreadyPresent += 1
                }
            } else {
                work.append(.init(name: b.path, size: b.size, blake2b256: b.blake2b256))
            }
        }
        // The snapshot and vault.json copy after the blobs (and the manifest after all of them, in
        // syncOnce): a manifest at the destination always finds everything it lists.
        for f in manifest.auditLog?.segments ?? [] where try presentAudit[f.name] != f.size || options.rehash && hashObject(target, f.name) != f.blake2b256 {
            work.append(f)
        }
        for f in [manifest.snapshot, manifest.vaultConfig] where try target.size(of: f.name) != f.size || options.rehash && hashObject(target, f.name) != f.blake2b256 {
            work.append(f)
        }
        return work
    }

    /// Copies `work` in commits of at most `batchFiles` files or `batchBytes` bytes (what a kill can
    /// cost), reporting progress; counts the blobs and bytes copied. Returns the final progress.
    private static func copyInBatches(
        _ work: [BackupManifest.File], from source: VaultSource, to target: any BackupTarget, options: SyncOptions,
        report: inout SyncReport, progress: (SyncProgress) -> Void
    ) throws -> SyncProgress {
        var state = SyncProgress(filesDone: 0, filesTotal: work.count, bytesDone: 0, bytesTotal: work.reduce(0) { $0 + $1.size })
        progress(state)
        var lastReport = Date.distantPast
        var start = 0
        while start < work.count {
            // One commit's worth of files: copied by several workers at once (hashing and copying are
            // CPU-bound once the page cache holds the blobs), made durable together.
            var end = start, bytes: Int64 = 0
            while end < work.count && end - start < options.batchFiles && bytes < options.batchBytes {
                bytes += work[end].size
                end += 1
            }
            let batch = Array(work[start..<end])
            if batch.count == 1 {
                // A single (typically large) file: on this thread, with live progress.
                try copy(batch[0], from: source, to: target) { n in
                    state.bytesDone += Int64(n)
                    if Date().timeIntervalSince(lastReport) > 0.1 {
                        progress(state)
                        lastReport = Date()
                    }
                }
            } else {
                try copyConcurrently(batch, from: source, to: target)
                state.bytesDone += bytes
            }
            state.filesDone += batch.count
            progress(state)
            lastReport = Date()
            for f in batch where f.name.hasPrefix("blobs/") {
                report.blobsCopied += 1
                report.bytesCopied += f.size
            }
            try target.commit()
            start = end
        }
        return state
    }

    /// Copies the files of one batch with `workers` threads; the first failure stops the others and is thrown.
    private static func copyConcurrently(_ batch: [BackupManifest.File], from source: VaultSource, to target: any BackupTarget) throws {
        let failures = FirstError()
        DispatchQueue.concurrentPerform(iterations: min(Self.workers, batch.count)) { worker in
            for i in stride(from: worker, to: batch.count, by: Self.workers) where !failures.isSet {
                do { try copy(batch[i], from: source, to: target) { _ in } } catch { failures.set(error, at: i) }
            }
        }
        if let e = failures.error { throw e }
    }

    /// Deletes the blobs and audit segments the manifest no longer lists (a forgotten patient's blobs
    /// leave the backup too).
    private static func pruneUnlisted(
        _ manifest: BackupManifest, presentBlobs present: [String: Int64], presentAudit: [String: Int64], target: any BackupTarget,
        report: inout SyncReport
    ) throws {
        let listed = Set(manifest.blobs.map(\.path))
        for name in present.keys where !listed.contains(name) {
            try target.delete(name)
            report.blobsDeleted += 1
        }
        if let log = manifest.auditLog {
            let segments = Set(log.segments.map(\.name))
            for name in presentAudit.keys where !segments.contains(name) { try target.delete(name) }
        }
    }

    /// Keeps the snapshot sets of the `newest` manifest and of the newest older ones that verify, `keep`
    /// in all; deletes the others, and anything in snapshots/ that is not a snapshot file.
    private static func pruneSnapshotSets(
        newest: UInt64, keep: Int, target: any BackupTarget, key: Ed25519PublicKey, report: inout SyncReport
    ) throws {
        // A manifest that does not verify (a higher sequence included: a valid one would have stopped
        // the sync) is not kept.
        var kept: Set<UInt64> = [newest]
        for c in manifestCandidates(try target.list(prefix: SnapshotNames.directory + "/").map(\.name))
        where c.sequence < newest && kept.count < keep {
            if let bytes = try target.read(c.name),
                (try? SignedManifest.parse(bytes, file: c.name, publicKey: key))?.manifest.sequence == c.sequence
            {
                kept.insert(c.sequence)
            }
        }
        for obj in try target.list(prefix: SnapshotNames.directory + "/") {
            let file = String(obj.name.dropFirst(SnapshotNames.directory.count + 1))
            guard let p = SnapshotNames.parse(file), !file.contains("/") else {
                try target.delete(obj.name)  // not ours: snapshots/ is the backup's namespace
                continue
            }
            if !kept.contains(p.sequence) {
                if p.kind == .manifest { report.snapshotsDeleted += 1 }
                try target.delete(obj.name)
            }
        }
    }

    /// Copies one vault file to the target, hashing it on the way; a file that does not match the
    /// manifest is never committed.
    private static func copy(_ f: BackupManifest.File, from source: VaultSource, to target: any BackupTarget, progress: (Int) -> Void) throws {
        let file: PosixFile
        do { file = try PosixFile(source.path(f.name), flags: O_RDONLY) } catch let BackupError.io(_, path, e) where e == ENOENT {
            throw BackupError.sourceChanged("\(path) is listed in the vault's newest manifest but is gone from the vault")
        }
        _ = posix_fadvise(file.fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL))
        // Audit segments only grow: their listed prefix is what this snapshot holds. Any other file
        // must be exactly as listed.
        let limit = f.name.hasPrefix("audit/") ? f.size : Int64.max
        try target.put(f.name) { write in
            let hasher = BLAKE2bHasher()
            let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
            defer { buf.deallocate() }
            var size: Int64 = 0
            while size < limit {
                let n = try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<Int(min(Int64(buf.count), limit - size))]))
                if n == 0 { break }
                let piece = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                hasher.update(piece)
                try write(piece)
                size += Int64(n)
                progress(n)
            }
            guard size == f.size, hex(hasher.finalize()) == f.blake2b256 else {
                throw BackupError.blobDamaged(
                    "\(source.path(f.name)) does not match the vault's signed manifest (\(size) of \(f.size) bytes, or altered): not copied; run `medvault verify` on the vault")
            }
        }
        try file.close()
    }

    /// Copy workers: one per core, at least two (one reads while the other hashes and writes).
    package static let workers = max(2, ProcessInfo.processInfo.activeProcessorCount)

    package static func hashObject(_ target: any BackupTarget, _ name: String, prefix limit: Int64 = .max) throws -> String {
        let hasher = BLAKE2bHasher()
        var remaining = limit
        try target.read(name) { chunk in
            let n = Int(min(Int64(chunk.count), remaining))
            if n > 0 { hasher.update(UnsafeRawBufferPointer(rebasing: chunk[0..<n])) }
            remaining -= Int64(n)
        }
        return hex(hasher.finalize())
    }
}

/// The first error of a parallel batch (by position, so the message does not depend on scheduling).
private final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private var first: (index: Int, error: any Error)?
    package var isSet: Bool { lock.withLock { first != nil } }
    package var error: (any Error)? { lock.withLock { first?.error } }
    package func set(_ e: any Error, at i: Int) {
        lock.withLock {
            if let f = first, f.index <= i { return }
            first = (i, e)
        }
    }
}
