// The breach report over this vault's log (the model and its aggregation are VaultAudit's).
public import Foundation
public import VaultAudit

extension Vault {
    /// Reads and checks the whole log, then reports on the records in `window`. Patient names come from
    /// the catalog as it is now: the log itself records Patient IDs only.
    public func auditReport(window: AuditWindow, now: Date = Date()) throws -> AuditBreachReport {
        let (records, verification) = readAudit()
        let wanted = Set(records.filter { window.contains($0.event.time) }.flatMap(\.event.patientIDs))
        var names: [String: [String]] = [:]
        if !wanted.isEmpty {
            for p in try listPatients() where wanted.contains(p.patient.patientID) && !p.patient.name.isEmpty {
                if !(names[p.patient.patientID] ?? []).contains(p.patient.name) { names[p.patient.patientID, default: []].append(p.patient.name) }
            }
        }
        return AuditBreachReport(
            records: records, verification: verification, window: window, generatedAt: now, vaultID: config.vaultID,
            vaultPath: layout.root, patientNames: names)
    }
}

extension Vault {
    /// The report as a recorded read by `actor`: it names patients. When the log is already damaged the
    /// report matters more than its record, so a record that cannot be written is returned as
    /// `unrecorded` instead of withholding the report; on an intact log it is an error.
    public func auditReport(
        window: AuditWindow, now: Date = Date(), by actor: AuditActor, detail: (AuditBreachReport) -> String
    ) throws -> (report: AuditBreachReport, unrecorded: String?) {
        let report = try auditReport(window: window, now: now)
        var record = ChangeReport()
        record.detail = detail(report)
        do { try audit(actor.event(.auditReport, record, time: now)) } catch {
            guard !report.integrity.ok else { throw ChangeNotAudited(action: .auditReport, reason: "\(error)") }
            return (report, "\(error)")
        }
        return (report, nil)
    }
}

