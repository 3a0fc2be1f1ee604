// Every other statement the engine needs, as methods named for what they do. The engine passes blind
// indexes, sealed boxes and closures for its own crypto; SQL and the pool never leave this module.
public import Foundation
import GRDB
package import VaultCrypto
import VaultFormats
import VaultIO

// MARK: Browsing (ls, QIDO)

/// The whole catalog decrypted in memory, for listing and filtering. Built per request; never written.
package struct OpenedCatalog {
    package struct Patient { package let id: Int64; package let ref: [UInt8]; package let wrappedKey: [UInt8]; package let record: PatientRecord }
    package struct Study { package let id: Int64; package let patientID: Int64; package let record: StudyRecord }
    package struct Series { package let id: Int64; package let studyID: Int64; package let record: SeriesRecord }
    package struct Instance { package let row: InstanceRow; package let record: InstanceRecord }
    package var patients: [Int64: Patient] = [:]
    package var studies: [Int64: Study] = [:]
    package var series: [Int64: Series] = [:]
    package var instances: [Instance] = []
    /// Instance count and clear bytes per series, from clear columns (no record decrypted).
    package var tally: [Int64: (count: Int, bytes: Int64)] = [:]
}

/// Which part of the catalog `Catalog.open` decrypts: everything, or what one blind index leads to
/// (a patient's rows; one study with its patient and series; one series with its study and patient —
/// for series and instance listings: its study's other series are not read).
/// A scoped open reads rows through the UNIQUE or indexed blind-index columns: its cost does not grow
/// with the vault.
package enum CatalogScope: Sendable {
    case all
    case patient(idIndex: [UInt8])
    case study(uidIndex: [UInt8])
    case series(uidIndex: [UInt8])
}

extension Catalog {
    /// Decrypts catalog rows. With `patientIDIndex`, only that patient's rows. Instance records are
    /// decrypted only when `instances` is true; otherwise only their per-series tally is read.
    package func open(patientIDIndex: [UInt8]?, instances: Bool, sealer: RecordSealer) throws -> OpenedCatalog {
        try open(scope: patientIDIndex.map { .patient(idIndex: $0) } ?? .all, instances: instances, sealer: sealer)
    }

    /// Decrypts the rows of `scope` (see `CatalogScope`). Instance records are decrypted only when
    /// `instances` is true; otherwise only their per-series tally is read.
    package func open(scope: CatalogScope, instances: Bool, sealer: RecordSealer) throws -> OpenedCatalog {
        try pool.read { db in
            var out = OpenedCatalog()
            func list(_ ids: some Collection<Int64>) -> String { "(" + ids.map(String.init).joined(separator: ",") + ")" }
            // The rows the scope names, then the rows above them (by id) and below them (by parent id).
            var patientRows: [Row] = [], studyRows: [Row]? = nil, seriesRows: [Row]? = nil
            switch scope {
            case .all:
                patientRows = try Row.fetchAll(db, sql: "SELECT * FROM patient")
            case .patient(let index):
                patientRows = try Row.fetchAll(db, sql: "SELECT * FROM patient WHERE patientIDIndex = ?", arguments: [Data(index)])
            case .study(let index):
                let studies = try Row.fetchAll(db, sql: "SELECT * FROM study WHERE uidIndex = ?", arguments: [Data(index)])
                patientRows = try Row.fetchAll(db, sql: "SELECT * FROM patient WHERE id IN " + list(studies.map { $0["patientID"] as Int64 }))
                studyRows = studies
            case .series(let index):
                let series = try Row.fetchAll(db, sql: "SELECT * FROM series WHERE uidIndex = ?", arguments: [Data(index)])
                let studies = try Row.fetchAll(db, sql: "SELECT * FROM study WHERE id IN " + list(series.map { $0["studyID"] as Int64 }))
                patientRows = try Row.fetchAll(db, sql: "SELECT * FROM patient WHERE id IN " + list(studies.map { $0["patientID"] as Int64 }))
                (studyRows, seriesRows) = (studies, series)
            }
            for r in patientRows {
                let ref = Array(r["ref"] as Data)
                let rec = try sealer.open(PatientRecord.self, Array(r["sealed"] as Data), table: "patient", index: ref)
                out.patients[r["id"]] = .init(id: r["id"], ref: ref, wrappedKey: Array(r["wrappedKey"] as Data), record: rec)
            }
            guard !out.patients.isEmpty else { return out }
            let everything = if case .all = scope { true } else { false }
            for r in try studyRows ?? Row.fetchAll(db, sql: "SELECT * FROM study" + (everything ? "" : " WHERE patientID IN " + list(out.patients.keys))) {
                let rec = try sealer.open(StudyRecord.self, Array(r["sealed"] as Data), table: "study", index: Array(r["uidIndex"] as Data))
                out.studies[r["id"]] = .init(id: r["id"], patientID: r["patientID"], record: rec)
            }
            for r in try seriesRows ?? Row.fetchAll(db, sql: "SELECT * FROM series" + (everything ? "" : " WHERE studyID IN " + list(out.studies.keys))) {
                let rec = try sealer.open(SeriesRecord.self, Array(r["sealed"] as Data), table: "series", index: Array(r["uidIndex"] as Data))
                out.series[r["id"]] = .init(id: r["id"], studyID: r["studyID"], record: rec)
            }
            let seriesFilter = everything ? "" : " WHERE seriesID IN " + list(out.series.keys)
            guard instances else {
                let sql = "SELECT seriesID, COUNT(*) AS n, SUM(plainSize) AS bytes FROM instance" + seriesFilter + " GROUP BY seriesID"
                for r in try Row.fetchAll(db, sql: sql) { out.tally[r["seriesID"]] = (r["n"], r["bytes"]) }
                return out
            }
            for r in try Row.fetchAll(db, sql: "SELECT * FROM instance" + seriesFilter) {
                let row = Catalog.instanceRow(r)
                let rec = try sealer.open(InstanceRecord.self, row.sealed, table: "instance", index: row.uidIndex)
                out.instances.append(.init(row: row, record: rec))
            }
            return out
        }
    }

