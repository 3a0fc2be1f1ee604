import Foundation
import Testing
import TestSupport
@testable import VaultStore

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

@Suite struct AuditReportTests {
    static let base = Date(timeIntervalSince1970: 1_795_420_800)  // 2026-11-23 08:00:00 UTC

    func at(_ seconds: TimeInterval) -> Date { Self.base.addingTimeInterval(seconds) }

    func api(_ path: String, _ account: String, _ role: String, at t: TimeInterval, pid: Int32, patients: [String] = [],
             instances: Int = 0, outcome: String = "ok", status: String = "200", uid: UInt32? = 1000) -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: account, role: role, peerUID: uid, peerPID: pid, action: .request(method: "GET", path: path), outcome: AuditOutcome(rawValue: outcome)!)
        e.patientIDs = patients
        e.instances = instances
        e.detail = status
        return e
    }

    func cli(_ action: String, at t: TimeInterval, patients: [String] = [], instances: Int = 0, bytes: Int64 = 0,
             outcome: String = "ok", detail: String = "") -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: "alice", role: "cli", peerUID: 1000, peerPID: 7000, action: AuditAction(rawValue: action), outcome: AuditOutcome(rawValue: outcome)!)
        e.patientIDs = patients
        e.instances = instances
        e.bytes = bytes
        e.detail = detail
        return e
    }

    func refusal(at t: TimeInterval, uid: UInt32?, account: String = "-", status: String = "401") -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: account, role: account == "-" ? "-" : "backup", peerUID: uid, peerPID: 9000 + Int32(t),
                           action: .request(method: "GET", path: "/dicom-web/studies"), outcome: .denied)
        e.detail = status
        return e
    }

    /// A sealed, chained log of what a small clinic's morning might hold, plus records outside the window.
    func morning() -> [AuditEvent] {
        var events: [AuditEvent] = [
            cli("import", at: -7200, patients: ["P1", "P2"], instances: 18, bytes: 30_000),  // before the window
            cli("export", at: 0, patients: ["P1"], instances: 6, bytes: 10_722, detail: "to /mnt/usb"),
            cli("ls", at: 5, patients: ["P1", "P2"], detail: "patients"),
            api("/dicom-web/studies/1.2.3", "rad", "radiologist", at: 60, pid: 100, patients: ["P1"], instances: 6),
            api("/dicom-web/studies/1.2.4/series/1.2.4.1/instances/1.2.4.1.1", "rad", "radiologist", at: 61, pid: 101, patients: ["P2"], instances: 1),
            api("/dicom-web/studies/1.2.4/series/1.2.4.1/metadata", "rad", "radiologist", at: 62, pid: 102, patients: ["P2"], instances: 3),
            api("/dicom-web/studies", "view", "viewer", at: 63, pid: 103, patients: ["P1", "P2"]),
            api("/dicom-web/studies/1.2.4/series", "view", "viewer", at: 64, pid: 104, patients: ["P2"]),
            api("/dicom-web/studies/9.9.9", "view", "viewer", at: 65, pid: 105, outcome: "failed", status: "404"),
            cli("export", at: 66, outcome: "failed", detail: "study 9.9.9: not found"),
            refusal(at: 70, uid: 1001, account: "bk", status: "403"),
            cli("user.add", at: 300, detail: "carol as viewer"),
            cli("token.revoke", at: 301, detail: "token 3"),
            cli("key.rotate", at: 302, detail: "master key rotated"),  // an action this report does not know: kept
            cli("export", at: 86400 * 2, patients: ["P3"], instances: 1, bytes: 500),  // after the window
        ]
        // uid 1001: 6 refusals within 6 s (a burst) and, much later, 5 more within 40 s (another).
        events += (0..<6).map { refusal(at: 100 + Double($0), uid: 1001) }
        events += (0..<5).map { refusal(at: 1000 + Double($0) * 10, uid: 1001) }
        // uid 1002: 4 within a minute (below the threshold); uid 1003: 5, 20 s apart (never 5 in any 60 s).
        events += (0..<4).map { refusal(at: 200 + Double($0), uid: 1002) }
        events += (0..<5).map { refusal(at: 400 + Double($0) * 20, uid: 1003) }
        var alert = AuditEvent(time: at(109), actor: "-", role: "-", peerUID: 1001, peerPID: 9109, action: .alert, outcome: .alert)
        alert.detail = "10 failed authentications from uid 1001 in the last 60 s"
        events.append(alert)
        return events.sorted { $0.time < $1.time }
    }

    func loggedVault(_ dir: TempDir) throws -> Vault {
        let (vault, _) = try makeVault(dir)
        for e in morning() { try vault.audit(e) }
        return vault
    }

    var morningWindow: AuditWindow { get throws { try AuditWindow(since: at(-3600), until: at(3600)) } }

    @Test func figuresEqualTheRecordedAccesses() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try loggedVault(dir)
        let r = try vault.auditReport(window: try morningWindow, now: at(7200))
        #expect(r.integrity.ok && r.integrity.records == morning().count)
        #expect(r.summary.recordsInWindow == morning().count - 2)  // the import before and the export after are outside
        #expect(r.summary.patients == 2 && r.patients.map(\.patientID) == ["P1", "P2"])
        #expect(r.summary.accounts == 3)
        #expect(r.summary.instancesRetrieved == 7 && r.summary.instancesMetadata == 3 && r.summary.instancesExported == 6)
        #expect(r.summary.bytes == 10_722 && r.summary.recordsWithoutByteCount == 3)
        #expect(r.summary.searches == 2 && r.summary.listings == 1)
        #expect(r.summary.failed == 2)
        #expect(r.summary.refused == 21 && r.summary.refusedUnauthenticated == 20 && r.summary.refusedForbidden == 1)
        #expect(r.summary.alerts == 1 && r.alerts.first?.peer == "uid 1001")
        #expect(r.administrative.map(\.action) == ["user.add", "token.revoke", "key.rotate"])

        // Per patient: who, how, how much.
        let p1 = try #require(r.patients.first { $0.patientID == "P1" })
        #expect(p1.accessors.map(\.account) == ["alice", "rad", "view"])
        #expect(p1.accessors[0].role == "cli" && p1.accessors[0].figures.instancesExported == 6 && p1.accessors[0].figures.bytes == 10_722)
        #expect(p1.accessors[0].figures.listings == 1 && p1.accessors[0].peerUIDs == [1000] && p1.accessors[0].peerPIDs == [7000])
        #expect(p1.accessors[1].figures.retrievals == 1 && p1.accessors[1].figures.instancesRetrieved == 6)
        #expect(p1.accessors[2].figures.searches == 1 && p1.accessors[2].figures.instancesRetrieved == 0)
        #expect(p1.totals.first == at(0) && p1.totals.last == at(63))
        #expect(p1.catalogNames.isEmpty)  // never imported into this vault: n/a, not invented
        let p2 = try #require(r.patients.first { $0.patientID == "P2" })
        let rad2 = try #require(p2.accessors.first { $0.account == "rad" })
        #expect(rad2.figures.instancesRetrieved == 1 && rad2.figures.instancesMetadata == 3 && rad2.figures.recordsWithoutByteCount == 2)
        #expect(rad2.peerPIDs == [101, 102])
        #expect(p2.accessors.first { $0.account == "view" }?.figures.searches == 2)

        // Per account.
        let view = try #require(r.accounts.first { $0.account == "view" })
        #expect(view.patients == 2 && view.failed == 1 && view.records == 3)
        let alice = try #require(r.accounts.first { $0.account == "alice" })
        #expect(alice.failed == 1 && alice.administrativeActions == 3 && alice.imports == 0)
        let bk = try #require(r.accounts.first { $0.account == "bk" })
        #expect(bk.refused == 1 && bk.patients == 0)

        // Refusals by peer, and the bursts among them.
        #expect(r.refused.map(\.peer) == ["uid 1001", "uid 1002", "uid 1003"])
        #expect(r.refused[0].unauthenticated == 11 && r.refused[0].forbidden == 1 && r.refused[0].accounts == ["bk"])
        #expect(r.bursts.count == 2)
        #expect(r.bursts.allSatisfy { $0.peer == "uid 1001" })
        #expect(r.bursts[0].start == at(70) && r.bursts[0].end == at(105) && r.bursts[0].refusals == 7 && r.bursts[0].peakPerMinute == 7)
        #expect(r.bursts[1].start == at(1000) && r.bursts[1].refusals == 5)
    }

    @Test func aWindowExcludesRecordsOutsideIt() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let vault = try loggedVault(dir)
        let past = try vault.auditReport(window: try AuditWindow(since: at(-86400 * 365), until: at(-86400)), now: at(0))
        #expect(past.summary.recordsInWindow == 0 && past.patients.isEmpty && past.accounts.isEmpty && past.refused.isEmpty)
        #expect(past.integrity.ok && past.integrity.records == morning().count)  // the whole log is still checked
        #expect(past.markdown().contains("No patient's data was read, exported, searched for or listed in this period."))
        // Only the API requests of the first minute.
        let minute = try vault.auditReport(window: try AuditWindow(since: at(60), until: at(62)), now: at(0))
        #expect(minute.summary.recordsInWindow == 3)
        #expect(minute.summary.instancesRetrieved == 7 && minute.summary.instancesExported == 0 && minute.accounts.map(\.account) == ["rad"])
        // Open-ended: everything.
        let all = try vault.auditReport(window: .all, now: at(0))
        #expect(all.summary.recordsInWindow == morning().count && all.summary.instancesExported == 7)
        #expect(all.accounts.first { $0.account == "alice" }?.instancesImported == 18)
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

    @Test func recordsAreClassifiedByWhatTheyDisclose() {
        func kind(_ action: String, role: String = "viewer") -> AuditRecordKind {
            AuditRecordKind.of(AuditEvent(actor: "x", role: role, action: AuditAction(rawValue: action), outcome: .ok))
        }
        #expect(kind("GET /dicom-web/studies") == .access(.search))
        #expect(kind("GET /dicom-web/series") == .access(.search))
        #expect(kind("GET /dicom-web/instances") == .access(.search))
        #expect(kind("GET /dicom-web/studies/1/series") == .access(.search))
        #expect(kind("GET /dicom-web/studies/1/series/2/instances") == .access(.search))
        #expect(kind("GET /dicom-web/studies/1") == .access(.retrieve))
        #expect(kind("GET /dicom-web/studies/1/series/2") == .access(.retrieve))
        #expect(kind("GET /dicom-web/studies/1/series/2/instances/3") == .access(.retrieve))
        #expect(kind("GET /dicom-web/studies/1/metadata") == .access(.metadata))
        #expect(kind("GET /dicom-web/studies/1/series/2/instances/3/metadata") == .access(.metadata))
        #expect(kind("GET /dicom-web/nonsense/1") == .otherRequest)
        #expect(kind("GET /favicon.ico") == .otherRequest)
        #expect(kind("export", role: "cli") == .access(.export))
        #expect(kind("ls", role: "cli") == .access(.list))
        #expect(kind("import", role: "cli") == .importData)
        #expect(kind("alert") == .alert)
        #expect(kind("passphrase.change", role: "cli") == .administrative)
    }

    @Test func burstsNeedFiveWithinOneMinute() {
        func bursts(_ seconds: [TimeInterval]) -> [AuditBreachReport.Burst] {
            AuditBreachReport.bursts(peer: "uid 1", times: seconds.map(at))
        }
        #expect(bursts([0, 1, 2, 3]).isEmpty)
        #expect(bursts([0, 1, 2, 3, 4]).map(\.refusals) == [5])
        #expect(bursts([0, 15, 30, 45, 60]).isEmpty)  // 60 s apart end to end: not within one minute
        #expect(bursts([0, 15, 30, 45, 59]).map(\.refusals) == [5])
        // 50 is within a minute of 0…4; 100 and 150 are not in any 5-in-60 s span; the next burst is separate.
        #expect(bursts([0, 1, 2, 3, 4, 50, 100, 150, 1000, 1001, 1002, 1003, 1004, 1005]).map(\.refusals) == [6, 6])
        // A refusal a minute after the burst's last one, and in no 5-in-60 s span itself, stays outside it.
        let b = bursts([0, 1, 2, 3, 4, 30, 90])
        #expect(b.count == 1 && b[0].refusals == 6 && b[0].end == at(30) && b[0].peakPerMinute == 6)
    }
}

extension JSONDecoder {
    static var iso: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
