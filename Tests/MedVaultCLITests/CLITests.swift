import Foundation
import Testing
import TestSupport

/// The `medvault` binary, driven as a user or a script would: real processes, real files.
@Suite struct CLITests {
    static let passphrase = "correct horse battery staple"
    let corpus = Corpus.shared

    func env(_ extra: [String: String] = [:]) -> [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_PASSPHRASE"] = Self.passphrase
        e.removeValue(forKey: "MEDVAULT_VAULT")
        for (k, v) in extra { e[k] = v }
        return e
    }

    @discardableResult
    func mv(_ args: [String], env e: [String: String]? = nil, stdin: String? = nil) throws -> ProcessResult {
        try run(medvaultBinary, args, environment: e ?? env(), stdin: stdin)
    }

    func initVault(_ dir: TempDir) throws -> String {
        let v = dir.sub("vault")
        let r = try mv(["init", "--vault", v, "--kdf", "interactive"])
        #expect(r.status == 0, "\(r.stderr)")
        return v
    }

    @Test func passphraseSourcesAndWrongPassphrase() throws {
        let dir = TempDir()
        defer { dir.remove() }
        // From a file (first line), through MEDVAULT_VAULT.
        try Data((Self.passphrase + "\nignored second line\n").utf8).write(to: URL(fileURLWithPath: dir.sub("pass")))
        var noEnv = env()
        noEnv.removeValue(forKey: "MEDVAULT_PASSPHRASE")
        noEnv["MEDVAULT_VAULT"] = dir.sub("vault")
        let created = try mv(["init", "--passphrase-file", dir.sub("pass"), "--kdf", "interactive", "--json"], env: noEnv)
        #expect(created.status == 0, "\(created.stderr)")
        let recovery = try #require(
            (try JSONSerialization.jsonObject(with: Data(created.stdout.utf8)) as? [String: Any])?["recoveryKey"] as? String)
        #expect(recovery.hasPrefix("MVRK-"))
        // The recovery key, when every passphrase is lost.
        try Data((recovery + "\n").utf8).write(to: URL(fileURLWithPath: dir.sub("recovery.txt")))
        #expect(try mv(["ls", "--vault", dir.sub("vault"), "--recovery-key-file", dir.sub("recovery.txt")], env: noEnv).status == 0)
        // From the environment variable, and from file descriptor 0.
        #expect(try mv(["ls", "--vault", dir.sub("vault")]).status == 0)
        #expect(try mv(["ls", "--vault", dir.sub("vault"), "--passphrase-fd", "0"], env: noEnv, stdin: Self.passphrase + "\n").status == 0)
        // Nothing given and no terminal: a clear error, not a hang.
        let none = try mv(["ls", "--vault", dir.sub("vault")], env: noEnv)
        #expect(none.status == 2)
        #expect(none.stderr.contains("MEDVAULT_PASSPHRASE"))
        // Wrong passphrase: one line, exit 2, vault unchanged.
        let before = allFiles(under: dir.sub("vault")).map { FileManager.default.contents(atPath: $0) }
        let wrong = try mv(["ls", "--vault", dir.sub("vault")], env: env(["MEDVAULT_PASSPHRASE": "wrong passphrase!"]))
        #expect(wrong.status == 2)
        #expect(wrong.stderr == "medvault: wrong passphrase or recovery key\n")
        #expect(allFiles(under: dir.sub("vault")).map { FileManager.default.contents(atPath: $0) } == before)
        // No way to pass a passphrase in argv.
        #expect(try mv(["ls", "--vault", dir.sub("vault"), "--passphrase", "x"]).status != 0)
        // init never overwrites.
        let again = try mv(["init", "--vault", dir.sub("vault"), "--kdf", "interactive"])
        #expect(again.status == 2)
        #expect(again.stderr.contains("refusing to overwrite"))
    }

    @Test func importListExportVerifyEndToEnd() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let v = try initVault(dir)
        let r = try mv(["import", "--vault", v, corpus.root, "--json"])
        #expect(r.status == 1)  // the corpus holds malformed files on purpose
        let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(j["imported"] as? Int == corpus.valid.count)
        #expect(j["rejected"] as? Int == corpus.malformed.count + 1)
        let files = try #require(j["files"] as? [[String: Any]])
        #expect(files.filter { $0["outcome"] as? String == "rejected" }.allSatisfy { ($0["reason"] as? String ?? "").count > 5 })

        // A clean re-import of valid files only exits 0 and does nothing.
        let valid = corpus.valid.map { corpus.path($0) }
        let again = try mv(["import", "--vault", v] + valid)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("imported 0, already present \(valid.count)"))

        let ls = try mv(["ls", "--vault", v, "patients"])
        #expect(ls.stdout.contains("Müller^Jürgen"))
        #expect(ls.stdout.contains("Παπαδόπουλος^Νίκος"))
        let studies = try mv(["ls", "--vault", v, "studies", "--patient-id", "MRN0012345", "--json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(studies.stdout.utf8)) as? [[String: Any]])
        #expect(rows.count == Set(corpus.valid.filter { $0.patient_id == "MRN0012345" }.compactMap(\.study_uid)).count)

        let uid = try #require(rows.first?["studyInstanceUID"] as? String)
        let ex = try mv(["export", "--vault", v, "--study", uid, "--out", dir.sub("out")])
        #expect(ex.status == 0, "\(ex.stderr)")
        for f in corpus.valid where f.study_uid == uid {
            #expect(try sha256(ofFile: dir.sub("out/\(uid)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)
        }
        #expect(try mv(["export", "--vault", v, "--study", "1.2.3", "--out", dir.sub("o2")]).status == 2)
        #expect(try mv(["export", "--vault", v, "--out", dir.sub("o2")]).status != 0)

        let ok = try mv(["verify", "--vault", v])
        #expect(ok.status == 0)
        #expect(ok.stdout.hasPrefix("OK: \(corpus.valid.count) blobs"))
        // Damage one blob: verify names it and exits 1.
        let blob = try #require(allFiles(under: v + "/blobs").first)
        var bytes = Array(try #require(FileManager.default.contents(atPath: blob)))
        bytes[bytes.count - 20] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: blob))
        let bad = try mv(["verify", "--vault", v, "--json"])
        #expect(bad.status == 1)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(bad.stdout.utf8)) as? [String: Any])
        let problems = try #require(report["problems"] as? [[String: Any]])
        #expect(problems.count == 1)
        #expect(problems.first?["blob"] as? String == (blob as NSString).lastPathComponent)
        #expect(problems.first?["kind"] as? String == "tampered")
    }

    @Test func everyVaultFileIsPrivateToItsOwner() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let v = try initVault(dir)
        _ = try mv(["import", "--vault", v] + corpus.valid.prefix(3).map { corpus.path($0) })
        for path in allFiles(under: v) {
            var st = stat()
            #expect(stat(path, &st) == 0)
            #expect(st.st_mode & 0o077 == 0, "\(path) is readable by others")
        }
    }

    @Test func removeSourceThroughTheCLI() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let v = try initVault(dir)
        for f in corpus.valid.prefix(4) {
            try FileManager.default.createDirectory(atPath: dir.sub("in"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: corpus.path(f), toPath: dir.sub("in/" + (f.path as NSString).lastPathComponent + ".\(f.sop_uid!)"))
        }
        let r = try mv(["import", "--vault", v, dir.sub("in"), "--remove-source"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("4 originals removed"))
        #expect(allFiles(under: dir.sub("in")).isEmpty)
        #expect(try mv(["verify", "--vault", v]).status == 0)
    }
}

