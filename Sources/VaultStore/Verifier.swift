// `medvault verify`: opens every blob, checks every tag and fingerprint, and checks that the catalog
// and the blob directory correspond exactly. Read-only; safe to run while an import is writing.
import VaultFormats
import VaultIO
import Foundation
import VaultCatalog
import VaultCrypto

public struct VerifyProblem: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case missing, truncated, tampered, swapped, orphan, trailingData = "trailing-data", unreadable, catalog
    }
    public let kind: Kind
    /// The blob id (random, safe to print) or catalog object concerned.
    public let subject: String
    public let detail: String
    public var description: String { "\(kind.rawValue): \(subject): \(detail)" }
}

public struct VerifyProgress: Sendable {
    public var blobsDone: Int
    public var blobsTotal: Int
    public var bytesDone: Int64
    public var bytesTotal: Int64
}

public struct VerifyReport: Sendable {
    public var blobsChecked = 0
    public var bytesChecked: Int64 = 0
    public var patients = 0, studies = 0, series = 0
    /// Blobs of an import interrupted before its commit: harmless, removed by the next import.
    public var interruptedLeftovers = 0
    /// Files in snapshots/ left by an interrupted publish (swept by the next publish or writer).
    public var snapshotLeftovers: [String] = []
    /// The newest snapshot is older than the catalog (a writer stopped between commit and publish).
    public var snapshotStale = false
    public var problems: [VerifyProblem] = []
    public var ok: Bool { problems.isEmpty }
}

extension Vault {
    public func verify(progress: (VerifyProgress) -> Void = { _ in }) throws -> VerifyReport {
        var report = VerifyReport()
        // 1. The blob files on disk, listed before the catalog is read (see "pending" below).
        let store = blobStore
        let listing = store.list()
        var onDisk: [String: Int64] = [:]  // id → size
        for (id, size) in listing.blobs { onDisk[id.hexString] = size }
        for name in listing.foreign {
            let detail = name.split(separator: "/").count == 2 ? "unexpected file in blobs/" : "not a blob name"
            report.problems.append(.init(kind: .orphan, subject: name, detail: detail))
        }
        // 2. The catalog, in one read transaction. Every sealed record must open.
        struct Entry { let inst: InstanceRow; let ref: [UInt8]; let wrapped: [UInt8] }
        var entries: [Entry] = []
        var pending = Set<String>()
        var problems: [VerifyProblem] = []
        let scan = try catalog.scan(authenticates: { sealer.authenticates($2, table: $0, index: $1) })
        if scan.quickCheck != ["ok"] {
            problems.append(.init(kind: .catalog, subject: "catalog.sqlite", detail: scan.quickCheck.prefix(3).joined(separator: "; ")))
        }
        for bad in scan.unauthentic {
            problems.append(.init(kind: .catalog, subject: "\(bad.table) #\(bad.id)", detail: "sealed record fails authentication"))
        }
        report.patients = scan.patients
        report.studies = scan.studies
        report.series = scan.series
        entries = scan.linked.map { Entry(inst: $0.row, ref: $0.patientRef, wrapped: $0.wrappedKey) }
        if scan.instances != entries.count {
            problems.append(.init(kind: .catalog, subject: "instance", detail: "\(scan.instances - entries.count) instance rows are not linked to a patient"))
        }
        pending = scan.pendingBlobs
        report.problems += problems

        // 3. Every catalogued blob: present, right size, every tag, the clear-bytes fingerprint.
        var state = VerifyProgress(blobsDone: 0, blobsTotal: entries.count, bytesDone: 0, bytesTotal: entries.reduce(0) { $0 + $1.inst.blobSize })
        progress(state)
        var keys: [[UInt8]: SymmetricKey] = [:]
        var lastReport = Date()
        for e in entries {
            defer {
                state.blobsDone += 1
                state.bytesDone += e.inst.blobSize
                if Date().timeIntervalSince(lastReport) > 0.1 || state.blobsDone == state.blobsTotal {
                    progress(state)
                    lastReport = Date()
                }
            }
            let name = e.inst.blobID
            guard let id = BlobID(hex: name) else {
                report.problems.append(.init(kind: .catalog, subject: name, detail: "catalog names an invalid blob id"))
                continue
            }
            guard let size = onDisk.removeValue(forKey: name) ?? store.size(id) else {
                report.problems.append(.init(kind: .missing, subject: name, detail: "the catalog lists this blob but the file is missing"))
                continue
            }
            // A blob under another blob's name usually has another size too: name it for what it is.
            if size != e.inst.blobSize, let reader = try? store.open(id), let found = BlobCodec.headerID(from: reader), found != id {
                report.problems.append(.init(kind: .swapped, subject: name, detail: BlobError.idMismatch.description))
                continue
            }
            if size < e.inst.blobSize {
                report.problems.append(.init(kind: .truncated, subject: name, detail: "\(size) of \(e.inst.blobSize) bytes"))
                continue
            }
            if size > e.inst.blobSize {
                report.problems.append(.init(kind: .trailingData, subject: name, detail: "\(size - e.inst.blobSize) bytes more than written"))
                continue
            }
            let key: SymmetricKey
            if let k = keys[e.ref] { key = k } else {
                guard let k = try? patientKey(ref: e.ref, wrapped: e.wrapped) else {
                    report.problems.append(.init(kind: .catalog, subject: name, detail: "the patient key does not unwrap"))
                    continue
                }
                keys[e.ref] = k
                key = k
            }
            do {
                let read = try instanceReader.read(
                    StoredInstance(blobID: id, patientKey: key, plainSize: e.inst.plainSize, contentMAC: e.inst.contentMAC), fingerprint: true
                ) { _ in }
                if !read.isTheRecordedFile {
                    report.problems.append(.init(kind: .swapped, subject: name, detail: "decrypts, but is not the file the catalog recorded"))
                }
                report.blobsChecked += 1
                report.bytesChecked += read.digest.blobSize
            } catch let error as BlobError {
                let kind: VerifyProblem.Kind =
                    switch error {
                    case .missing: .missing
                    case .truncated: .truncated
                    case .idMismatch: .swapped
                    case .trailingData: .trailingData
                    case .tampered, .notABlob, .unsupportedVersion: .tampered
                    case .io: .unreadable
                    }
                report.problems.append(.init(kind: kind, subject: name, detail: error.description))
            } catch {
                report.problems.append(.init(kind: .unreadable, subject: name, detail: String(describing: error)))
            }
        }
        // 4. What is left on disk is not in the catalog: an import in flight or interrupted (pending),
        // or an orphan.
        for (name, _) in onDisk.sorted(by: { $0.key < $1.key }) {
            if pending.contains(name) {
                report.interruptedLeftovers += 1
            } else {
                report.problems.append(.init(kind: .orphan, subject: name, detail: "blob file not listed in the catalog"))
            }
        }
        report.snapshotLeftovers = snapshotLeftovers()
        report.snapshotStale = snapshotIsStale()
        return report
    }
}
