// Recording CLI actions in the audit log, and `medvault audit verify|show|report`.
import VaultAudit
import ArgumentParser
import Foundation
import VaultStore
#if canImport(Glibc)
import Glibc
#endif

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check and read the tamper-evident audit log.", subcommands: [VerifyLog.self, Show.self, Report.self])

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
                        "notices": report.notices.map { ["segment": $0.segment, "offset": $0.offset, "record": $0.sequence, "detail": $0.detail] as [String: Any] },
                    ])
                } else {
                    for p in report.problems { print(p.description) }
                    for n in report.notices { print("note: " + n.description) }
                    print(report.ok ? "OK: \(report.records) records in \(report.segments) segment(s)" : "FAILED: \(report.problems.count) problem(s)")
                }
                if !report.ok { throw ExitCode(1) }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print audit records (decrypted in memory).",
            discussion: TimeOptions.discussion)
        @OptionGroup var options: VaultOptions
        @OptionGroup var time: TimeOptions
        @Option(help: "Only this actor.") var user: String?
        @Option(help: ArgumentHelp("Only records naming this Patient ID.", valueName: "id")) var patientId: String?
        @Flag(help: "Print the result as JSON.") var json = false

        func run() throws {
            try MedVault.guarded {
                let window = try time.window(now: Date())
                let (all, verification) = try options.open().readAudit()
                if !verification.ok {
                    Console.error("medvault: warning: the audit log is damaged (\(verification.problems.count) problem(s)); run `medvault audit verify`")
                }
                let records = all.filter {
                    window.contains($0.event.time) && (user == nil || $0.event.actor == user)
                        && (patientId == nil || $0.event.patientIDs.contains(patientId ?? ""))
                }
                let f = ISO8601DateFormatter()
                if json {
                    Console.json(records.map { r -> [String: Any] in
                        let e = r.event
                        return ["record": r.sequence, "time": f.string(from: e.time), "actor": e.actor, "role": e.role,
                                "peerUID": e.peerUID.map { Int($0) } ?? -1, "peerPID": e.peerPID.map { Int($0) } ?? -1,
                                "action": e.action.rawValue, "outcome": e.outcome.rawValue, "patientIDs": e.patientIDs, "studyUIDs": e.studyUIDs,
                                "instances": e.instances, "bytes": e.bytes, "detail": e.detail]
                    })
                } else {
                    print(Format.table(["#", "TIME", "ACTOR", "ROLE", "UID/PID", "ACTION", "OUTCOME", "PATIENTS", "INSTANCES", "DETAIL"], records.map {
                        let e = $0.event
                        return ["\($0.sequence)", f.string(from: e.time), e.actor, e.role, "\(e.peerUID.map(String.init) ?? "-")/\(e.peerPID.map(String.init) ?? "-")",
                                e.action.rawValue, e.outcome.rawValue, e.patientIDs.joined(separator: ","), "\(e.instances)", e.detail]
                    }))
                }
            }
        }
    }

    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The breach-notification report: who read or exported which patients' data in a period, refusals, alerts, changes.",
            discussion: """
                Reads and verifies the whole log first. If the log is damaged, the report says so at its top and the exit status is 1 (after the report is printed): a tampered log is itself a sign of a breach.

                The report names patients: it is printed only for the administrator who unlocked the vault, and running it is itself recorded in the audit log (action audit.report).

                \(TimeOptions.discussion)
                """)

        enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case md, json }

        @OptionGroup var options: VaultOptions
        @Option(help: ArgumentHelp("Start of the period: a date, a date and time (UTC unless a zone is given), or a span such as 72h.", valueName: "time")) var since: String
        @Option(help: ArgumentHelp("End of the period (default: now).", valueName: "time")) var until: String?
        @Option(help: "md (a document for the data-protection officer, default) or json (stable field names for tools).")
        var format: OutputFormat = .md

        func run() throws {
            try MedVault.guarded {
                let now = Date()
                // An explicit end, so that the report states the period it covers.
                let window = try TimeOptions.window(since: since, until: until ?? "now", now: now)
                let vault = try options.open()
                // Reading the report discloses patient identifiers: the engine records it like `ls`.
                let from = AuditText.time(window.since ?? now), to = AuditText.time(window.until ?? now)
                let (report, unrecorded) = try vault.auditReport(window: window, now: now, by: .currentProcess) {
                    "\(format.rawValue) report for \(from) to \(to), \($0.summary.patients) patient(s)"
                }
                if let unrecorded {
                    Console.error("medvault: this report could not be recorded in the damaged audit log: \(unrecorded)")
                }
                switch format {
                case .md: print(report.markdown(), terminator: "")
                case .json:
                    FileHandle.standardOutput.write(try report.jsonData())
                    FileHandle.standardOutput.write(Data("\n".utf8))
                }
                if !report.integrity.ok {
                    Console.error("medvault: the audit log is damaged (\(report.integrity.problems.count) problem(s)); see the report's integrity section")
                    throw ExitCode(1)
                }
            }
        }
    }
}

/// --since and --until, shared by `audit show` (both optional) and their parsing for `audit report`.
struct TimeOptions: ParsableArguments {
    static let discussion = """
        Times for --since and --until: a date (2026-11-23), a date and time (2026-11-23T14:30, 2026-11-23 14:30:05, 2026-11-23T14:30:00+01:00; UTC when no zone is given), or a span before now (30min, 72h, 7d, 2w; a bare "m" is refused). Both ends are included; a date (or a time without seconds) given to --until includes the whole day (or minute).
        """

    @Option(help: ArgumentHelp("Only records from this time on (UTC unless a zone is given; or a span such as 72h).", valueName: "time")) var since: String?
    @Option(help: ArgumentHelp("Only records up to this time.", valueName: "time")) var until: String?

    func window(now: Date) throws -> AuditWindow { try Self.window(since: since, until: until, now: now) }

    /// Bad times are reported like every other error that stops a command: one line, exit status 2.
    static func window(since: String?, until: String?, now: Date) throws -> AuditWindow {
        do {
            return try AuditWindow.parse(since: since, until: until, now: now)
        } catch {
            throw CLIError(error.description)
        }
    }
}
