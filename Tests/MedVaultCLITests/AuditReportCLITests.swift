import Foundation
import Testing
import TestSupport

/// `medvault audit report` and the time filters, checked against accesses the test really made: CLI
/// commands, and requests to `medvault serve` over its Unix socket with curl.
@Suite struct AuditReportCLITests {
    let corpus = Corpus.shared
    var doe: [CorpusFile] { corpus.valid.filter { $0.patient_id == "MRN0012345" } }
    var smith: [CorpusFile] { corpus.valid.filter { $0.patient_id == "MRN0067890" } }

    struct Vault {
        let dir = TempDir("medvault-audit-report")
        var env: [String: String] { medvaultEnvironment(vault: dir.sub("vault")) }
        var socket: String { dir.sub("vault/run/medvault.sock") }

        @discardableResult
        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }

        func json(_ a: [String]) throws -> [String: Any] {
            let r = try mv(a)
            #expect(r.status == 0, "\(a): \(r.stderr)")
            return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        }

        /// The HTTP status of a GET over the socket (the body is discarded).
        func get(_ path: String, token: String) throws -> Int {
            let r = try run("/usr/bin/curl", ["-s", "--unix-socket", socket, "-o", "/dev/null", "-w", "%{http_code}",
                                              "-H", "Authorization: Bearer \(token)", "http://localhost" + path])
            return Int(r.stdout) ?? -1
        }
    }

    func token(_ v: Vault, _ user: String) throws -> String {
        try #require(try v.json(["token", "issue", user, "--json"])["token"] as? String)
    }

    func dict(_ o: Any?) -> [String: Any] { o as? [String: Any] ?? [:] }
    func list(_ o: Any?) -> [[String: Any]] { o as? [[String: Any]] ?? [] }

    @Test func reportFiguresEqualTheAccessesMade() throws {
        let v = Vault()
        defer { v.dir.remove() }
        #expect(try v.mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try v.mv(["import"] + (doe + smith).map { corpus.path($0) }).status == 0)

        // Phase 1, the CLI: a listing of both patients, an export of one of Doe's studies.
        #expect(try v.mv(["ls", "patients"]).status == 0)
        let studyA = try #require(doe.first?.study_uid)
        let exported = doe.filter { $0.study_uid == studyA }
        #expect(try v.mv(["export", "--study", studyA, "--out", v.dir.sub("out")]).status == 0)
        let exportedBytes = exported.reduce(0) { $0 + ($1.size ?? 0) }
        #expect(try v.mv(["user", "add", "rad", "--role", "radiologist"]).status == 0)
        #expect(try v.mv(["user", "add", "bk", "--role", "backup"]).status == 0)
        let rad = try token(v, "rad"), bk = try token(v, "bk")

        // The server starts while we wait for the next-but-one second: every record of phase 1 is
        // before `boundary`, every record of phase 2 at or after it (the log keeps whole seconds).
        let server = Process()
        server.executableURL = URL(fileURLWithPath: medvaultBinary)
        server.arguments = ["serve"]
        server.environment = v.env
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { server.interrupt(); server.waitUntilExit() } }
        let boundary = Date(timeIntervalSince1970: (Date().timeIntervalSince1970).rounded(.down) + 2)
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: v.socket) { usleep(50_000) }
        let wait = boundary.timeIntervalSinceNow + 0.05
        if wait > 0 { usleep(UInt32(wait * 1e6)) }

        // Phase 2, the API: Smith's study, one of Doe's instances from the other study, metadata of one of
        // Smith's series, a search naming Smith; a 403 for the backup account; ten wrong tokens at once.
        let smithStudy = try #require(smith.first?.study_uid), smithSeries = try #require(smith.first?.series_uid)
        let doeB = try #require(doe.first { $0.study_uid != studyA })
        #expect(try v.get("/dicom-web/studies/\(smithStudy)", token: rad) == 200)
        #expect(try v.get("/dicom-web/studies/\(doeB.study_uid!)/series/\(doeB.series_uid!)/instances/\(doeB.sop_uid!)", token: rad) == 200)
        #expect(try v.get("/dicom-web/studies/\(smithStudy)/series/\(smithSeries)/metadata", token: rad) == 200)
        #expect(try v.get("/dicom-web/studies?PatientID=MRN0067890", token: rad) == 200)
        #expect(try v.get("/dicom-web/studies", token: bk) == 403)
        let statuses = Statuses()
        DispatchQueue.concurrentPerform(iterations: 10) { i in
            statuses.add((try? v.get("/dicom-web/studies", token: "mvt_guess\(i)")) ?? -1)
        }
        #expect(statuses.all == Array(repeating: 401, count: 10))
        server.interrupt()
        server.waitUntilExit()

        // The whole period: figures as made.
        let r = try v.json(["audit", "report", "--since", "1h", "--format", "json"])
        #expect(r["format"] as? String == "medvault-audit-report")
        #expect(dict(r["integrity"])["ok"] as? Bool == true)
        let s = dict(r["summary"])
        #expect(s["patients"] as? Int == 2)
        #expect(s["accounts"] as? Int == 2)  // rad, and the OS user who ran ls and export
        #expect(s["instancesRetrieved"] as? Int == smith.count + 1)
        #expect(s["instancesMetadata"] as? Int == smith.filter { $0.series_uid == smithSeries }.count)
        #expect(s["instancesExported"] as? Int == exported.count)
        let retrievedBytes = smith.reduce(0) { $0 + ($1.size ?? 0) } + (doeB.size ?? 0)
        #expect(s["bytes"] as? Int == exportedBytes + retrievedBytes)
        #expect(s["recordsWithoutByteCount"] as? Int == 1)  // metadata records no bytes: n/a, not 0
        #expect(s["searches"] as? Int == 1 && s["listings"] as? Int == 1)
        #expect(s["refused"] as? Int == 11 && s["refusedUnauthenticated"] as? Int == 10 && s["refusedForbidden"] as? Int == 1)
        #expect(s["bursts"] as? Int == 1 && s["alerts"] as? Int == 1)
        #expect(s["administrativeActions"] as? Int == 4)  // 2 × user.add, 2 × token.issue

        let patients = list(r["patients"])
        #expect(patients.map { $0["patientID"] as? String } == ["MRN0012345", "MRN0067890"])
        let doeRow = patients[0], smithRow = patients[1]
        #expect(doeRow["catalogNames"] as? [String] == ["Doe^Jane"])
        #expect(smithRow["catalogNames"] as? [String] == ["Smith^John^Q"])
        let doeCLI = try #require(list(doeRow["accessors"]).first { $0["role"] as? String == "cli" })
        #expect(dict(doeCLI["figures"])["instancesExported"] as? Int == exported.count)
        #expect(dict(doeCLI["figures"])["bytes"] as? Int == exportedBytes)
        #expect(dict(doeCLI["figures"])["listings"] as? Int == 1)
        #expect(doeCLI["peerUIDs"] as? [Int] == [Int(getuid())])
        let doeRad = try #require(list(doeRow["accessors"]).first { $0["account"] as? String == "rad" })
        #expect(dict(doeRad["figures"])["instancesRetrieved"] as? Int == 1)
        #expect(dict(doeRad["figures"])["bytes"] as? Int == doeB.size)
        let smithRad = dict(try #require(list(smithRow["accessors"]).first { $0["account"] as? String == "rad" })["figures"])
        #expect(smithRad["retrievals"] as? Int == 1 && smithRad["instancesRetrieved"] as? Int == smith.count)
        #expect(smithRad["metadataRequests"] as? Int == 1 && smithRad["searches"] as? Int == 1)

        let accounts = list(r["accounts"])
        #expect(Set(accounts.compactMap { $0["account"] as? String }).isSuperset(of: ["rad", "bk"]))
        let radAccount = try #require(accounts.first { $0["account"] as? String == "rad" })
        #expect(radAccount["patients"] as? Int == 2 && radAccount["records"] as? Int == 4 && radAccount["role"] as? String == "radiologist")
        #expect(accounts.first { $0["account"] as? String == "bk" }?["refused"] as? Int == 1)

        let refused = list(r["refused"])
        #expect(refused.count == 1)
        #expect(refused.first?["peer"] as? String == "uid \(getuid())")
        #expect(refused.first?["unauthenticated"] as? Int == 10 && refused.first?["forbidden"] as? Int == 1)
        #expect(refused.first?["accounts"] as? [String] == ["bk"])
        #expect(list(r["bursts"]).first?["refusals"] as? Int == 11)
        #expect((list(r["alerts"]).first?["detail"] as? String)?.contains("10 failed authentications") == true)

        // Phase 2 only: no export, no listing, no administration (but this test's own reports).
        let since = ISO8601DateFormatter().string(from: boundary)
        let api = try v.json(["audit", "report", "--since", since, "--format", "json"])
        let a = dict(api["summary"])
        #expect(a["instancesExported"] as? Int == 0 && a["listings"] as? Int == 0)
        #expect(a["instancesRetrieved"] as? Int == smith.count + 1 && a["refused"] as? Int == 11)
        #expect(list(api["administrative"]).allSatisfy { $0["action"] as? String == "audit.report" })
        // Phase 1 only: the export and the listing, nothing from the server.
        let until = ISO8601DateFormatter().string(from: boundary.addingTimeInterval(-1))
        let cli = dict(try v.json(["audit", "report", "--since", "1h", "--until", until, "--format", "json"])["summary"])
        #expect(cli["instancesExported"] as? Int == exported.count && cli["listings"] as? Int == 1)
        #expect(cli["instancesRetrieved"] as? Int == 0 && cli["refused"] as? Int == 0 && cli["alerts"] as? Int == 0)
        #expect(cli["administrativeActions"] as? Int == 4)
        // A window entirely in the past: nothing.
        let past = try v.json(["audit", "report", "--since", "2000-01-01", "--until", "2000-12-31", "--format", "json"])
        #expect(dict(past["summary"])["recordsInWindow"] as? Int == 0 && list(past["patients"]).isEmpty)
        #expect(dict(past["integrity"])["ok"] as? Bool == true)

        // audit show takes the same window.
        let shown = try run(medvaultBinary, ["audit", "show", "--json", "--since", since], environment: v.env)
        let records = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [[String: Any]])
        let actions = records.compactMap { $0["action"] as? String }
        #expect(!actions.contains("export") && !actions.contains("ls") && actions.contains("alert"))
        #expect(actions.filter { $0.hasPrefix("GET ") }.count == 15)  // 4 reads, 1 forbidden, 10 refused
        let before = try run(medvaultBinary, ["audit", "show", "--json", "--until", until], environment: v.env)
        let early = try #require(try JSONSerialization.jsonObject(with: Data(before.stdout.utf8)) as? [[String: Any]])
        #expect(early.compactMap { $0["action"] as? String } == ["import", "ls", "export", "user.add", "user.add", "token.issue", "token.issue"])

        // The document for the data-protection officer.
        let md = try v.mv(["audit", "report", "--since", "1h"])
        #expect(md.status == 0)
        let config = try #require(FileManager.default.contents(atPath: v.dir.sub("vault/vault.json")))
        let vaultID = try #require(dict(try JSONSerialization.jsonObject(with: config))["vaultID"] as? String)
        for needle in ["# Audit report", "names patients", vaultID, "## Summary", "2 accounts accessed data of 2 patients",
                       "## Patients whose data was accessed", "| MRN0012345 | Doe^Jane |", "| MRN0067890 | Smith^John^Q |",
                       "## Accounts", "rad (radiologist)", "## Refused requests", "### Bursts", "## Alerts",
                       "## Administrative actions", "user.add", "## Integrity of the audit log", "## What this report cannot show"] {
            #expect(md.stdout.contains(needle), "report lacks \(needle)")
        }
        #expect(!md.stdout.contains("DAMAGED"))
        // Each report was itself recorded, and the log still verifies.
        #expect(try v.mv(["audit", "verify"]).status == 0)
        let reports = try JSONSerialization.jsonObject(with: Data(try v.mv(["audit", "show", "--json"]).stdout.utf8)) as? [[String: Any]]
        #expect(reports?.filter { $0["action"] as? String == "audit.report" }.count == 5)
    }

    @Test(arguments: ["flip", "truncate"])
    func aTamperedLogIsFlaggedAtTheTopAndExitsOne(damage: String) throws {
        let v = Vault()
        defer { v.dir.remove() }
        #expect(try v.mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try v.mv(["import"] + doe.map { corpus.path($0) }).status == 0)
        #expect(try v.mv(["export", "--study", try #require(doe.first?.study_uid), "--out", v.dir.sub("out")]).status == 0)
        #expect(try v.mv(["ls"]).status == 0)
        let seg = v.dir.sub("vault/audit/segment-000001.log")
        var b = Array(try #require(FileManager.default.contents(atPath: seg)))
        if damage == "flip" { b[b.count / 2] ^= 1 } else { b.removeLast(7) }
        try Data(b).write(to: URL(fileURLWithPath: seg))

        let md = try v.mv(["audit", "report", "--since", "1h"])
        #expect(md.status == 1)
        let warning = try #require(md.stdout.range(of: "THE AUDIT LOG IS DAMAGED"))
        #expect(warning.lowerBound < (md.stdout.range(of: "## Summary")?.lowerBound ?? md.stdout.startIndex))
        #expect(md.stdout.contains("segment-000001.log at byte"))
        #expect(md.stderr.contains("the audit log is damaged"))
        let json = try v.mv(["audit", "report", "--since", "1h", "--format", "json"])
        #expect(json.status == 1)
        let integrity = dict(dict(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)))["integrity"])
        #expect(integrity["ok"] as? Bool == false)
        #expect(list(integrity["problems"]).first?["segment"] as? String == "segment-000001.log")
        #expect(try v.mv(["audit", "show"]).stderr.contains("damaged"))
    }

    @Test func badTimesAreRefusedWithExitTwo() throws {
        let v = Vault()
        defer { v.dir.remove() }
        for args in [["report", "--since", "yesterday"], ["report", "--since", "2026-02-30"], ["report", "--since", "1h", "--until", "soon"],
                     ["show", "--since", "7x"], ["show", "--until", "2026-11-23T25:00"]] {
            let r = try v.mv(["audit"] + args)
            #expect(r.status == 2, "\(args)")
            #expect(r.stderr.contains("not a time") && r.stderr.contains("72h"), "\(args): \(r.stderr)")
        }
        for args in [["report", "--since", "1h", "--until", "2h"], ["show", "--since", "2026-11-24", "--until", "2026-11-23"]] {
            let r = try v.mv(["audit"] + args)
            #expect(r.status == 2 && r.stderr.contains("the window is empty"), "\(args): \(r.stderr)")
        }
        // --since is required for a report: a breach report is always about a period.
        #expect(try v.mv(["audit", "report"]).status != 0)
    }
}

/// HTTP statuses gathered from concurrent requests.
final class Statuses: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Int] = []
    func add(_ v: Int) { lock.lock(); values.append(v); lock.unlock() }
    var all: [Int] { lock.lock(); defer { lock.unlock() }; return values }
}
