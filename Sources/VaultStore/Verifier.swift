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
    /// Checks the whole vault: the blob store's listing, the catalog (every sealed record), every
    /// catalogued blob read back in full, what is left over, and the snapshots.
    public func verify(progress: (VerifyProgress) -> Void = { _ in }) throws -> VerifyReport {
        var report = VerifyReport()
        // 1. The blobs in the store, listed before the catalog is read (see "pending" below).
        var onDisk = listBlobs(into: &report)
        // 2. The catalog, in one read transaction. Every sealed record must open.
        let scan = try scanCatalog(into: &report)
        // 3. Every catalogued blob: present, right size, every tag, the clear-bytes fingerprint.
        var state = VerifyProgress(
            blobsDone: 0, blobsTotal: scan.linked.count, bytesDone: 0, bytesTotal: scan.linked.reduce(0) { $0 + $1.row.blobSize })
        progress(state)
        var keys: [[UInt8]: SymmetricKey] = [:]
        var lastReport = Date()
        for e in scan.linked {
            checkBlob(e.row, patientRef: e.patientRef, wrappedKey: e.wrappedKey, onDisk: &onDisk, keys: &keys, into: &report)
            state.blobsDone += 1
            state.bytesDone += e.row.blobSize
            if Date().timeIntervalSince(lastReport) > 0.1 || state.blobsDone == state.blobsTotal {
                progress(state)
                lastReport = Date()
            }
        }
        // 4. What is left in the store is not in the catalog: an import in flight or interrupted
        // (pending), or an orphan.
        for (name, _) in onDisk.sorted(by: { $0.key < $1.key }) {
            if scan.pendingBlobs.contains(name) {
                report.interruptedLeftovers += 1
            } else {
                report.problems.append(.init(kind: .orphan, subject: name, detail: "blob file not listed in the catalog"))
            }
        }
        report.snapshotLeftovers = snapshotLeftovers()
        report.snapshotStale = snapshotIsStale()
        return report
    }

    /// The store's blobs by id (hex) with their sizes; anything else in it is an orphan problem.
    private func listBlobs(into report: inout VerifyReport) -> [String: Int64] {
        let listing = blobStore.list()
        var onDisk: [String: Int64] = [:]
        for (id, size) in listing.blobs { onDisk[id.hexString] = size }
        for name in listing.foreign {
            let detail = name.split(separator: "/").count == 2 ? "unexpected file in blobs/" : "not a blob name"
            report.problems.append(.init(kind: .orphan, subject: name, detail: detail))
        }
        return onDisk
    }

    /// The catalog's integrity and counts.
    private func scanCatalog(into report: inout VerifyReport) throws -> Catalog.Scan {
        let scan = try catalog.scan(authenticates: { sealer.authenticates($2, table: $0, index: $1) })
        if scan.quickCheck != ["ok"] {
            report.problems.append(.init(kind: .catalog, subject: "catalog.sqlite", detail: scan.quickCheck.prefix(3).joined(separator: "; ")))
        }
        for bad in scan.unauthentic {
            report.problems.append(.init(kind: .catalog, subject: "\(bad.table) #\(bad.id)", detail: "sealed record fails authentication"))
        }
        report.patients = scan.patients
        report.studies = scan.studies
        report.series = scan.series
        if scan.instances != scan.linked.count {
            report.problems.append(
                .init(kind: .catalog, subject: "instance", detail: "\(scan.instances - scan.linked.count) instance rows are not linked to a patient"))
        }
        return scan
    }

    /// One catalogued blob: present, its size, then read back in full through the instance reader.
    private func checkBlob(
        _ row: InstanceRow, patientRef: [UInt8], wrappedKey: [UInt8], onDisk: inout [String: Int64], keys: inout [[UInt8]: SymmetricKey],
        into report: inout VerifyReport
    ) {
        let name = row.blobID
        func problem(_ kind: VerifyProblem.Kind, _ detail: String) { report.problems.append(.init(kind: kind, subject: name, detail: detail)) }
        guard let id = BlobID(hex: name) else { return problem(.catalog, "catalog names an invalid blob id") }
        let store = blobStore
        guard let size = onDisk.removeValue(forKey: name) ?? store.size(id) else {
            return problem(.missing, "the catalog lists this blob but the file is missing")
        }
        // A blob under another blob's name usually has another size too: name it for what it is.
        if size != row.blobSize, let reader = try? store.open(id), let found = BlobCodec.headerID(from: reader), found != id {
            return problem(.swapped, BlobError.idMismatch.description)
        }
        if size < row.blobSize { return problem(.truncated, "\(size) of \(row.blobSize) bytes") }
        if size > row.blobSize { return problem(.trailingData, "\(size - row.blobSize) bytes more than written") }
        let key: SymmetricKey
        if let k = keys[patientRef] { key = k } else {
            guard let k = try? patientKey(ref: patientRef, wrapped: wrappedKey) else { return problem(.catalog, "the patient key does not unwrap") }
            keys[patientRef] = k
            key = k
        }
        do {
            let read = try instanceReader.read(
                StoredInstance(blobID: id, patientKey: key, plainSize: row.plainSize, contentMAC: row.contentMAC), fingerprint: true
            ) { _ in }
            if !read.isTheRecordedFile { problem(.swapped, "decrypts, but is not the file the catalog recorded") }
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
            problem(kind, error.description)
        } catch {
            problem(.unreadable, String(describing: error))
        }
    }
}
