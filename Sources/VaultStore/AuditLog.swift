// The vault's audit log (VaultAudit's AuditLog) with this vault's directory and keys.
public import VaultAudit
import VaultFormats

extension Vault {
    /// Appends one record, durably (fdatasync of its segment), before returning; concurrent appends
    /// share one write and sync (`AuditLog.append`).
    public func audit(_ event: AuditEvent) throws { try auditLog.append(event) }

    func audit(_ event: AuditEvent, segmentLimit: Int) throws { try auditLog.append(event, segmentLimit: segmentLimit) }

    /// Reads and checks the whole log. Problems name the segment, byte offset and record.
    public func readAudit() -> (records: [AuditRecord], report: AuditVerifyReport) { auditLog.read() }

    func readAuditHead() -> (sequence: UInt64, mac: [UInt8])? { auditLog.readAuditHead() }
    func repairAuditTailLocked() throws -> (sequence: UInt64, mac: [UInt8]) { try auditLog.repairAuditTailLocked() }
    func auditSegments() -> [String] { auditLog.auditSegments() }
}
