// Filing imported instances: patient, study, series and instance rows in one transaction.
import Foundation
import GRDB

/// Row ids and study owners already seen in this run (the writer lock keeps them valid), so that
/// a batch does not look up the same patient, study or series again.
package struct RowIDCache: Sendable {
    package var patient: [[UInt8]: Int64] = [:]
    package var study: [[UInt8]: Int64] = [:]
    package var series: [[UInt8]: Int64] = [:]
    package var studyOwner: [[UInt8]: [UInt8]] = [:]
    package var seriesOwner: [[UInt8]: [UInt8]] = [:]
    package init() {}
}

/// One instance to file. What only the engine can compute (sealed records, the wrapped patient key)
/// comes as closures, called only when a row is created.
package struct InstanceToFile {
    package var patientRef: [UInt8]
    package var patientIDIndex: [UInt8]?
    package var wrappedPatientKey: () throws -> [UInt8]
    package var sealedPatient: () throws -> [UInt8]
    package var studyIndex: [UInt8]
    package var accessionIndex: [UInt8]?
    package var sealedStudy: () throws -> [UInt8]
    package var seriesIndex: [UInt8]
    package var sealedSeries: () throws -> [UInt8]
    package var instanceIndex: [UInt8]
    package var blobID: String
    package var plainSize: Int64
    package var blobSize: Int64
    package var contentMAC: [UInt8]
    package var ciphertextHash: [UInt8]
    package var sealedInstance: [UInt8]

    package init(
        patientRef: [UInt8], patientIDIndex: [UInt8]?, wrappedPatientKey: @escaping () throws -> [UInt8],
        sealedPatient: @escaping () throws -> [UInt8], studyIndex: [UInt8], accessionIndex: [UInt8]?,
        sealedStudy: @escaping () throws -> [UInt8], seriesIndex: [UInt8], sealedSeries: @escaping () throws -> [UInt8],
        instanceIndex: [UInt8], blobID: String, plainSize: Int64, blobSize: Int64, contentMAC: [UInt8], ciphertextHash: [UInt8],
        sealedInstance: [UInt8]
    ) {
        self.patientRef = patientRef
        self.patientIDIndex = patientIDIndex
        self.wrappedPatientKey = wrappedPatientKey
        self.sealedPatient = sealedPatient
        self.studyIndex = studyIndex
        self.accessionIndex = accessionIndex
        self.sealedStudy = sealedStudy
        self.seriesIndex = seriesIndex
        self.sealedSeries = sealedSeries
        self.instanceIndex = instanceIndex
        self.blobID = blobID
        self.plainSize = plainSize
        self.blobSize = blobSize
        self.contentMAC = contentMAC
        self.ciphertextHash = ciphertextHash
        self.sealedInstance = sealedInstance
    }
}


extension Catalog {
    /// Files a batch of instances whose blobs are already renamed into blobs/ (and listed in
    /// `pendingBlob`): one transaction creates the missing patient, study and series rows, the
    /// instance rows and their blob hashes, and takes the blobs off the pending list.
    package func file(_ batch: [InstanceToFile], cache: inout RowIDCache) throws {
        var known = cache
        try pool.write { db in
            for s in batch {
                let patientID: Int64
                if let id = try known.patient[s.patientRef]
                    ?? Int64.fetchOne(db, sql: "SELECT id FROM patient WHERE ref = ?", arguments: [Data(s.patientRef)])
                {
                    patientID = id
                } else {
                    try db.execute(
                        sql: "INSERT INTO patient(ref, patientIDIndex, wrappedKey, sealed) VALUES (?, ?, ?, ?)",
                        arguments: [Data(s.patientRef), s.patientIDIndex.map { Data($0) }, Data(try s.wrappedPatientKey()), Data(try s.sealedPatient())])
                    patientID = db.lastInsertedRowID
                }
                known.patient[s.patientRef] = patientID
                // A series stays under the study it was first filed in: a file whose series is known
                // goes there, and its own (possibly new) study is not created, which would leave an
                // empty study row that `ls` lists and `export` cannot find.
                let seriesID: Int64
                if let id = try known.series[s.seriesIndex]
                    ?? Int64.fetchOne(db, sql: "SELECT id FROM series WHERE uidIndex = ?", arguments: [Data(s.seriesIndex)])
                {
                    seriesID = id
                } else {
                    let studyID: Int64
                    if let id = try known.study[s.studyIndex]
                        ?? Int64.fetchOne(db, sql: "SELECT id FROM study WHERE uidIndex = ?", arguments: [Data(s.studyIndex)])
                    {
                        studyID = id
                    } else {
                        try db.execute(
                            sql: "INSERT INTO study(patientID, uidIndex, accessionIndex, sealed) VALUES (?, ?, ?, ?)",
                            arguments: [patientID, Data(s.studyIndex), s.accessionIndex.map { Data($0) }, Data(try s.sealedStudy())])
                        studyID = db.lastInsertedRowID
                    }
                    known.study[s.studyIndex] = studyID
                    try db.execute(
                        sql: "INSERT INTO series(studyID, uidIndex, sealed) VALUES (?, ?, ?)",
                        arguments: [studyID, Data(s.seriesIndex), Data(try s.sealedSeries())])
                    seriesID = db.lastInsertedRowID
                }
                known.series[s.seriesIndex] = seriesID
                try db.execute(
                    sql: """
                        INSERT INTO instance(seriesID, uidIndex, blobID, plainSize, blobSize, contentMAC, sealed)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        seriesID, Data(s.instanceIndex), s.blobID, s.plainSize, s.blobSize, Data(s.contentMAC), Data(s.sealedInstance),
                    ])
                if !s.ciphertextHash.isEmpty {  // for the backup manifest
                    try db.execute(sql: "INSERT INTO blobHash(blobID, hash) VALUES (?, ?)", arguments: [s.blobID, Data(s.ciphertextHash)])
                }
                try db.execute(sql: "DELETE FROM pendingBlob WHERE blobID = ?", arguments: [s.blobID])
            }
        }
        cache = known
    }
}
