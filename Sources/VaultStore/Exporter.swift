// Getting original files back out: byte-identical, streamed chunk by chunk, written atomically.
public import VaultKeys
import VaultFormats
import VaultIO
import Foundation
import VaultCatalog
import VaultCrypto
import VaultDICOM
#if canImport(Glibc)
import Glibc
#endif

/// What to export: a whole study, a series, or one instance, by UID.
public enum ExportSelection: Sendable, Equatable {
    case study(String)
    case series(String)
    case instance(String)
}

public struct ExportProgress: Sendable {
    public var filesDone: Int
    public var filesTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
}

public struct ExportSummary: Sendable {
    /// Paths written, relative to the output directory.
    public var files: [String]
    /// Patient IDs and Study UIDs of what was exported (for the audit log).
    public var patientIDs: [String] = []
    public var studyUIDs: [String] = []
    public var bytes: Int64
    public var seconds: Double
}

/// One instance ready to be decrypted: where its blob is and which patient key opens it.
struct ResolvedInstance {
    let row: InstanceRow
    /// The SOP Instance UID, when the caller asked for it (export names files by it; the API does not
    /// need it, and skipping 300 record decryptions brings a series' first byte forward).
    let sopInstanceUID: String?
    let seriesUID: String
    let studyUID: String
    let patientRef: [UInt8]
    let patientID: String
    let wrappedPatientKey: [UInt8]
}

extension Vault {
    /// Finds the instances a selection names. Unknown UIDs are `VaultError.notFound`.
    func resolve(_ selection: ExportSelection, instanceUIDs: Bool = true) throws -> [ResolvedInstance] {
        let (level, index): (Catalog.Level, [UInt8]) =
            switch selection {
            case .study(let uid): (.study, keyring.blindIndex(.studyUID, Normalize.identifier(uid)))
            case .series(let uid): (.series, keyring.blindIndex(.seriesUID, Normalize.identifier(uid)))
            case .instance(let uid): (.instance, keyring.blindIndex(.instanceUID, Normalize.identifier(uid)))
            }
        let rows = try catalog.instances(at: level, index: index)
        guard !rows.isEmpty else {
            let what: String =
                switch selection {
                case .study: "study"
                case .series: "series"
                case .instance: "instance"
                }
            throw VaultError.notFound("no \(what) with that UID in this vault")
        }
        // A study's rows repeat its series, study and patient: open each sealed record once.
        var seriesUIDs: [[UInt8]: String] = [:], studyUIDs: [[UInt8]: String] = [:], patientIDs: [[UInt8]: String] = [:]
        return try rows.map { r in
            if seriesUIDs[r.seriesIndex] == nil {
                seriesUIDs[r.seriesIndex] = try sealer.open(SeriesRecord.self, r.seriesSealed, table: "series", index: r.seriesIndex).seriesUID
            }
            if studyUIDs[r.studyIndex] == nil {
                studyUIDs[r.studyIndex] = try sealer.open(StudyRecord.self, r.studySealed, table: "study", index: r.studyIndex).studyUID
            }
            if patientIDs[r.patientRef] == nil {
                patientIDs[r.patientRef] = try sealer.open(PatientRecord.self, r.patientSealed, table: "patient", index: r.patientRef).patientID
            }
            return ResolvedInstance(
                row: r.row,
                sopInstanceUID: instanceUIDs
                    ? try sealer.open(InstanceRecord.self, r.row.sealed, table: "instance", index: r.row.uidIndex).sopInstanceUID : nil,
                seriesUID: seriesUIDs[r.seriesIndex] ?? "", studyUID: studyUIDs[r.studyIndex] ?? "", patientRef: r.patientRef,
                patientID: patientIDs[r.patientRef] ?? "", wrappedPatientKey: r.wrappedPatientKey)
        }
    }

    func patientKey(ref: [UInt8], wrapped: [UInt8]) throws(CryptoError) -> SymmetricKey {
        try KeyWrap.unwrap(wrapped, with: keyring.master, associatedData: Vault.patientKeyAssociatedData(ref))
    }

    /// Decrypts one instance into `sink` through the engine's one reader (`InstanceReader`).
    /// `fingerprint` also checks the keyed fingerprint of the clear bytes (export and the
    /// `--remove-source` read-back do; a streamed WADO answer does not).
    func readInstance(_ inst: ResolvedInstance, fingerprint: Bool = true, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try instanceReader.readRecorded(try stored(inst), fingerprint: fingerprint, sink: sink)
    }

    /// The instance's blob opened for reads by range, or nil for a format-1 blob (`InstanceReader.openRanges`).
    func openRanges(_ inst: ResolvedInstance) throws -> SeekableBlob? {
        try instanceReader.openRanges(try stored(inst), blobSize: inst.row.blobSize)
    }

    /// Where the instance's blob is and the patient key that opens it (unwrapped here).
    func stored(_ inst: ResolvedInstance) throws -> StoredInstance {
        guard let id = BlobID(hex: inst.row.blobID) else { throw VaultError.catalog("bad blob id in catalog") }
        let key = try patientKey(ref: inst.patientRef, wrapped: inst.wrappedPatientKey)
        return StoredInstance(blobID: id, patientKey: key, plainSize: inst.row.plainSize, contentMAC: inst.row.contentMAC)
    }

