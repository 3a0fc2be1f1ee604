import Foundation
import Testing
import TestSupport

/// `medvault forget` and `medvault retention apply` end to end, including a forget killed halfway.
@Suite struct ForgetCLITests {
    let corpus = Corpus.shared

    @Test func forgetNeedsConfirmationSurvivesAKillAndIsAuditedUnderAPseudonym() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        func mv(_ a: [String], _ extra: [String: String] = [:]) throws -> ProcessResult {
            try run(medvaultBinary, a, environment: env.merging(extra) { $1 })
        }
        #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try mv(["import"] + corpus.valid.map { corpus.path($0) }).status == 0)
        let pid = "MRN0012345"
        let theirs = corpus.valid.filter { $0.patient_id == pid }
        let blobsBefore = allFiles(under: dir.sub("vault/blobs")).count

        // No terminal and no --yes: refused, nothing changed.
        let refused = try mv(["forget", "--patient-id", pid])
        #expect(refused.status == 2 && refused.stderr.contains("--yes"))
        #expect(allFiles(under: dir.sub("vault/blobs")).count == blobsBefore)
        #expect(try mv(["forget", "--patient-id", "NO-SUCH-ID", "--yes"]).status == 2)

        // Killed after the catalog commit, before the blob files are gone: the vault still verifies,
        // and the next writer finishes the job (files, WAL, snapshots, audit record).
        let snapshotsBefore = Set(FileManager.default.subpaths(atPath: dir.sub("vault/snapshots")) ?? [])
        #expect(snapshotsBefore.contains { $0.hasSuffix(".mvsnap") })
        let killed = try mv(["forget", "--patient-id", pid, "--yes"], ["MEDVAULT_FAULT": "erase.committed"])
        #expect(killed.status == SIGKILL)
        let verify = try mv(["verify", "--json"])
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(try mv(["ls", "--patient-id", pid, "--json"]).stdout.contains(pid) == false)
        #expect(try mv(["import"] + corpus.valid.filter { $0.patient_id != pid }.map { corpus.path($0) }).status == 0)
        #expect(allFiles(under: dir.sub("vault/blobs")).count == blobsBefore - theirs.count)
        #expect(try mv(["verify"]).status == 0)
        let snapshotsAfter = Set(FileManager.default.subpaths(atPath: dir.sub("vault/snapshots")) ?? [])
        #expect(snapshotsAfter.isDisjoint(with: snapshotsBefore.filter { $0.hasSuffix(".mvsnap") }), "a snapshot holding the erased key survived")
        let wal = (try? FileManager.default.attributesOfItem(atPath: dir.sub("vault/catalog.sqlite-wal"))[.size] as? Int) ?? 0
        #expect(wal < 1 << 20)

