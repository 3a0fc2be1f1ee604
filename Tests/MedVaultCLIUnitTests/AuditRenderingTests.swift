// What the CLI does with the audit log's model: reading times as people type them, and the report as
// a Markdown document. (The report's figures are tested in VaultStoreTests/AuditReportTests.)
import VaultAudit
import Foundation
import Testing
import TestSupport
@testable import VaultStore
@testable import medvault

/// Time windows for `audit show|report`, and the breach report built from a real, sealed log.
@Suite struct AuditTimeTests {
    let now = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18 11:06:40 UTC

    /// An instant written out in full (UTC), to compare against; independent of the parser under test.
    func utc(_ s: String, plus fraction: TimeInterval = 0) -> Date? {
        ISO8601DateFormatter().date(from: s).map { $0.addingTimeInterval(fraction) }
    }

    func since(_ s: String) throws -> Date { try AuditTime.parse(s, option: "--since", now: now, asEnd: false) }
    func until(_ s: String) throws -> Date { try AuditTime.parse(s, option: "--until", now: now, asEnd: true) }

    @Test func datesAndTimesWithAndWithoutZone() throws {
        #expect(try since("2026-11-23") == utc("2026-11-23T00:00:00Z"))
        #expect(try since("2024-02-29") == utc("2024-02-29T00:00:00Z"))
        #expect(try since("1969-12-31") == utc("1969-12-31T00:00:00Z"))
        #expect(try since("2026-11-23T14:30") == utc("2026-11-23T14:30:00Z"))  // no zone: UTC
        #expect(try since("2026-11-23 14:30:05") == utc("2026-11-23T14:30:05Z"))
        #expect(try since("2026-11-23T14:30:05Z") == utc("2026-11-23T14:30:05Z"))
        #expect(try since("2026-11-23T14:30:05+01:00") == utc("2026-11-23T13:30:05Z"))
        #expect(try since("2026-11-23T14:30:05-0530") == utc("2026-11-23T20:00:05Z"))
        #expect(try since("2026-11-23T14:30+02") == utc("2026-11-23T12:30:00Z"))
        #expect(try since("2026-11-23T14:30:05.250Z") == utc("2026-11-23T14:30:05Z", plus: 0.25))
    }

    @Test func anEndIncludesTheWholeUnitItWasGivenTo() throws {
        #expect(try until("2026-11-23") == utc("2026-11-24T00:00:00Z", plus: -0.001))
        #expect(try until("2026-11-23T14:30") == utc("2026-11-23T14:31:00Z", plus: -0.001))
        #expect(try until("2026-11-23T14:30:05") == utc("2026-11-23T14:30:06Z", plus: -0.001))
        #expect(try until("2026-11-23T14:30:05.5") == utc("2026-11-23T14:30:05Z", plus: 0.5))
        // So one day given as both ends is that whole day.
        let day = try AuditWindow.parse(since: "2026-11-23", until: "2026-11-23", now: now)
        #expect(day.contains(try #require(utc("2026-11-23T00:00:00Z"))))
        #expect(day.contains(try #require(utc("2026-11-23T23:59:59Z"))))
        #expect(!day.contains(try #require(utc("2026-11-24T00:00:00Z"))))
        #expect(!day.contains(try #require(utc("2026-11-22T23:59:59Z"))))
    }

    @Test func spansCountBackFromNow() throws {
        #expect(try since("30min") == now.addingTimeInterval(-1800))
        #expect(throws: AuditTimeError.self) { try since("30m") }
        #expect(try since("72h") == now.addingTimeInterval(-72 * 3600))
        #expect(try since("7d") == now.addingTimeInterval(-7 * 86400))
        #expect(try since("2w") == now.addingTimeInterval(-14 * 86400))
        #expect(try since("90s") == now.addingTimeInterval(-90))
        #expect(try until("now") == now)
    }

    @Test(arguments: [
        "", "yesterday", "7x", "h", "-3h", "3.5h", "72 h", "2026-11-31", "2026-02-29", "2026-13-01", "2026-1-5", "26-11-23",
        "2026-11-23T24:00", "2026-11-23T14:60", "2026-11-23T14:30:60", "2026-11-23T14", "2026-11-23T14:30Zjunk",
        "2026-11-23T14:30+25:00", "2026-11-23T14:30:05.", "23.11.2026", "11/23/2026", "99999999999d",
    ])
    func anythingElseIsRefusedByName(value: String) {
        #expect(throws: AuditTimeError.unrecognised(option: "--since", value: value)) { try since(value) }
    }

