// Recording CLI actions in the audit log, and `medvault audit verify|show`.
import ArgumentParser
import Foundation
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

enum Auditing {
    /// Appends a record for a CLI action by the OS user running it. A failure to record is an error:
    /// an action on patient data that cannot be recorded must not pass silently.
    static func record(
        _ vault: Vault, action: String, outcome: String, patientIDs: [String] = [], studyUIDs: [String] = [],
        instances: Int = 0, bytes: Int64 = 0, detail: String = ""
    ) throws {
        var e = AuditEvent(
            actor: currentOSUser(), role: "cli", peerUID: getuid(), peerPID: getpid(), action: action, outcome: outcome)
        e.patientIDs = patientIDs
        e.studyUIDs = studyUIDs
        e.instances = instances
        e.bytes = bytes
        e.detail = detail
        try vault.audit(e)
    }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check and read the tamper-evident audit log.", subcommands: [VerifyLog.self, Show.self])

    struct VerifyLog: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "verify",
            abstract: "Check every record's seal and chain; name any edited, removed, inserted, reordered or truncated record.")
        @OptionGroup var options: VaultOptions
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let report = try options.open().readAudit().report
                if json {
                    Console.json([
                        "ok": report.ok, "records": report.records, "segments": report.segments,
                        "problems": report.problems.map { ["segment": $0.segment, "offset": $0.offset, "record": $0.sequence, "detail": $0.detail] as [String: Any] },
                    ])
                } else {
                    for p in report.problems { print(p.description) }
                    print(report.ok ? "OK: \(report.records) records in \(report.segments) segment(s)" : "FAILED: \(report.problems.count) problem(s)")
                }
                if !report.ok { throw ExitCode(1) }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print audit records (decrypted in memory).")
        @OptionGroup var options: VaultOptions
        @Option(help: "Only this actor.") var user: String?
        @Option(help: ArgumentHelp("Only records naming this Patient ID.", valueName: "id")) var patientId: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let records = try options.open().readAudit().records.filter {
                    (user == nil || $0.event.actor == user) && (patientId == nil || $0.event.patientIDs.contains(patientId ?? ""))
                }
                let f = ISO8601DateFormatter()
                if json {
                    Console.json(records.map { r -> [String: Any] in
                        let e = r.event
                        return ["record": r.sequence, "time": f.string(from: e.time), "actor": e.actor, "role": e.role,
                                "peerUID": e.peerUID.map { Int($0) } ?? -1, "peerPID": e.peerPID.map { Int($0) } ?? -1,
                                "action": e.action, "outcome": e.outcome, "patientIDs": e.patientIDs, "studyUIDs": e.studyUIDs,
                                "instances": e.instances, "bytes": e.bytes, "detail": e.detail]
                    })
                } else {
                    print(Format.table(["#", "TIME", "ACTOR", "ROLE", "UID/PID", "ACTION", "OUTCOME", "PATIENTS", "INSTANCES", "DETAIL"], records.map {
                        let e = $0.event
                        return ["\($0.sequence)", f.string(from: e.time), e.actor, e.role, "\(e.peerUID.map(String.init) ?? "-")/\(e.peerPID.map(String.init) ?? "-")",
                                e.action, e.outcome, e.patientIDs.joined(separator: ","), "\(e.instances)", e.detail]
                    }))
                }
            }
        }
    }
}
