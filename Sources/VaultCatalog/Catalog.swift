// The sealed catalog: SQLite (WAL) through GRDB. Every identifying value is an AEAD box; lookups use
// blind indexes. Sizes, counts and random blob ids are the only clear values. See docs/file-format.md.
package import VaultIO
import Foundation
import GRDB
package import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

// MARK: Sealed record bodies (JSON inside an AEAD box)

public struct PatientRecord: Codable, Sendable, Equatable {
    public var name: String
    public var patientID: String
    public var issuer: String
    public var birthDate: String
    public var sex: String
    /// False when the file's character set could not be converted to UTF-8 here (values kept as read).
    public var characterSetConverted: Bool

    package init(name: String, patientID: String, issuer: String, birthDate: String, sex: String, characterSetConverted: Bool) {
        self.name = name
        self.patientID = patientID
        self.issuer = issuer
        self.birthDate = birthDate
        self.sex = sex
        self.characterSetConverted = characterSetConverted
    }
}

public struct StudyRecord: Codable, Sendable, Equatable {
    public var studyUID: String
    public var date: String
    public var time: String
    public var accessionNumber: String
    public var referringPhysician: String
    public var institution: String
    public var description: String
    public var studyID: String

    package init(studyUID: String, date: String, time: String, accessionNumber: String, referringPhysician: String, institution: String, description: String, studyID: String) {
        self.studyUID = studyUID
        self.date = date
        self.time = time
        self.accessionNumber = accessionNumber
        self.referringPhysician = referringPhysician
        self.institution = institution
        self.description = description
        self.studyID = studyID
    }
}

public struct SeriesRecord: Codable, Sendable, Equatable {
    public var seriesUID: String
    public var modality: String
    public var number: String
    public var description: String
    public var bodyPart: String
    public var performingPhysician: String

    package init(seriesUID: String, modality: String, number: String, description: String, bodyPart: String, performingPhysician: String) {
        self.seriesUID = seriesUID
        self.modality = modality
        self.number = number
        self.description = description
        self.bodyPart = bodyPart
        self.performingPhysician = performingPhysician
    }
}

public struct InstanceRecord: Codable, Sendable, Equatable {
    public var sopInstanceUID: String
    public var sopClassUID: String
    public var number: String
    public var transferSyntaxUID: String
    public var frames: String
    public var rows: String
    public var columns: String

    package init(sopInstanceUID: String, sopClassUID: String, number: String, transferSyntaxUID: String, frames: String, rows: String, columns: String) {
        self.sopInstanceUID = sopInstanceUID
        self.sopClassUID = sopClassUID
        self.number = number
        self.transferSyntaxUID = transferSyntaxUID
        self.frames = frames
        self.rows = rows
        self.columns = columns
    }
}

/// Seals and opens catalog records. The associated data names the table and the row's blind index, so a
/// sealed value cannot be moved to another row. Plaintexts are padded to 64 bytes so that a box's size
/// does not reveal the length of a name.
package struct RecordSealer: Sendable {
    package let key: SymmetricKey
    package static let padding = 64

    package init(key: SymmetricKey) { self.key = key }

    package func seal<T: Encodable>(_ record: T, table: String, index: [UInt8]) throws(JSONEncodingFailure) -> [UInt8] {
        var plain = try JSONFiles.encode(record, "a \(table) record")
        let padded = (plain.count / Self.padding + 1) * Self.padding
        plain += [UInt8](repeating: 0x20, count: padded - plain.count)  // JSON allows trailing spaces
        defer { wipe(&plain) }
        return AEAD.seal(plain, key: key, associatedData: Self.associatedData(table, index))
    }

    package func open<T: Decodable>(_ type: T.Type, _ box: [UInt8], table: String, index: [UInt8]) throws -> T {
        var plain = try AEAD.open(box, key: key, associatedData: Self.associatedData(table, index))
        defer { wipe(&plain) }
        return try JSONDecoder().decode(T.self, from: Data(plain))
    }

    /// Whether a sealed record is authentic for its place (table and row), without decoding it.
    package func authenticates(_ box: [UInt8], table: String, index: [UInt8]) -> Bool {
        guard var plain = try? AEAD.open(box, key: key, associatedData: Self.associatedData(table, index)) else { return false }
        wipe(&plain)
        return true
    }

    package static func associatedData(_ table: String, _ index: [UInt8]) -> [UInt8] {
        Array("medvault.v1.catalog|\(table)|".utf8) + index
    }
}

// MARK: Rows

