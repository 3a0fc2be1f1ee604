// Reading the catalog back: listing (decrypted in memory only) and resolving UIDs for export.
public import VaultKeys
import Foundation
public import VaultCatalog
import VaultCrypto

public struct PatientSummary: Sendable {
    public var patient: PatientRecord
    public var studies: Int
    public var instances: Int
    public var bytes: Int64
}

public struct StudySummary: Sendable {
    public var patient: PatientRecord
    public var study: StudyRecord
    public var modalities: [String]
    public var series: Int
    public var instances: Int
    public var bytes: Int64
}

public struct SeriesSummary: Sendable {
    public var patient: PatientRecord
    public var study: StudyRecord
    public var series: SeriesRecord
    public var instances: Int
    public var bytes: Int64
}

/// The part of the catalog a listing reads: all of it, or what one identifier leads to through its
/// blind index (so that the listing costs the same whatever the vault's size). `series` is for
/// series and instance listings.
public enum CatalogSelection: Sendable, Hashable {
    case all
    case patientID(String)
    case study(String)
    case series(String)
}

extension Vault {
    /// Decrypts catalog rows. With `patientID`, only that patient's rows (found by blind index). Instance
    /// records are decrypted only when `instances` is true; otherwise only their per-series tally is read
    /// (a study or series listing needs counts, and a patient may have thousands of instances).
    func openCatalog(patientID: String? = nil, instances: Bool = true) throws -> OpenedCatalog {
        try openCatalog(patientID.map { .patientID($0) } ?? .all, instances: instances)
    }

    func openCatalog(_ selection: CatalogSelection, instances: Bool = true) throws -> OpenedCatalog {
        let scope: CatalogScope =
            switch selection {
            case .all: .all
            case .patientID(let id): .patient(idIndex: keyring.blindIndex(.patientID, Normalize.identifier(id)))
            case .study(let uid): .study(uidIndex: keyring.blindIndex(.studyUID, Normalize.identifier(uid)))
            case .series(let uid): .series(uidIndex: keyring.blindIndex(.seriesUID, Normalize.identifier(uid)))
            }
        return try catalog.open(scope: scope, instances: instances, sealer: sealer)
    }

    public func listPatients(patientID: String? = nil) throws -> [PatientSummary] {
        let c = try openCatalog(patientID: patientID, instances: false)
        var out: [Int64: PatientSummary] = [:]
        for p in c.patients.values { out[p.id] = PatientSummary(patient: p.record, studies: 0, instances: 0, bytes: 0) }
        for s in c.studies.values { out[s.patientID]?.studies += 1 }
        for (seriesID, t) in c.tally {
            guard let se = c.series[seriesID], let st = c.studies[se.studyID] else { continue }
            out[st.patientID]?.instances += t.count
            out[st.patientID]?.bytes += t.bytes
        }
        return out.values.sorted { ($0.patient.name, $0.patient.patientID) < ($1.patient.name, $1.patient.patientID) }
    }

    public func listStudies(patientID: String? = nil) throws -> [StudySummary] {
        try listStudies(in: patientID.map { .patientID($0) } ?? .all)
    }

    public func listStudies(in selection: CatalogSelection) throws -> [StudySummary] {
        let c = try openCatalog(selection, instances: false)
        var out: [Int64: StudySummary] = [:]
        for s in c.studies.values {
            guard let p = c.patients[s.patientID] else { continue }
            out[s.id] = StudySummary(patient: p.record, study: s.record, modalities: [], series: 0, instances: 0, bytes: 0)
        }
        for se in c.series.values {
            out[se.studyID]?.series += 1
            if !se.record.modality.isEmpty, out[se.studyID]?.modalities.contains(se.record.modality) == false {
                out[se.studyID]?.modalities.append(se.record.modality)
            }
        }
        for (seriesID, t) in c.tally {
            guard let se = c.series[seriesID] else { continue }
            out[se.studyID]?.instances += t.count
            out[se.studyID]?.bytes += t.bytes
        }
        return out.values.map { var s = $0; s.modalities.sort(); return s }
            .sorted { ($0.study.date, $0.study.studyUID) < ($1.study.date, $1.study.studyUID) }
    }

    public func listSeries(patientID: String? = nil) throws -> [SeriesSummary] {
        try listSeries(in: patientID.map { .patientID($0) } ?? .all)
    }

    public func listSeries(in selection: CatalogSelection) throws -> [SeriesSummary] {
        let c = try openCatalog(selection, instances: false)
        var out: [Int64: SeriesSummary] = [:]
        for se in c.series.values {
            guard let st = c.studies[se.studyID], let p = c.patients[st.patientID] else { continue }
            out[se.id] = SeriesSummary(patient: p.record, study: st.record, series: se.record, instances: 0, bytes: 0)
        }
        for (seriesID, t) in c.tally {
            out[seriesID]?.instances = t.count
            out[seriesID]?.bytes = t.bytes
        }
        return out.values.sorted {
            ($0.study.studyUID, Int($0.series.number) ?? 0, $0.series.seriesUID) < ($1.study.studyUID, Int($1.series.number) ?? 0, $1.series.seriesUID)
        }
    }
}

public struct InstanceSummary: Sendable {
    public var patient: PatientRecord
    public var study: StudyRecord
    public var series: SeriesRecord
    public var instance: InstanceRecord
    public var bytes: Int64
}

extension Vault {
    public func listInstances(patientID: String? = nil) throws -> [InstanceSummary] {
        try listInstances(in: patientID.map { .patientID($0) } ?? .all)
    }

    public func listInstances(in selection: CatalogSelection) throws -> [InstanceSummary] {
        let c = try openCatalog(selection)
        return c.instances.compactMap { i -> InstanceSummary? in
            guard let se = c.series[i.row.seriesID], let st = c.studies[se.studyID], let p = c.patients[st.patientID] else { return nil }
            return InstanceSummary(patient: p.record, study: st.record, series: se.record, instance: i.record, bytes: i.row.plainSize)
        }.sorted {
            ($0.series.seriesUID, Int($0.instance.number) ?? 0, $0.instance.sopInstanceUID)
                < ($1.series.seriesUID, Int($1.instance.number) ?? 0, $1.instance.sopInstanceUID)
        }
    }
}

/// The listing levels of `medvault ls`.
public enum ListLevel: String, Sendable, CaseIterable {
    case patients, studies, series
}

extension Vault {
    /// Listings as recorded reads by `actor` (`Vault.recordAccess`): the record names the patients listed.
    public func listPatients(patientID: String? = nil, by actor: AuditActor) throws -> [PatientSummary] {
        try recordedListing(.patients, by: actor) { try listPatients(patientID: patientID) } patientIDs: { $0.map(\.patient.patientID) }
    }

    public func listStudies(patientID: String? = nil, by actor: AuditActor) throws -> [StudySummary] {
        try recordedListing(.studies, by: actor) { try listStudies(patientID: patientID) } patientIDs: { $0.map(\.patient.patientID) }
    }

    public func listSeries(patientID: String? = nil, by actor: AuditActor) throws -> [SeriesSummary] {
        try recordedListing(.series, by: actor) { try listSeries(patientID: patientID) } patientIDs: { $0.map(\.patient.patientID) }
    }

    private func recordedListing<Row>(
        _ level: ListLevel, by actor: AuditActor, _ list: () throws -> [Row], patientIDs: ([Row]) -> [String]
    ) throws -> [Row] {
        try recordAccess(.list, by: actor) { report in
            report.detail = level.rawValue
            let rows = try list()
            report.patientIDs = Array(Set(patientIDs(rows))).sorted()
            return rows
        }
    }
}
