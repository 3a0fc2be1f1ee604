// The catalog's consistent copy for a snapshot, and the catalog.generation trigger.
import Foundation
import GRDB
package import VaultFormats
#if canImport(Glibc)
import Glibc
#endif

/// A copy of the catalog taken for a snapshot: the generation it holds every commit up to, its blob
/// list (sorted by id, with the ciphertext hash where recorded), and one patient's ref and wrapped key
/// so that the caller can check that its master key opens this catalog.
package struct CatalogCopy {
    package let generation: UInt64
    package let blobs: [(id: String, size: Int64, hash: [UInt8]?)]
    package let patientSample: (ref: [UInt8], wrapped: [UInt8])?
}

extension Catalog {
    /// Copies the catalog to `path` (SQLite online backup, from one read transaction started under
    /// the write lock), without this vault's work in progress, as one self-contained file.
    package func copy(to path: String, vaultRoot: String) throws -> CatalogCopy {
        var rows: [(id: String, size: Int64, hash: [UInt8]?)] = []
        var patientSample: (ref: [UInt8], wrapped: [UInt8])?
        var g: UInt64 = 0
        var stage = "opening the staging copy " + path
        do {
            let copy = try DatabaseQueue(path: path)
            _ = chmod(path, 0o600)
            stage = "copying the catalog into " + path
            // Under SQLite's write lock: every commit that raised catalog.generation up to the value
            // read here has finished, and none can start until the copy is taken.
            // A reader connection's snapshot is taken while this process holds the write lock, and the
            // copy is made from that snapshot after the lock is released (a backup cannot read through
            // the connection that holds the write lock).
            var readerConfig = Configuration()
            readerConfig.busyMode = .timeout(30)
            readerConfig.readonly = true
            readerConfig.allowsUnsafeTransactions = true  // the read transaction spans two accesses
            let reader = try DatabaseQueue(path: self.path, configuration: readerConfig)
            try pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    g = CatalogGeneration.read(vault: vaultRoot)
                    // Before the copy can become a snapshot: the next commit must raise the counter.
                    try CatalogGeneration.recordCopied(g, vault: vaultRoot)
                    try reader.inDatabase { r in
                        try r.execute(sql: "BEGIN DEFERRED")
                        _ = try Int.fetchOne(r, sql: "SELECT count(*) FROM sqlite_master")
                    }
                    return .rollback
                }
            }
            try reader.inDatabase { r in
                defer { try? r.execute(sql: "ROLLBACK") }
                try copy.writeWithoutTransaction { dest in try r.backup(to: dest) }
            }
            try reader.close()
            stage = "preparing the staging copy " + path
            // Work in progress belongs to this vault, not to a restore of it: a restored vault must not
            // finish (and log again) an erasure that was finished here.
            try copy.write { db in try db.execute(sql: "DELETE FROM pendingErasure; DELETE FROM pendingBlob") }
            try copy.writeWithoutTransaction { db in
                // One self-contained file: no -wal beside it.
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
            }
            stage = "reading the blob list from the staging copy"
            try copy.read { db in
                rows = try Row.fetchAll(
                    db, sql: "SELECT i.blobID, i.blobSize, h.hash FROM instance i LEFT JOIN blobHash h ON h.blobID = i.blobID ORDER BY i.blobID"
                ).map { (id: $0["blobID"], size: $0["blobSize"], hash: ($0["hash"] as Data?).map { Array($0) }) }
                patientSample = try Row.fetchOne(db, sql: "SELECT ref, wrappedKey FROM patient LIMIT 1").map {
                    (ref: Array($0["ref"] as Data), wrapped: Array($0["wrappedKey"] as Data))
                }
            }
            try copy.close()
        } catch let e as DatabaseError {
            throw SnapshotError.catalog(Self.describe(e, while: stage))
        }
        return CatalogCopy(generation: g, blobs: rows, patientSample: patientSample)
    }

    /// What failed, from SQLite's result code: a failed backup step leaves the message of the other
    /// connection, which says "not an error".
    static func describe(_ e: DatabaseError, while stage: String) -> String {
        let primary = e.extendedResultCode.rawValue & 0xFF
        let known: [Int32: String] = [
            5: "the database is busy", 6: "a table is locked", 7: "out of memory", 8: "the database is read-only",
            10: "disk I/O error", 11: "the database file is malformed", 13: "the disk is full; free space and run it again",
            14: "unable to open the database file", 26: "not a database file",
        ]
        var why = known[primary] ?? "SQLite result code \(e.extendedResultCode.rawValue)"
        if let m = e.message, !m.isEmpty, m != "not an error", known[primary] == nil || !why.hasPrefix(m) { why += " (\(m))" }
        return "\(stage): \(why)"
    }

}

/// Raises catalog.generation before a transaction that changed the catalog commits, when a snapshot
/// copy may hold its current value (`CatalogGeneration.raise`). A failure to write it (full disk) rolls
/// the transaction back: a change the snapshot check cannot see is not committed.
final class CatalogGenerationObserver: TransactionObserver, @unchecked Sendable {
    private let root: String
    private var changed = false  // only touched on the pool's writer queue
    init(root: String) { self.root = root }
    func observes(eventsOfKind eventKind: DatabaseEventKind) -> Bool { true }
    func databaseDidChange(with event: DatabaseEvent) { changed = true }
    func databaseWillCommit() throws {
        guard changed else { return }
        if let raised = CatalogGeneration.raise(vault: root) { try CatalogGeneration.write(raised, vault: root) }
    }
    func databaseDidCommit(_ db: Database) { changed = false }
    func databaseDidRollback(_ db: Database) { changed = false }
}
