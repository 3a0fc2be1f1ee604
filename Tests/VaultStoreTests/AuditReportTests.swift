import VaultAudit
import Foundation
import Testing
import TestSupport
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
