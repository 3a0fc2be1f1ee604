// A small clinic's morning as audit records (API reads, CLI exports, refusals, a burst, an alert), for
// the report tests of the engine and of the CLI's renderer.
public import VaultAudit
public import Foundation
import Testing
public import VaultStore

public protocol AuditFixtures {}

extension AuditFixtures {
    public static var base: Date { Date(timeIntervalSince1970: 1_795_420_800) }  // 2026-11-23 08:00:00 UTC

    public func at(_ seconds: TimeInterval) -> Date { Self.base.addingTimeInterval(seconds) }

    /// An API request as this release records it: the path, and what the server says its route does.
    public func api(_ path: String, _ access: AuditAccess, _ account: String, _ role: String, at t: TimeInterval, pid: Int32, patients: [String] = [],
             instances: Int = 0, outcome: String = "ok", status: String = "200", uid: UInt32? = 1000) -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: account, role: role, peerUID: uid, peerPID: pid, action: .request(method: "GET", path: path), outcome: AuditOutcome(rawValue: outcome)!)
        e.access = access
        e.patientIDs = patients
        e.instances = instances
        e.detail = status
        return e
    }

    public func cli(_ action: String, at t: TimeInterval, patients: [String] = [], instances: Int = 0, bytes: Int64 = 0,
             outcome: String = "ok", detail: String = "") -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: "alice", role: "cli", peerUID: 1000, peerPID: 7000, action: AuditAction(rawValue: action), outcome: AuditOutcome(rawValue: outcome)!)
        e.patientIDs = patients
        e.instances = instances
        e.bytes = bytes
        e.detail = detail
        return e
    }

    public func refusal(at t: TimeInterval, uid: UInt32?, account: String = "-", status: String = "401") -> AuditEvent {
        var e = AuditEvent(time: at(t), actor: account, role: account == "-" ? "-" : "backup", peerUID: uid, peerPID: 9000 + Int32(t),
                           action: .request(method: "GET", path: "/dicom-web/studies"), outcome: .denied)
        e.access = .search
        e.detail = status
        return e
    }

    /// A sealed, chained log of what a small clinic's morning might hold, plus records outside the window.
    public func morning() -> [AuditEvent] {
        var events: [AuditEvent] = [
            cli("import", at: -7200, patients: ["P1", "P2"], instances: 18, bytes: 30_000),  // before the window
            cli("export", at: 0, patients: ["P1"], instances: 6, bytes: 10_722, detail: "to /mnt/usb"),
            cli("ls", at: 5, patients: ["P1", "P2"], detail: "patients"),
            api("/dicom-web/studies/1.2.3", .retrieve, "rad", "radiologist", at: 60, pid: 100, patients: ["P1"], instances: 6),
            api("/dicom-web/studies/1.2.4/series/1.2.4.1/instances/1.2.4.1.1", .retrieve, "rad", "radiologist", at: 61, pid: 101, patients: ["P2"], instances: 1),
            api("/dicom-web/studies/1.2.4/series/1.2.4.1/metadata", .metadata, "rad", "radiologist", at: 62, pid: 102, patients: ["P2"], instances: 3),
            api("/dicom-web/studies", .search, "view", "viewer", at: 63, pid: 103, patients: ["P1", "P2"]),
            api("/dicom-web/studies/1.2.4/series", .search, "view", "viewer", at: 64, pid: 104, patients: ["P2"]),
            api("/dicom-web/studies/9.9.9", .retrieve, "view", "viewer", at: 65, pid: 105, outcome: "failed", status: "404"),
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

    /// The same morning as a release before the `access` field wrote it: request records without it.
    public func morningAsEarlierReleasesWroteIt() -> [AuditEvent] {
        morning().map {
            var e = $0
            e.access = nil
            return e
        }
    }

    public func loggedVault(_ dir: TempDir) throws -> Vault {
        let (vault, _) = try makeVault(dir)
        for e in morning() { try vault.audit(e) }
        return vault
    }

    public var morningWindow: AuditWindow { get throws { try AuditWindow(since: at(-3600), until: at(3600)) } }

}

extension JSONDecoder {
    /// Decodes the report's JSON (ISO 8601 times).
    public static var iso: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}