    // MARK: Export, WADO: instances with their series, study and patient

    package enum Level: Sendable { case study, series, instance }

    /// One instance row with the sealed records and the wrapped key of everything above it.
    package struct InstanceWithParents {
        package let row: InstanceRow
        package let seriesIndex: [UInt8], seriesSealed: [UInt8]
        package let studyIndex: [UInt8], studySealed: [UInt8]
        package let patientRef: [UInt8], wrappedPatientKey: [UInt8], patientSealed: [UInt8]
    }

    /// The instances of the study, series or instance with this blind index, in row order.
    package func instances(at level: Level, index: [UInt8]) throws -> [InstanceWithParents] {
        let column = switch level {
            case .study: "st.uidIndex"
            case .series: "se.uidIndex"
            case .instance: "i.uidIndex"
            }
        return try pool.read { db in
            // Columns by position: GRDB's lookup by name costs a case-folded search per access, which
            // dominated resolving a 300-instance series.
            func bytes(_ r: Row, _ i: Int) -> [UInt8] { Array(r[i] as Data) }
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT i.id, i.seriesID, i.uidIndex, i.blobID, i.plainSize, i.blobSize, i.contentMAC, i.sealed,
                           se.uidIndex, se.sealed, st.uidIndex, st.sealed, p.ref, p.wrappedKey, p.sealed
                    FROM instance i JOIN series se ON se.id = i.seriesID JOIN study st ON st.id = se.studyID
                    JOIN patient p ON p.id = st.patientID
                    WHERE \(column) = ? ORDER BY i.id
                    """, arguments: [Data(index)]
            ).map { r in
                InstanceWithParents(
                    row: InstanceRow(
                        id: r[0], seriesID: r[1], uidIndex: bytes(r, 2), blobID: r[3], plainSize: r[4], blobSize: r[5],
                        contentMAC: bytes(r, 6), sealed: bytes(r, 7)),
                    seriesIndex: bytes(r, 8), seriesSealed: bytes(r, 9), studyIndex: bytes(r, 10), studySealed: bytes(r, 11),
                    patientRef: bytes(r, 12), wrappedPatientKey: bytes(r, 13), patientSealed: bytes(r, 14))
            }
        }
    }

    // MARK: Creating a vault, rotating its master key

    package func storeVaultKeys(_ keys: [(name: String, value: [UInt8])]) throws {
        try pool.write { db in
            for k in keys { try db.execute(sql: "INSERT INTO vaultKey(name, value) VALUES (?, ?)", arguments: [k.name, Data(k.value)]) }
        }
    }

    /// Re-wraps every patient key and reseals every record in one transaction (`key rotate`).
    /// `patient` maps (ref, wrapped key, sealed) to the new (wrapped key, sealed); `record` maps
    /// (table, index, sealed) to the new sealed box; `beforeCommit` runs last inside the transaction.
    package func rewrapAll(
        patient: ([UInt8], [UInt8], [UInt8]) throws -> (wrappedKey: [UInt8], sealed: [UInt8]),
        record: (String, [UInt8], [UInt8]) throws -> [UInt8],
        vaultKeys: [(name: String, value: [UInt8])], beforeCommit: () -> Void
    ) throws {
        try pool.write { db in
            for r in try Row.fetchAll(db, sql: "SELECT id, ref, wrappedKey, sealed FROM patient") {
                let new = try patient(Array(r["ref"] as Data), Array(r["wrappedKey"] as Data), Array(r["sealed"] as Data))
                try db.execute(
                    sql: "UPDATE patient SET wrappedKey = ?, sealed = ? WHERE id = ?",
                    arguments: [Data(new.wrappedKey), Data(new.sealed), r["id"] as Int64])
            }
            for table in ["study", "series", "instance"] {
                for r in try Row.fetchAll(db, sql: "SELECT id, uidIndex, sealed FROM \(table)") {
                    let resealed = try record(table, Array(r["uidIndex"] as Data), Array(r["sealed"] as Data))
                    try db.execute(sql: "UPDATE \(table) SET sealed = ? WHERE id = ?", arguments: [Data(resealed), r["id"] as Int64])
                }
            }
            for k in vaultKeys { try db.execute(sql: "UPDATE vaultKey SET value = ? WHERE name = ?", arguments: [Data(k.value), k.name]) }
            beforeCommit()
        }
    }

    // MARK: Verify

    /// What `verify` reads from the catalog, in one read transaction.
    package struct Scan {
        package var quickCheck: [String] = []
        /// Rows whose sealed record does not authenticate: (table, row id).
        package var unauthentic: [(table: String, id: Int64)] = []
        package var patients = 0, studies = 0, series = 0, instances = 0
        /// Every instance linked to a patient, by blob id, with the patient's ref and wrapped key.
        package var linked: [(row: InstanceRow, patientRef: [UInt8], wrappedKey: [UInt8])] = []
        package var pendingBlobs = Set<String>()
    }

    package func scan(authenticates: (_ table: String, _ index: [UInt8], _ sealed: [UInt8]) -> Bool) throws -> Scan {
        try pool.read { db in
            var scan = Scan()
            scan.quickCheck = try String.fetchAll(db, sql: "PRAGMA quick_check")
            for (table, index) in [("patient", "ref"), ("study", "uidIndex"), ("series", "uidIndex"), ("instance", "uidIndex")] {
                for r in try Row.fetchAll(db, sql: "SELECT id, \(index) AS idx, sealed FROM \(table)")
                where !authenticates(table, Array(r["idx"] as Data), Array(r["sealed"] as Data)) {
                    scan.unauthentic.append((table, r["id"]))
                }
            }
            scan.patients = try Int.fetchOne(db, sql: "SELECT count(*) FROM patient") ?? 0
            scan.studies = try Int.fetchOne(db, sql: "SELECT count(*) FROM study") ?? 0
            scan.series = try Int.fetchOne(db, sql: "SELECT count(*) FROM series") ?? 0
            for r in try Row.fetchAll(db, sql: """
                SELECT i.*, p.ref AS pRef, p.wrappedKey AS pKey FROM instance i
                JOIN series se ON se.id = i.seriesID JOIN study st ON st.id = se.studyID JOIN patient p ON p.id = st.patientID
                ORDER BY i.blobID
                """)
            {
                scan.linked.append((Catalog.instanceRow(r), Array(r["pRef"] as Data), Array(r["pKey"] as Data)))
            }
            scan.instances = try Int.fetchOne(db, sql: "SELECT count(*) FROM instance") ?? 0
            scan.pendingBlobs = Set(try String.fetchAll(db, sql: "SELECT blobID FROM pendingBlob"))
            return scan
        }
    }

    // MARK: Pending blobs (renamed into blobs/, not yet or no longer referenced)

    /// Pending blobs no instance refers to: what a crash or an erasure left to delete.
    package func unreferencedPendingBlobs() throws -> [String] {
        try pool.read { db in
            try String.fetchAll(db, sql: "SELECT blobID FROM pendingBlob WHERE blobID NOT IN (SELECT blobID FROM instance)")
        }
    }

    package func removePendingBlobs(_ ids: [String]) throws {
        try pool.write { db in
            for id in ids { try db.execute(sql: "DELETE FROM pendingBlob WHERE blobID = ?", arguments: [id]) }
        }
    }

    package func removeAllPendingBlobs() throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM pendingBlob") }
    }

    package func addPendingBlobs(_ ids: [String]) throws {
        try pool.write { db in
            for id in ids { try db.execute(sql: "INSERT INTO pendingBlob(blobID) VALUES (?)", arguments: [id]) }
        }
    }

    /// Truncates the WAL: after an erasure it holds the earlier page images of the deleted rows.
    package func truncateWriteAheadLog() throws {
        try pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
    }

    // MARK: Erasure (forget, retention)

    package func patients(patientIDIndex: [UInt8]) throws -> [(id: Int64, ref: [UInt8])] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, ref FROM patient WHERE patientIDIndex = ?", arguments: [Data(patientIDIndex)]).map {
                (id: $0["id"], ref: Array($0["ref"] as Data))
            }
        }
    }

    /// Studies, instances and clear bytes that erasing these patients (all their studies) and studies removes.
    package func erasureCounts(patients: [Int64], studies: [Int64]) throws -> (studies: Int, instances: Int, bytes: Int64) {
        try pool.read { db in
            let studyIDs = try Self.studyIDs(db, patients: patients, studies: studies)
            let list = studyIDs.map(String.init).joined(separator: ",")
            let row = try Row.fetchOne(
                db, sql: """
                    SELECT COUNT(*) AS n, COALESCE(SUM(i.plainSize), 0) AS bytes FROM instance i
                    JOIN series se ON se.id = i.seriesID WHERE se.studyID IN (\(list))
                    """)
            return (studyIDs.count, row?["n"] ?? 0, row?["bytes"] ?? 0)
        }
    }

    private static func studyIDs(_ db: Database, patients: [Int64], studies: [Int64]) throws -> [Int64] {
        let ofPatients = try Int64.fetchAll(db, sql: "SELECT id FROM study WHERE patientID IN (\(patients.map(String.init).joined(separator: ",")))")
        return Array(Set(ofPatients + studies)).sorted()
    }

    /// One transaction: lists the blobs in `pendingBlob`, deletes the studies (cascading to series and
    /// instances) and the patients (with their wrapped keys), and records the erasure in `pendingErasure`.
    package func erase(patients: [Int64], studies: [Int64], action: String, record: String) throws {
        try pool.write { db in
            let studyIDs = try Self.studyIDs(db, patients: patients, studies: studies)
            let list = studyIDs.map(String.init).joined(separator: ",")
            let blobs = try String.fetchAll(
                db, sql: "SELECT i.blobID FROM instance i JOIN series se ON se.id = i.seriesID WHERE se.studyID IN (\(list))")
            for id in blobs { try db.execute(sql: "INSERT OR IGNORE INTO pendingBlob(blobID) VALUES (?)", arguments: [id]) }
            try db.execute(sql: "DELETE FROM study WHERE id IN (\(list))")
            try db.execute(sql: "DELETE FROM patient WHERE id IN (\(patients.map(String.init).joined(separator: ",")))")
            try db.execute(sql: "INSERT INTO pendingErasure(action, summary) VALUES (?, ?)", arguments: [action, record])
        }
    }

    package func pendingErasures() throws -> [(id: Int64, action: String, record: String)] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT id, action, summary FROM pendingErasure ORDER BY id").map {
                (id: $0["id"] as Int64, action: $0["action"] as String, record: $0["summary"] as String)
            }
        }
    }

    package func removePendingErasure(id: Int64) throws {
        try pool.write { db in try db.execute(sql: "DELETE FROM pendingErasure WHERE id = ?", arguments: [id]) }
    }

    // MARK: Blob hashes for the backup manifest

    /// Instances whose blob's ciphertext hash is not recorded yet (imported by an older release).
    package func blobsWithoutHash() throws -> [(id: String, size: Int64)] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "SELECT blobID, blobSize FROM instance WHERE blobID NOT IN (SELECT blobID FROM blobHash)")
                .map { (id: $0["blobID"] as String, size: $0["blobSize"] as Int64) }
        }
    }

    package func recordBlobHashes(_ hashes: [(id: String, hash: [UInt8])]) throws {
        try pool.write { db in
            for (id, h) in hashes {
                // The instance may have been deleted meanwhile (forget): then there is nothing to record.
                try db.execute(
                    sql: "INSERT OR REPLACE INTO blobHash(blobID, hash) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM instance WHERE blobID = ?)",
                    arguments: [id, Data(h), id])
            }
        }
    }
}