    @Test func aWindowThatEndsBeforeItStartsIsRefused() throws {
        #expect(throws: AuditTimeError.self) { try AuditWindow.parse(since: "1h", until: "2h", now: now) }
        #expect(throws: AuditTimeError.self) { try AuditWindow.parse(since: "2026-11-24", until: "2026-11-23", now: now) }
        let err = #expect(throws: AuditTimeError.self) { try AuditWindow.parse(since: "2026-11-24T10:00", until: "2026-11-24T09:00", now: now) }
        #expect(err?.description.contains("is after --until") == true)
        // Equal ends are one moment, not an error; an offset can make a later-looking time earlier.
        _ = try AuditWindow.parse(since: "2026-11-23T10:00:00", until: "2026-11-23T10:00:00", now: now)
        _ = try AuditWindow.parse(since: "2026-11-23T10:30+01:00", until: "2026-11-23T09:45Z", now: now)
        #expect(AuditWindow.all.contains(.distantPast) && AuditWindow.all.contains(.distantFuture))
    }
}

@Suite struct AuditReportMarkdownTests: AuditFixtures {
    @Test func aPeriodWithoutAccessSaysSo() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try loggedVault(dir)
        let past = try vault.auditReport(window: try AuditWindow(since: at(-86400 * 365), until: at(-86400)), now: at(0))
        #expect(past.markdown().contains("No patient's data was read, exported, searched for or listed in this period."))
    }

    @Test func markdownReadsAsADocumentAndJSONKeepsItsKeys() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try loggedVault(dir)
        let r = try vault.auditReport(window: try morningWindow, now: at(7200))
        let md = r.markdown()
        for heading in ["# Audit report", "## Summary", "## Patients whose data was accessed", "## Accounts", "## Refused requests",
                        "### Bursts", "## Alerts", "## Administrative actions", "## Integrity of the audit log", "## What this report cannot show"] {
            #expect(md.contains("\n" + heading) || md.hasPrefix(heading), "missing \(heading)")
        }
        #expect(md.contains("names patients"))
        #expect(md.contains("2026-11-23 07:00:00 UTC to 2026-11-23 09:00:00 UTC"))
        #expect(md.contains(vault.config.vaultID))
        #expect(md.contains("3 accounts accessed data of 2 patients"))
        #expect(md.contains("| P1 | n/a (not in the vault) | alice (OS user, cli) |"))
        #expect(md.contains("| uid 1001 | 2026-11-23 08:01:10 UTC | 2026-11-23 08:01:45 UTC | 7 | 7 |"))
        #expect(md.contains("key.rotate"))
        #expect(!md.contains("DAMAGED"))
        // Table cells cannot be broken by what a record holds.
        #expect(AuditText.cell("a|b*c_d") == "a\\|b\\*c\\_d")

        let json = try #require(try JSONSerialization.jsonObject(with: try r.jsonData()) as? [String: Any])
        #expect(Set(json.keys) == ["format", "formatVersion", "generatedAt", "vaultID", "vaultPath", "window", "integrity", "summary",
                                   "patients", "accounts", "refused", "bursts", "alerts", "administrative"])
        #expect((json["window"] as? [String: Any])?["since"] as? String == "2026-11-23T07:00:00Z")
        let open = try #require(try JSONSerialization.jsonObject(
            with: try vault.auditReport(window: .all, now: at(0)).jsonData()) as? [String: Any])
        #expect((open["window"] as? [String: Any])?.keys.sorted() == ["since", "until"])  // null, not missing
        #expect(try JSONDecoder.iso.decode(AuditBreachReport.self, from: try r.jsonData()) == r)
    }

    @Test func aDamagedLogIsFlaggedAtTheTop() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try loggedVault(dir)
        let seg = vault.layout.audit + "/segment-000001.log"
        var b = readBytes(seg)
        b[b.count / 3] ^= 0x40
        try writeBytes(seg, b)
        let r = try vault.auditReport(window: try morningWindow, now: at(7200))
        #expect(!r.integrity.ok && !r.integrity.problems.isEmpty)
        #expect(r.integrity.problems.allSatisfy { $0.segment == "segment-000001.log" })
        let md = r.markdown()
        let warning = try #require(md.range(of: "THE AUDIT LOG IS DAMAGED"))
        #expect(warning.lowerBound < (md.range(of: "## Summary")?.lowerBound ?? md.endIndex))
        #expect(md.contains("these figures may be incomplete"))
    }

}