package struct InstanceRow: Sendable {
    package var id: Int64
    package var seriesID: Int64
    package var uidIndex: [UInt8]
    package var blobID: String
    package var plainSize: Int64
    package var blobSize: Int64
    package var contentMAC: [UInt8]
    package var sealed: [UInt8]

    package init(
        id: Int64, seriesID: Int64, uidIndex: [UInt8], blobID: String, plainSize: Int64, blobSize: Int64, contentMAC: [UInt8],
        sealed: [UInt8]
    ) {
        self.id = id
        self.seriesID = seriesID
        self.uidIndex = uidIndex
        self.blobID = blobID
        self.plainSize = plainSize
        self.blobSize = blobSize
        self.contentMAC = contentMAC
        self.sealed = sealed
    }
}

/// The catalog database. Thread-safe (GRDB's `DatabasePool`): readers see a consistent snapshot
/// while one process writes.
package final class Catalog: Sendable {
    /// Module-internal: every statement is written in this module (issue 9).
    let pool: DatabasePool
    /// `catalog.sqlite`'s path.
    package let path: String

    package init(path: String) throws {
        self.path = path
        var config = Configuration()
        // Several processes (import, serve) share one vault: wait for the writer instead of failing.
        config.busyMode = .timeout(30)
        config.prepareDatabase { db in
            // Durability: a committed import survives power loss. Temporary tables stay in memory.
            // secure_delete: a deleted row (a forgotten patient's wrapped key) is overwritten with zeros,
            // not left in a free page.
            try db.execute(sql: "PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Self.migrator.migrate(pool)
        // Raises catalog.generation before each commit that changed something (CatalogCopy.swift).
        pool.add(transactionObserver: CatalogGenerationObserver(root: (path as NSString).deletingLastPathComponent), extent: .databaseLifetime)
        // Sealed or not, the catalog is nobody else's business: owner-only, whatever the umask.
        for suffix in ["", "-wal", "-shm"] { _ = chmod(path + suffix, 0o600) }
    }

    /// A watcher of every commit to this catalog, by this process or another (`CatalogChangeWatcher`).
    package func changeWatcher() throws -> CatalogChangeWatcher { try CatalogChangeWatcher(path: path) }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE patient (
                  id INTEGER PRIMARY KEY,
                  ref BLOB NOT NULL UNIQUE,          -- blind index of the patient identity
                  patientIDIndex BLOB,               -- blind index of Patient ID (may be absent)
                  wrappedKey BLOB NOT NULL,          -- the patient key, wrapped by the master key
                  sealed BLOB NOT NULL
                );
                CREATE INDEX patient_pid ON patient(patientIDIndex);
                CREATE TABLE study (
                  id INTEGER PRIMARY KEY,
                  patientID INTEGER NOT NULL REFERENCES patient(id) ON DELETE CASCADE,
                  uidIndex BLOB NOT NULL UNIQUE,
                  accessionIndex BLOB,
                  sealed BLOB NOT NULL
                );
                CREATE INDEX study_patient ON study(patientID);
                CREATE INDEX study_accession ON study(accessionIndex);
                CREATE TABLE series (
                  id INTEGER PRIMARY KEY,
                  studyID INTEGER NOT NULL REFERENCES study(id) ON DELETE CASCADE,
                  uidIndex BLOB NOT NULL UNIQUE,
                  sealed BLOB NOT NULL
                );
                CREATE INDEX series_study ON series(studyID);
                CREATE TABLE instance (
                  id INTEGER PRIMARY KEY,
                  seriesID INTEGER NOT NULL REFERENCES series(id) ON DELETE CASCADE,
                  uidIndex BLOB NOT NULL UNIQUE,
                  blobID TEXT NOT NULL UNIQUE,       -- random; names the blob file
                  plainSize INTEGER NOT NULL,
                  blobSize INTEGER NOT NULL,
                  contentMAC BLOB NOT NULL,          -- keyed BLAKE2b of the clear file
                  sealed BLOB NOT NULL
                );
                CREATE INDEX instance_series ON instance(seriesID);
                -- Blobs renamed into blobs/ whose catalog rows are not committed yet. A crash leaves
                -- them here; the next writer removes them, and verify does not call them orphans.
                CREATE TABLE pendingBlob (blobID TEXT PRIMARY KEY NOT NULL);
                """)
        }
        m.registerMigration("v2-accounts") { db in
            // Staff accounts are not patient data: names and roles are in clear. Token secrets are not
            // stored at all, only a keyed hash.
            try db.execute(sql: """
                CREATE TABLE account (
                  id INTEGER PRIMARY KEY,
                  name TEXT NOT NULL UNIQUE,
                  role TEXT NOT NULL CHECK (role IN ('admin', 'radiologist', 'viewer', 'backup')),
                  disabled INTEGER NOT NULL DEFAULT 0,
                  createdAt INTEGER NOT NULL
                );
                CREATE TABLE token (
                  id INTEGER PRIMARY KEY,
                  accountID INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
                  hash BLOB NOT NULL UNIQUE,
                  createdAt INTEGER NOT NULL,
                  expiresAt INTEGER NOT NULL,
                  revoked INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX token_account ON token(accountID);
                """)
        }
        m.registerMigration("v3-keyring") { db in
            // Keys that belong with the catalog: the index key wrapped by the master key, and a check
            // value telling which master key the catalog was last written with (see Keyring).
            try db.execute(sql: "CREATE TABLE vaultKey (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
        }
        m.registerMigration("v3-blob-hash") { db in
            // Plain BLAKE2b-256 of each blob file's ciphertext, for the signed backup manifest
            // (docs/backup.md). Filled at import; older rows are filled by the first snapshot.
            try db.execute(sql: """
                CREATE TABLE blobHash (
                  blobID TEXT PRIMARY KEY NOT NULL REFERENCES instance(blobID) ON DELETE CASCADE,
                  hash BLOB NOT NULL
                );
                """)
        }
        m.registerMigration("v4-pending-erasure") { db in
            // An erasure committed but not yet finished (blob files, WAL, snapshots, audit record): the
            // next writer finishes it. Holds counts and keyed pseudonyms only, never an identifier.
            try db.execute(sql: "CREATE TABLE pendingErasure (id INTEGER PRIMARY KEY, action TEXT NOT NULL, summary TEXT NOT NULL)")
        }
        return m
    }

    package static let wrappedIndexKeyName = "index-key"
    package static let masterKeyCheckName = "master-key-check"

    package func vaultKey(_ name: String) throws -> [UInt8]? {
        try pool.read { db in
            try Data.fetchOne(db, sql: "SELECT value FROM vaultKey WHERE name = ?", arguments: [name]).map { Array($0) }
        }
    }

    // MARK: Queries used by import, export, verify, ls

    package func instance(uidIndex: [UInt8]) throws -> InstanceRow? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM instance WHERE uidIndex = ?", arguments: [Data(uidIndex)]).map(Self.instanceRow)
        }
    }

    static func instanceRow(_ r: Row) -> InstanceRow {
        InstanceRow(
            id: r["id"], seriesID: r["seriesID"], uidIndex: Array(r["uidIndex"] as Data), blobID: r["blobID"],
            plainSize: r["plainSize"], blobSize: r["blobSize"], contentMAC: Array(r["contentMAC"] as Data),
            sealed: Array(r["sealed"] as Data))
    }

    /// The identity of the patient a study is filed under, if the study is in the catalog.
    package func patientRef(ofStudy studyIndex: [UInt8]) throws -> [UInt8]? {
        try pool.read { db in
            try Data.fetchOne(
                db, sql: "SELECT p.ref FROM study s JOIN patient p ON p.id = s.patientID WHERE s.uidIndex = ?",
                arguments: [Data(studyIndex)]).map { Array($0) }
        }
    }

    /// The identity of the patient a series is filed under (through its study), if the series is known.
    package func patientRef(ofSeries seriesIndex: [UInt8]) throws -> [UInt8]? {
        try pool.read { db in
            try Data.fetchOne(
                db,
                sql: "SELECT p.ref FROM series se JOIN study s ON s.id = se.studyID JOIN patient p ON p.id = s.patientID WHERE se.uidIndex = ?",
                arguments: [Data(seriesIndex)]).map { Array($0) }
        }
    }

    package func patientKeyRow(ref: [UInt8]) throws -> (id: Int64, wrappedKey: [UInt8])? {
        try pool.read { db in
            try Row.fetchOne(db, sql: "SELECT id, wrappedKey FROM patient WHERE ref = ?", arguments: [Data(ref)]).map {
                (id: $0["id"], wrappedKey: Array($0["wrappedKey"] as Data))
            }
        }
    }
}

/// Tells whether anything was committed to the catalog since the last look, by any connection of any
/// process: SQLite's `PRAGMA data_version` on a connection of its own, which only ever reads it (the
/// pragma changes when *another* connection commits). One cheap query per look.
package final class CatalogChangeWatcher: @unchecked Sendable {
    private let queue: DatabaseQueue

    init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(30)
        queue = try DatabaseQueue(path: path, configuration: config)
    }

    /// A value that changes after every commit by another connection; compare it with an earlier one.
    package func version() throws -> Int {
        try queue.read { db in try Int.fetchOne(db, sql: "PRAGMA data_version") ?? 0 }
    }
}
