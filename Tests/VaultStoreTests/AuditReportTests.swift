import VaultAudit
import Foundation
import Testing
import TestSupport
import VaultIO
@testable import VaultStore

@Suite struct AuditReportTests: AuditFixtures {
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
        // Only the API requests of the first minute.
        let minute = try vault.auditReport(window: try AuditWindow(since: at(60), until: at(62)), now: at(0))
        #expect(minute.summary.recordsInWindow == 3)
        #expect(minute.summary.instancesRetrieved == 7 && minute.summary.instancesExported == 0 && minute.accounts.map(\.account) == ["rad"])
        // Open-ended: everything.
        let all = try vault.auditReport(window: .all, now: at(0))
        #expect(all.summary.recordsInWindow == morning().count && all.summary.instancesExported == 7)
        #expect(all.accounts.first { $0.account == "alice" }?.instancesImported == 18)
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

    /// A request record names what its route did; the report takes that, never the path.
    @Test func theServersAccessKindDecidesNotThePath() {
        func kind(_ method: String, _ path: String, _ access: AuditAccess) -> AuditRecordKind {
            var e = AuditEvent(actor: "x", role: "viewer", action: .request(method: method, path: path), outcome: .ok)
            e.access = access
            return AuditRecordKind.of(e)
        }
        #expect(kind("GET", "/dicom-web/studies/1/series/2/instances/3/frames/1", .retrieve) == .access(.retrieve))
        #expect(kind("GET", "/dicom-web/studies/1/thumbnail", .retrieve) == .access(.retrieve))
        #expect(kind("GET", "/dicom-web/studies/1/instances", .search) == .access(.search))
        #expect(kind("GET", "/dicom-web/studies/1/metadata", .metadata) == .access(.metadata))
        // A path shaped like a retrieval that read nothing (a preflight, a 405) is not counted as one.
        #expect(kind("OPTIONS", "/dicom-web/studies/1", .noPatientData) == .otherRequest)
        #expect(kind("DELETE", "/dicom-web/studies/1", .noPatientData) == .otherRequest)
        // A kind from a later release is not guessed at.
        #expect(kind("GET", "/dicom-web/studies/1", .unrecognized("store")) == .otherRequest)
    }

    /// The field in the sealed JSON: `access` only in request records, a later release's kind kept.
    @Test func theAccessFieldIsWrittenOnlyWhenSet() throws {
        let decoder = JSONDecoder.iso
        var e = AuditEvent(time: at(60), actor: "rad", role: "radiologist", action: .request(method: "GET", path: "/dicom-web/studies/1"), outcome: .ok)
        #expect(!String(decoding: try JSONFiles.encode(e, "test"), as: UTF8.self).contains("access"))
        e.access = .retrieve
        let written = String(decoding: try JSONFiles.encode(e, "test"), as: UTF8.self)
        #expect(written.contains(#""access":"retrieve""#))
        #expect(try decoder.decode(AuditEvent.self, from: Data(written.utf8)) == e)
        let later = written.replacingOccurrences(of: #""access":"retrieve""#, with: #""access":"a-later-kind""#)
        #expect(try decoder.decode(AuditEvent.self, from: Data(later.utf8)).access == .unrecognized("a-later-kind"))
        let store = written.replacingOccurrences(of: #""access":"retrieve""#, with: #""access":"store""#)
        #expect(try decoder.decode(AuditEvent.self, from: Data(store.utf8)).access == .store)
        let none = written.replacingOccurrences(of: #""access":"retrieve""#, with: #""access":"none""#)
        #expect(try decoder.decode(AuditEvent.self, from: Data(none.utf8)).access == .noPatientData)
    }

    /// A request record as a release before the `access` field wrote it (sealed JSON, sorted keys)
    /// reads back unchanged, is written back byte for byte the same, and is classified by its path as
    /// that release's report did.
    @Test func aRecordWrittenBeforeTheAccessFieldClassifiesAsBefore() throws {
        let earlier = #"{"action":"GET \/dicom-web\/studies\/1.2.3","actor":"rad","bytes":0,"detail":"200","instanceUIDs":[],"#
            + #""instances":6,"outcome":"ok","patientIDs":["P1"],"peerPID":100,"peerUID":1000,"role":"radiologist","seriesUIDs":[],"#
            + #""studyUIDs":["1.2.3"],"time":"2026-11-23T08:01:00Z"}"#
        let e = try JSONDecoder.iso.decode(AuditEvent.self, from: Data(earlier.utf8))
        #expect(e.access == nil && e.action == .request(method: "GET", path: "/dicom-web/studies/1.2.3") && e.patientIDs == ["P1"])
        #expect(String(decoding: try JSONFiles.encode(e, "test"), as: UTF8.self) == earlier)
        #expect(AuditRecordKind.of(e) == .access(.retrieve))
        #expect(AuditRecordKind.legacyRequestKind(path: "/dicom-web/studies/1.2.3/series/4/metadata") == .access(.metadata))
        // Pixel routes and the search within a study count too (earlier reports missed them); an OPTIONS
        // or a refused method on a retrieval path is not a read.
        let instance = "/dicom-web/studies/1.2.3/series/4/instances/5"
        for path in [instance + "/frames/1,2", instance + "/bulkdata/7FE00010", instance + "/rendered", instance + "/thumbnail",
                     instance + "/frames/3/rendered", "/dicom-web/studies/1.2.3/series/4/rendered", "/dicom-web/studies/1.2.3/thumbnail"] {
            #expect(AuditRecordKind.legacyRequestKind(path: path) == .access(.retrieve), "\(path)")
            #expect(AuditRecordKind.legacyRequestKind(method: "HEAD", path: path) == .access(.retrieve), "\(path)")
            #expect(AuditRecordKind.legacyRequestKind(method: "OPTIONS", path: path) == .otherRequest, "\(path)")
        }
        #expect(AuditRecordKind.legacyRequestKind(path: "/dicom-web/studies/1.2.3/instances") == .access(.search))
        #expect(AuditRecordKind.legacyRequestKind(method: "DELETE", path: instance) == .otherRequest)
    }

    /// The whole morning as earlier releases logged it (no `access` in any record) gives the same report
    /// as the morning logged by this release.
    @Test func aLogWrittenBeforeTheAccessFieldGivesTheSameReport() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let current = try loggedVault(dir)
        let (earlier, _) = try makeVault(dir, "earlier")
        for e in morningAsEarlierReleasesWroteIt() { try earlier.audit(e) }
        #expect(earlier.readAudit().records.allSatisfy { $0.event.access == nil })
        let expected = try current.auditReport(window: try morningWindow, now: at(7200))
        var report = try earlier.auditReport(window: try morningWindow, now: at(7200))
        report.vaultID = expected.vaultID
        report.vaultPath = expected.vaultPath
        #expect(report == expected)
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