        // A second patient, cleanly; the audit log names neither in clear.
        let other = "MRN0067890"
        let done = try mv(["forget", "--patient-id", other, "--yes", "--json"])
        #expect(done.status == 0, "\(done.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(done.stdout.utf8)) as? [String: Any])
        #expect(summary["instances"] as? Int == corpus.valid.filter { $0.patient_id == other }.count)
        let log = try mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let forgets = records.filter { $0["action"] as? String == "forget" && $0["outcome"] as? String == "ok" }
        #expect(forgets.count == 2)  // the interrupted one, finished by the next writer, and this one
        #expect(forgets.filter { ($0["detail"] as? String ?? "").hasPrefix("finished after an interruption") }.count == 1)
        #expect(forgets.allSatisfy { r in
            let text = String(describing: r)
            return !text.contains(other) && !text.contains(pid) && (r["detail"] as? String ?? "").contains("patient-")
        })
        #expect(try mv(["audit", "verify"]).status == 0)
    }

    /// The backup proof with a real `forget`: the patient's blobs leave the backup at the next
    /// sync, the vault keeps only the new snapshot, and the backup still verifies and restores.
    @Test func aForgottenPatientLeavesTheBackupAtTheNextSync() throws {
        let dir = TempDir()
        defer { dir.remove() }
        var env = medvaultEnvironment(vault: dir.sub("vault"))
        env["XDG_STATE_HOME"] = dir.sub("state")
        var job = env
        job.removeValue(forKey: "MEDVAULT_PASSPHRASE")
        func mv(_ a: [String], _ e: [String: String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: e) }
        #expect(try mv(["init", "--kdf", "interactive"], env).status == 0)
        #expect(try mv(["import"] + corpus.valid.map { corpus.path($0) }, env).status == 0)
        let dest = dir.sub("backup")
        #expect(try mv(["backup", "sync", "--to", dest], job).status == 0)
        #expect(allFiles(under: dest + "/blobs").count == corpus.valid.count)

        let pid = "MRN0012345"
        let theirs = corpus.valid.filter { $0.patient_id == pid }
        // A prune that crashed after removing a manifest leaves that snapshot's other files: they go too.
        let snapshotDir = dir.sub("vault/snapshots")
        let oldest = try #require((FileManager.default.subpaths(atPath: snapshotDir) ?? []).filter { $0.hasSuffix(".manifest") }.sorted().first)
        try FileManager.default.removeItem(atPath: snapshotDir + "/" + oldest)
        #expect(try mv(["forget", "--patient-id", pid, "--yes"], env).status == 0)
        let left = (FileManager.default.subpaths(atPath: snapshotDir) ?? []).filter { $0.hasPrefix("snapshot-") || $0.hasPrefix("manifest-") || $0.hasPrefix("vault-") }
        #expect(left.count == 3 && Set(left.map { $0.filter(\.isNumber) }).count == 1, "older snapshots hold the erased key and must go: \(left)")
        let synced = try mv(["backup", "sync", "--to", dest, "--keep", "1"], job)
        #expect(synced.status == 0, "\(synced.stderr)")
        #expect(allFiles(under: dest + "/blobs").count == corpus.valid.count - theirs.count)
        #expect(try mv(["backup", "verify", dest], job).status == 0)
        // An audit segment grown past its listed size (as a sync killed after copying a newer prefix
        // leaves it) verifies and restores with its listed prefix.
        let segments = (FileManager.default.subpaths(atPath: dest + "/audit") ?? []).filter { $0.hasSuffix(".log") }.sorted()
        let last = try #require(segments.last)
        let handle = try #require(FileHandle(forWritingAtPath: dest + "/audit/" + last))
        handle.seekToEndOfFile()
        handle.write(Data("records of a newer manifest".utf8))
        handle.closeFile()
        #expect(try mv(["backup", "verify", dest], job).status == 0)
        let restored = dir.sub("restored")
        let r = try mv(["backup", "restore", "--from", dest, "--to", restored], env)
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        var restoredEnv = env
        restoredEnv["MEDVAULT_VAULT"] = restored
        #expect(try mv(["verify"], restoredEnv).status == 0)
        #expect(try mv(["audit", "verify"], restoredEnv).status == 0)
        // The restored log has the erasure's record, once; writing to the restored vault does not log
        // (or redo) it again.
        #expect(try mv(["import", corpus.path(corpus.valid.first { $0.patient_id != pid }!)], restoredEnv).status == 0)
        let restoredLog = try mv(["audit", "show", "--json"], restoredEnv)
        let restoredRecords = (try JSONSerialization.jsonObject(with: Data(restoredLog.stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(restoredRecords.filter { $0["action"] as? String == "forget" && $0["outcome"] as? String == "ok" }.count == 1)
        #expect(!(try mv(["ls", "--json"], restoredEnv).stdout.contains(pid)))
    }

    @Test func retentionDryRunThenApply() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try mv(["import"] + corpus.valid.map { corpus.path($0) }).status == 0)
        // Every corpus study is from 2021-2024: a 1-day period removes them all, 100 years none.
        #expect(try mv(["retention", "apply", "--older-than", "100y", "--dry-run", "--json"]).stdout.contains("\"studies\" : 0"))
        #expect(try mv(["retention", "apply", "--older-than", "soon", "--dry-run"]).status == 2)
        let plan = try mv(["retention", "apply", "--older-than", "1d", "--dry-run", "--json"])
        let p = try #require(try JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as? [String: Any])
        #expect(p["studies"] as? Int == Set(corpus.valid.compactMap(\.study_uid)).count)
        #expect(p["instances"] as? Int == corpus.valid.count)
        #expect(p["applied"] as? Bool == false)
        #expect(allFiles(under: dir.sub("vault/blobs")).count == corpus.valid.count)  // the dry run removed nothing
        #expect(try mv(["retention", "apply", "--older-than", "1d"]).status == 2)  // no terminal, no --yes
        let applied = try mv(["retention", "apply", "--older-than", "1d", "--yes", "--json"])
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(allFiles(under: dir.sub("vault/blobs")).isEmpty)
        let listed = try mv(["ls", "--json"])
        #expect((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [Any])?.isEmpty == true)
        #expect(try mv(["verify"]).status == 0)
    }
}