    /// `export(_:to:progress:)` as a recorded read by `actor` (`Vault.recordAccess`).
    @discardableResult
    public func export(
        _ selection: ExportSelection, to outputDirectory: String, by actor: AuditActor, progress: (ExportProgress) -> Void = { _ in }
    ) throws -> ExportSummary {
        try recordAccess(.export, by: actor) { report in
            report.detail = "\(selection)"
            let summary = try export(selection, to: outputDirectory, progress: progress)
            report.patientIDs = summary.patientIDs
            report.studyUIDs = summary.studyUIDs
            report.instances = summary.files.count
            report.bytes = summary.bytes
            report.detail = "to \(outputDirectory)"
            return summary
        }
    }

    /// Writes the selected originals under `outputDirectory` as `<study>/<series>/<instance>.dcm`.
    /// Each file appears only once complete (temp name, fsync, rename); existing files are never overwritten.
    @discardableResult
    public func export(
        _ selection: ExportSelection, to outputDirectory: String, progress: (ExportProgress) -> Void = { _ in }
    ) throws -> ExportSummary {
        let started = Date()
        let instances = try resolve(selection)
        var state = ExportProgress(
            filesDone: 0, filesTotal: instances.count, bytesDone: 0, bytesTotal: instances.reduce(0) { $0 + $1.row.plainSize })
        progress(state)
        try FileIO.makeDirectory(outputDirectory, mode: 0o700)
        var written: [String] = []
        var lastReport = Date()
        for inst in instances {
            let dir = Self.safeName(inst.studyUID) + "/" + Self.safeName(inst.seriesUID)
            let rel = dir + "/" + Self.safeName(inst.sopInstanceUID ?? "") + ".dcm"
            try FileIO.makeDirectory(outputDirectory + "/" + Self.safeName(inst.studyUID), mode: 0o700)
            try FileIO.makeDirectory(outputDirectory + "/" + dir, mode: 0o700)
            let final = outputDirectory + "/" + rel
            if FileIO.exists(final) { throw VaultError.alreadyExists(final) }
            let tmp = outputDirectory + "/" + dir + "/." + FileIO.randomHex(8) + ".partial"
            let out = try FileIO.Descriptor.open(tmp, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
            do {
                try readInstance(inst) { chunk in
                    try out.writeAll(chunk)
                    state.bytesDone += Int64(chunk.count)
                    if Date().timeIntervalSince(lastReport) > 0.1 {
                        progress(state)
                        lastReport = Date()
                    }
                }
                try out.sync()
                try out.close()
                // link(2), unlike rename(2), fails if the name exists: never overwrite.
                if Glibc.link(tmp, final) == 0 {
                    _ = Glibc.unlink(tmp)
                } else if errno == EEXIST {
                    throw VaultError.alreadyExists(final)
                } else if errno == EPERM || errno == EOPNOTSUPP || errno == EMLINK {
                    // No hard links on this filesystem (FAT, exFAT): rename after the existence check.
                    if FileIO.exists(final) { throw VaultError.alreadyExists(final) }
                    try FileIO.rename(tmp, final)
                } else {
                    throw VaultError.io(FileIO.failure("link", final))
                }
                try FileIO.fsyncDirectory(outputDirectory + "/" + dir)
            } catch {
                _ = Glibc.unlink(tmp)
                throw error
            }
            written.append(rel)
            state.filesDone += 1
            progress(state)
        }
        return ExportSummary(
            files: written, patientIDs: Array(Set(instances.map(\.patientID))).sorted(),
            studyUIDs: Array(Set(instances.map(\.studyUID))).sorted(), bytes: state.bytesDone,
            seconds: Date().timeIntervalSince(started))
    }

    /// UIDs are digits and dots; anything else is replaced so a crafted UID cannot escape the directory.
    static func safeName(_ uid: String) -> String {
        let cleaned = String(uid.map { $0.isASCII && ($0.isNumber || $0 == "." || $0.isLetter) ? $0 : "_" })
        return cleaned.isEmpty || cleaned.allSatisfy({ $0 == "." }) ? "_" : cleaned
    }
}

/// One instance found for retrieval by the API: what the response needs before streaming starts.
public struct RetrievableInstance: Sendable {
    let resolved: ResolvedInstance
    public var patientID: String { resolved.patientID }
    public var size: Int64 { resolved.row.plainSize }
}

extension ResolvedInstance: @unchecked Sendable {}

extension Vault {
    /// The instances of a study (or of one series of it) for WADO-RS, in catalog order; empty when the
    /// UIDs are unknown or do not belong together. `sopInstanceUIDs` also opens each instance record,
    /// for answers that name the instance (`/metadata`'s BulkDataURI); a plain retrieval skips it.
    public func instancesForRetrieval(study: String, series: String? = nil, sopInstanceUIDs: Bool = false) throws -> [RetrievableInstance] {
        let found: [ResolvedInstance]
        do {
            found = try series.map { try resolve(.series($0), instanceUIDs: sopInstanceUIDs) } ?? resolve(.study(study), instanceUIDs: sopInstanceUIDs)
        } catch VaultError.notFound {
            return []
        }
        return found.filter { $0.studyUID == study }.map(RetrievableInstance.init)
    }