@Suite struct AccountCLITests {
    @Test func usersAndTokensFromTheCommandLine() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try mv(["user", "add", "dr.meier", "--role", "radiologist"]).status == 0)
        let dup = try mv(["user", "add", "dr.meier", "--role", "viewer"])
        #expect(dup.status == 2 && dup.stderr.contains("already exists"))
        #expect(try mv(["user", "add", "x", "--role", "superuser"]).status != 0)
        let issued = try mv(["token", "issue", "dr.meier", "--expires", "2h", "--json"])
        #expect(issued.status == 0, "\(issued.stderr)")
        let j = try #require(try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])
        let token = try #require(j["token"] as? String)
        #expect(token.hasPrefix("mvt_"))
        let list = try mv(["token", "list"])
        #expect(list.stdout.contains("active") && !list.stdout.contains(token))
        #expect(try mv(["token", "revoke", "--user", "dr.meier"]).stdout.contains("revoked 1 active token"))
        #expect(try mv(["token", "list", "--json"]).stdout.contains("\"revoked\""))
        #expect(try mv(["user", "disable", "dr.meier"]).status == 0)
        #expect(try mv(["token", "issue", "dr.meier"]).status == 2)
        #expect(try mv(["user", "list"]).stdout.contains("disabled"))
        #expect(try mv(["token", "issue", "dr.meier", "--expires", "forever"]).status == 2)
    }
}

@Suite struct AuditCLITests {
    @Test func cliActionsOnPatientDataAreAuditedAndTheLogVerifies() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        let corpus = Corpus.shared
        let doe = corpus.valid.filter { $0.patient_id == "MRN0012345" }
        #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try mv(["import"] + doe.map { corpus.path($0) }).status == 0)
        #expect(try mv(["ls", "studies", "--patient-id", "MRN0012345"]).status == 0)
        #expect(try mv(["export", "--study", doe[0].study_uid!, "--out", dir.sub("out")]).status == 0)
        #expect(try mv(["user", "add", "viewer-1", "--role", "viewer"]).status == 0)
        #expect(try mv(["token", "issue", "viewer-1"]).status == 0)

        let show = try mv(["audit", "show", "--json", "--patient-id", "MRN0012345"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [[String: Any]])
        #expect(records.map { $0["action"] as? String } == ["import", "ls", "export"])
        #expect(records.allSatisfy { ($0["peerUID"] as? Int) == Int(getuid()) && ($0["role"] as? String) == "cli" })
        #expect(records[0]["instances"] as? Int == doe.count)
        #expect(records[2]["instances"] as? Int == doe.filter { $0.study_uid == doe[0].study_uid }.count)
        let all = try #require(try JSONSerialization.jsonObject(with: Data(try mv(["audit", "show", "--json"]).stdout.utf8)) as? [[String: Any]])
        #expect(all.map { $0["action"] as? String } == ["import", "ls", "export", "user.add", "token.issue"])
        #expect(try mv(["audit", "verify"]).stdout.hasPrefix("OK: 5 records"))
        // The log names the patient only sealed.
        for f in allFiles(under: dir.sub("vault/audit")) { #expect(!fileContains(f, Array("MRN0012345".utf8))) }
        // Tampering: one flipped byte in the segment is found, exit 1.
        let seg = dir.sub("vault/audit/segment-000001.log")
        var b = Array(try #require(FileManager.default.contents(atPath: seg)))
        b[b.count / 2] ^= 1
        try Data(b).write(to: URL(fileURLWithPath: seg))
        let bad = try mv(["audit", "verify"])
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("segment-000001.log at byte"))
    }
}
