// The breach-notification report as a Markdown document for a data-protection officer. The engine
// builds the report (`AuditBreachReport`); this file only renders it.
import VaultAudit
import Foundation
import VaultStore


/// Small text helpers shared by the report and the audit commands.
enum AuditText {
    /// `2026-11-23 14:30:05 UTC`.
    static func time(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d).replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC")
    }

    /// `532 bytes`, `12.4 kB`, `3.1 MB`, `1.20 GB` (decimal units).
    static func bytes(_ n: Int64) -> String {
        let d = Double(n)
        if n < 1000 { return "\(n) bytes" }
        if n < 1_000_000 { return String(format: "%.1f kB", d / 1e3) }
        if n < 1_000_000_000 { return String(format: "%.1f MB", d / 1e6) }
        return String(format: "%.2f GB", d / 1e9)
    }

    static func plural(_ n: Int, _ one: String, _ many: String? = nil) -> String {
        "\(n) " + (n == 1 ? one : many ?? one + "s")
    }

    /// A table cell: Markdown's own characters escaped, so a name cannot break the table or format.
    static func cell(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\", "|", "*", "_", "`", "<", ">", "[", "]", "#": out.append("\\"); out.append(c)
            case "\n", "\r": out.append(" ")
            default: out.append(c)
            }
        }
        return out.isEmpty ? "–" : out
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        ([header, header.map { _ in "---" }] + rows).map { "| " + $0.joined(separator: " | ") + " |" }.joined(separator: "\n")
    }

    static func peers(_ uids: [UInt32], _ pids: [Int32]) -> String {
        guard !uids.isEmpty || !pids.isEmpty else { return "unknown (TCP)" }
        var s = uids.map { "uid \($0)" }.joined(separator: ", ")
        if !pids.isEmpty {
            let shown = pids.prefix(3).map(String.init).joined(separator: ", ")
            s += (s.isEmpty ? "" : "; ") + (pids.count == 1 ? "pid " : "pids ") + shown + (pids.count > 3 ? " (+\(pids.count - 3) more)" : "")
        }
        return s
    }
}

extension AuditBreachReport {
    /// The report as a Markdown document a data-protection officer can read and attach to a notification.
    func markdown() -> String {
        // In the order a reader needs them: what this is and whether the log can be trusted, the totals,
        // who saw whose data, then the signs of an attack, the changes made, and the report's limits.
        let lines: [[String]] = [
            titleAndFacts(),
            section("## Summary", [summarySentence()]),
            patientsSection(),
            accountsSection(),
            refusalsSection(),
            burstsSection(),
            alertsSection(),
            administrativeSection(),
            integritySection(),
            section("## What this report cannot show", Self.limits),
        ]
        return lines.flatMap { $0 }.joined(separator: "\n")
    }

    /// A heading, a blank line, the body, a blank line.
    private func section(_ heading: String, _ body: [String]) -> [String] {
        [heading, ""] + body + [""]
    }

    /// The title, the confidentiality note, a warning when the log is damaged, and the vault, period and
    /// log facts.
    private func titleAndFacts() -> [String] {
        typealias T = AuditText
        var out = ["# Audit report: access to patient data in MedVault", ""]
        out.append(
            "**Confidential: this report names patients.** It was produced for the vault administrator who unlocked the "
                + "vault with its passphrase. Share it only with those entitled to it (e.g. the data-protection officer) and "
                + "keep it as you would keep patient records.")
        out.append("")
        if !integrity.ok {
            out.append("> **WARNING: THE AUDIT LOG IS DAMAGED.** Checking its seals and chain found "
                + "\(T.plural(integrity.problems.count, "problem")) (listed under *Integrity of the audit log*). Records may have "
                + "been removed, altered or inserted, so this report may be incomplete. A damaged log is itself a sign of a "
                + "possible breach: preserve a copy of `audit/` and treat the incident accordingly.")
            out.append("")
        }
        let since = window.since.map(T.time) ?? "the first record"
        let until = window.until.map(T.time) ?? T.time(generatedAt)
        out.append(T.table(["", ""], [
            ["Vault", "`\(vaultID)` at \(T.cell(vaultPath))"],
            ["Period covered", "\(since) to \(until)"],
            ["Report generated", T.time(generatedAt)],
            ["Audit log", integrity.ok
                ? "intact: \(T.plural(integrity.records, "record")) in \(T.plural(integrity.segments, "segment")), seals and chain verified"
                : "**DAMAGED**: \(T.plural(integrity.problems.count, "problem")); \(T.plural(integrity.records, "record")) could be read"],
        ]))
        out.append("")
        out.append("All times are UTC, from the clock of the machine that holds the vault.")
        out.append("")
        return out
    }

    /// One row per patient and account that accessed the patient's data.
    private func patientsSection() -> [String] {
        typealias T = AuditText
        guard !patients.isEmpty else {
            return section("## Patients whose data was accessed", ["No patient's data was read, exported, searched for or listed in this period."])
        }
        var rows: [[String]] = []
        for p in patients {
            let name = p.catalogNames.isEmpty ? "n/a (not in the vault)" : p.catalogNames.map(T.cell).joined(separator: " / ")
            for a in p.accessors {
                rows.append([T.cell(p.patientID), name, accountCell(a.account, a.role), T.peers(a.peerUIDs, a.peerPIDs),
                             how(a.figures), instancesCell(a.figures), bytesCell(a.figures), T.time(a.figures.first), T.time(a.figures.last)])
            }
        }
        return section("## Patients whose data was accessed", [
            "One row per patient and account. *Retrieved*: whole DICOM files, frames, pixel data or rendered images sent through the API; "
                + "*metadata*: every attribute except the images; *exported*: files written by `medvault export`; "
                + "*searches* and *listings* showed the patient's identifiers and study details, not images. The name is "
                + "the one the vault holds now (the log records the Patient ID).",
            "",
            T.table(["Patient ID", "Name", "Account", "Peer", "How", "Instances", "Bytes", "First", "Last"], rows),
        ])
    }

    /// One row per account (API accounts, and the OS users of the CLI) that acted in the period.
    private func accountsSection() -> [String] {
        typealias T = AuditText
        guard !accounts.isEmpty else { return section("## Accounts", ["No account acted in this period."]) }
        let table = T.table(
            ["Account", "Peer", "Patients", "Retrieved", "Metadata", "Exported", "Bytes", "Searches / listings", "Imports", "Refused", "Failed", "Admin", "First", "Last"],
            accounts.map { a in
                let f = a.figures
                func count(_ instances: Int, _ requests: Int) -> String { requests == 0 ? "–" : "\(instances) in \(requests)" }
                return [accountCell(a.account, a.role), T.peers(a.peerUIDs, a.peerPIDs), "\(a.patients)",
                        count(f.instancesRetrieved, f.retrievals), count(f.instancesMetadata, f.metadataRequests),
                        count(f.instancesExported, f.exports), bytesCell(f), "\(f.searches) / \(f.listings)",
                        count(a.instancesImported, a.imports), "\(a.refused)", "\(a.failed)",
                        "\(a.administrativeActions)", T.time(f.first), T.time(f.last)]
            })
        return section("## Accounts", [
            "API accounts by name and role; `cli` marks the operating-system user who ran a `medvault` command on the vault host.",
            "",
            table,
            "",
            "*Retrieved*, *Metadata*, *Exported*, *Imports*: instances, in so many requests or commands.",
        ])
    }

    /// Refused requests by peer.
    private func refusalsSection() -> [String] {
        typealias T = AuditText
        guard !refused.isEmpty else { return section("## Refused requests", ["No request was refused in this period."]) }
        return section("## Refused requests", [
            "401: no valid token (missing, wrong, expired, revoked, or a disabled account). 403: a valid account without the right.",
            "",
            T.table(["Peer", "401", "403", "Accounts (403)", "Processes", "First", "Last"], refused.map { p in
                [T.cell(p.peer), "\(p.unauthenticated)", "\(p.forbidden)", p.accounts.isEmpty ? "–" : p.accounts.map(T.cell).joined(separator: ", "),
                 "\(p.peerPIDs.count)", T.time(p.first), T.time(p.last)]
            }),
        ])
    }

    /// Runs of refusals from one peer (a sub-section of the refusals).
    private func burstsSection() -> [String] {
        typealias T = AuditText
        guard !bursts.isEmpty else {
            return section("### Bursts", ["No burst (\(Self.burstThreshold) or more refusals from one peer within \(Int(Self.burstSeconds)) s)."])
        }
        return section("### Bursts", [
            "\(Self.burstThreshold) or more refusals from one peer within \(Int(Self.burstSeconds)) s: someone may be guessing tokens, or a client uses a revoked one.",
            "",
            T.table(["Peer", "From", "To", "Refusals", "Most in 60 s"], bursts.map {
                [T.cell($0.peer), T.time($0.start), T.time($0.end), "\($0.refusals)", "\($0.peakPerMinute)"]
            }),
        ])
    }

    private func alertsSection() -> [String] {
        typealias T = AuditText
        guard !alerts.isEmpty else { return section("## Alerts", ["No alert was raised in this period."]) }
        return section("## Alerts", [
            T.table(["Record", "Time", "Peer", "Alert"], alerts.map { ["\($0.record)", T.time($0.time), T.cell($0.peer), T.cell($0.detail)] }),
        ])
    }

    private func administrativeSection() -> [String] {
        typealias T = AuditText
        guard !administrative.isEmpty else {
            return section("## Administrative actions", ["No account, token or key was changed in this period."])
        }
        return section("## Administrative actions", [
            T.table(["Record", "Time", "By", "Action", "Outcome", "Detail"], administrative.map {
                ["\($0.record)", T.time($0.time), accountCell($0.actor, $0.role), T.cell($0.action), T.cell($0.outcome), T.cell($0.detail)]
            }),
        ])
    }

    /// The log's check: that it verified, or each problem with its place.
    private func integritySection() -> [String] {
        typealias T = AuditText
        guard !integrity.ok else {
            return section("## Integrity of the audit log", [
                "Every record's seal and the chain linking all \(T.plural(integrity.records, "record")) verified, and the log's "
                    + "authenticated head matches its last record: no record was edited, removed, inserted or reordered since it was written.",
            ])
        }
        return section("## Integrity of the audit log",
            ["The check found:", ""] + integrity.problems.map { "- \(T.cell($0.segment)) at byte \($0.offset) (record \($0.record)): \(T.cell($0.detail))" })
    }

    private static let limits = [
        "- Anything done outside MedVault: someone who has the vault passphrase and the files can decrypt data without leaving a record, and can rewrite the log consistently.",
        "- Bytes are not recorded for metadata requests and searches; they show as n/a. Instance counts are recorded. A retrieval is recorded when the answer starts: a client that disconnected early may have received fewer instances.",
        "- Searches and listings record which patients they named, not which attributes were shown.",
        "- What happened to data after it left the vault (exported files, a viewer's cache).",
        "- Peers are identified by operating-system uid and process id on the vault host; the loopback TCP listener cannot see them (shown as unknown).",
    ]

    func summarySentence() -> String {
        typealias T = AuditText
        let s = summary
        var parts: [String] = []
        if s.patients == 0 {
            parts.append("No patient's data was read, exported, searched for or listed in this period.")
        } else {
            var what: [String] = []
            if s.instancesRetrieved > 0 { what.append("\(T.plural(s.instancesRetrieved, "instance")) retrieved through the API") }
            if s.instancesMetadata > 0 { what.append("metadata of \(T.plural(s.instancesMetadata, "instance")) read") }
            if s.instancesExported > 0 { what.append("\(T.plural(s.instancesExported, "instance")) exported to files") }
            if s.searches + s.listings > 0 { what.append("\(T.plural(s.searches + s.listings, "search or listing", "searches or listings")) that showed patient identifiers") }
            var bytesNote = ""
            if s.bytes > 0 || s.recordsWithoutByteCount > 0 {
                bytesNote = s.recordsWithoutByteCount == 0
                    ? " Data sent: \(T.bytes(s.bytes))."
                    : " Data sent: \(s.bytes > 0 ? T.bytes(s.bytes) : "n/a"); bytes of \(T.plural(s.recordsWithoutByteCount, "API request")) not recorded (n/a)."
            }
            parts.append("\(T.plural(s.accounts, "account")) accessed data of \(T.plural(s.patients, "patient")): "
                + what.joined(separator: ", ") + "." + bytesNote)
        }
        parts.append("\(T.plural(s.refused, "request was", "requests were")) refused (\(s.refusedUnauthenticated) unauthenticated, "
            + "\(s.refusedForbidden) forbidden), in \(T.plural(s.bursts, "burst")); \(T.plural(s.alerts, "alert was", "alerts were")) raised; "
            + "\(T.plural(s.administrativeActions, "administrative action")) recorded.")
        if s.failed > 0 { parts.append("\(T.plural(s.failed, "access", "accesses")) failed (not found or error) and delivered no data.") }
        if !integrity.ok { parts.append("**The audit log is damaged; these figures may be incomplete.**") }
        return parts.joined(separator: " ")
    }

    private func accountCell(_ account: String, _ role: String) -> String {
        role == "cli" ? "\(AuditText.cell(account)) (OS user, cli)" : "\(AuditText.cell(account)) (\(AuditText.cell(role)))"
    }

    private func how(_ f: Figures) -> String {
        var parts: [String] = []
        if f.retrievals > 0 { parts.append("retrieved ×\(f.retrievals)") }
        if f.metadataRequests > 0 { parts.append("metadata ×\(f.metadataRequests)") }
        if f.exports > 0 { parts.append("exported ×\(f.exports)") }
        if f.searches > 0 { parts.append("search results ×\(f.searches)") }
        if f.listings > 0 { parts.append("listings ×\(f.listings)") }
        return parts.joined(separator: ", ")
    }

    private func instancesCell(_ f: Figures) -> String {
        let n = f.instancesRetrieved + f.instancesMetadata + f.instancesExported
        guard f.retrievals + f.metadataRequests + f.exports > 0 else { return "n/a" }
        return f.instancesMetadata > 0 ? "\(n) (\(f.instancesMetadata) metadata only)" : "\(n)"
    }

    private func bytesCell(_ f: Figures) -> String {
        switch (f.bytes > 0, f.recordsWithoutByteCount > 0) {
        case (_, false) where f.exports > 0 || f.bytes > 0: AuditText.bytes(f.bytes)
        case (true, true): "\(AuditText.bytes(f.bytes)) + n/a"
        default: "n/a"
        }
    }
}