    /// The instance at a WADO-RS path, only if it really is in that study and series.
    public func instanceForRetrieval(study: String, series: String, instance: String) throws -> RetrievableInstance? {
        let found: [ResolvedInstance]
        do { found = try resolve(.instance(instance)) } catch VaultError.notFound { return nil }
        guard let r = found.first, r.studyUID == study, r.seriesUID == series else { return nil }
        return RetrievableInstance(resolved: r)
    }

    /// Streams the original bytes of an instance (every chunk authenticated before it is handed over).
    public func stream(_ item: RetrievableInstance, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try readInstance(item.resolved, fingerprint: false, sink: sink)
    }
}

/// Thrown by a sink to stop reading once it has what it needs.
private struct EnoughBytes: Error {}

extension Vault {
    /// Header reads try this much of the decrypted start first, then the most they ever read.
    static let headerPrefixLimits = [256 << 10, 16 << 20]

    /// Hands `body` the first `limit` decrypted bytes of the instance (fewer if it is shorter), then
    /// wipes them. Only the chunks of the prefix are decrypted (format 1: decryption stops once the
    /// prefix is complete).
    func withDecryptedPrefix<R>(_ item: RetrievableInstance, limit: Int, _ body: ([UInt8]) throws -> R) throws -> R {
        try instanceReader.withDecryptedPrefix(try stored(item.resolved), blobSize: item.resolved.row.blobSize, limit: limit, body)
    }

    /// The instance's attributes as DICOM JSON, read from the start of its decrypted bytes only (up to
    /// the pixel data; at most 16 MiB of header is read).
    public func metadataJSON(_ item: RetrievableInstance) throws -> String {
        for limit in Self.headerPrefixLimits {
            // A prefix that ends between two elements before the Pixel Data parses too, without the
            // attributes after the cut: only one that reaches the Pixel Data, or the file's end, is used.
            let (json, complete): (String?, Bool) = try withDecryptedPrefix(item, limit: limit) { prefix in
                let complete = prefix.count < limit
                guard complete || DICOMPixelLayout.reachesPixelData(prefix) else { return (nil, false) }
                return (try? DICOMParser.json(bytes: prefix), complete)
            }
            if let json { return json }
            if complete { break }
        }
        throw VaultError.notFound("the instance's attributes could not be read")
    }
}

extension Vault {
    /// The PS3.10 file meta to send in front of an instance stored without one (no "DICM" at offset
    /// 128), built from its decrypted start; nil when its bytes already start with a Part 10 header,
    /// or when the header cannot be read from the first 16 MiB (the instance is then sent as stored).
    /// Only the first chunk is decrypted for an instance with a header.
    public func part10FileMeta(_ item: RetrievableInstance) throws -> [UInt8]? {
        try instanceReader.part10FileMeta(try stored(item.resolved), blobSize: item.resolved.row.blobSize)
    }
}

extension InstanceReader {
    /// Hands `body` the first `limit` decrypted bytes of the instance (fewer if it is shorter), then
    /// wipes them. Only the chunks of the prefix are decrypted (format 1: decryption stops once the
    /// prefix is complete).
    func withDecryptedPrefix<R>(_ instance: StoredInstance, blobSize: Int64, limit: Int, _ body: ([UInt8]) throws -> R) throws -> R {
        if let blob = try openRanges(instance, blobSize: blobSize) {
            var prefix = try blob.read(0, limit)
            defer { wipe(&prefix) }
            return try body(prefix)
        }
        var prefix: [UInt8] = []
        prefix.reserveCapacity(min(limit, Int(instance.plainSize)))
        defer { wipe(&prefix) }
        do {
            try readRecorded(instance, fingerprint: false) { chunk in
                prefix += chunk.prefix(limit - prefix.count)
                if prefix.count >= limit { throw EnoughBytes() }
            }
        } catch is EnoughBytes {}
        return try body(prefix)
    }

    /// `Vault.part10FileMeta` for an instance whose key is at hand (a retrieval unwraps each patient's once).
    func part10FileMeta(_ instance: StoredInstance, blobSize: Int64) throws -> [UInt8]? {
        if try withDecryptedPrefix(instance, blobSize: blobSize, limit: 132, { DICOMFileMeta.hasPart10Header($0) }) { return nil }
        for limit in Vault.headerPrefixLimits {
            let (meta, complete): ([UInt8]??, Bool) = try withDecryptedPrefix(instance, blobSize: blobSize, limit: limit) { prefix in
                let complete = Int64(prefix.count) >= instance.plainSize
                return ((try? DICOMFileMeta.forStoredBytes(prefix: prefix, complete: complete)), complete)
            }
            if let meta { return meta }
            if complete { break }
        }
        return nil
    }
}
