import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `medvault backup …` as an operator or a cron job runs it: real processes, real files.
@Suite struct BackupCLITests {
    let corpus = Corpus.shared

    /// The vault owner's environment (passphrase in MEDVAULT_PASSPHRASE) and the backup job's (no
    /// passphrase at all, and its own state file).
    func owner(_ dir: TempDir) -> [String: String] {
        var e = medvaultEnvironment(vault: dir.sub("vault"))
        e["XDG_STATE_HOME"] = dir.sub("state")
        return e
    }

    func backupJob(_ dir: TempDir) -> [String: String] {
        var e = owner(dir)
        e.removeValue(forKey: "MEDVAULT_PASSPHRASE")
        return e
    }

    func json(_ r: ProcessResult) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout) \(r.stderr)")
    }

    func stage(_ files: [CorpusFile], _ dir: String) throws {
        for f in files {
            let to = dir + "/" + f.path
            try FileManager.default.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: corpus.path(f), toPath: to)
        }
    }

    @Test func syncAddDamageVerifyRepairRestoreExport() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let v = dir.sub("vault"), dest = dir.sub("backup")
        func mv(_ a: [String], _ env: [String: String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        let created = try mv(["init", "--kdf", "interactive", "--json"], owner(dir))
        #expect(created.status == 0)
        let recovery = try #require(try json(created)["recoveryKey"] as? String)
        let first = Array(corpus.valid.prefix(corpus.valid.count / 2)), rest = Array(corpus.valid.dropFirst(first.count))
        try stage(first, dir.sub("in1"))
        try stage(rest, dir.sub("in2"))
        #expect(try mv(["import", dir.sub("in1")], owner(dir)).status == 0)

        // The backup job needs no passphrase.
        let s1 = try mv(["backup", "sync", "--to", dest, "--json"], backupJob(dir))
        #expect(s1.status == 0, "\(s1.stderr)")
        #expect(try json(s1)["copied"] as? Int == first.count)
        #expect(try mv(["import", dir.sub("in2")], owner(dir)).status == 0)
        let s2 = try json(try mv(["backup", "sync", "--to", dest, "--json"], backupJob(dir)))
        #expect(s2["copied"] as? Int == rest.count, "only the new blobs")
        #expect(s2["alreadyPresent"] as? Int == first.count)
        // Forget (the lead's `medvault forget --patient-id`) slots in here once it exists:
        //   mv(["forget", "--patient-id", "MRN0012345", …]) → sync → "deleted" == that patient's blob count.
        let ok = try mv(["backup", "verify", dest, "--json"], backupJob(dir))
        #expect(ok.status == 0, "\(ok.stdout)")
        // The backup (blobs, sealed snapshots, manifests, the audit log that names patients sealed)
        // holds no identifier in any form an auditor's grep would find.
        #expect(!allFiles(under: dest + "/audit").isEmpty)
        let identifiers = Set(corpus.valid.flatMap { [$0.patient_id, $0.patient_name, $0.study_uid, $0.accession].compactMap { $0 } })
            .filter { $0.utf8.count >= 6 }
        for value in identifiers {
            let g = try run("/usr/bin/grep", ["-r", "-l", "-F", value, dest])
            #expect(g.status == 1, "grep found \(value): \(g.stdout)")
        }

        // Damage the backup: verify names each problem and exits 1.
        let blobs = allFiles(under: dest + "/blobs")
        var b = Array(try #require(FileManager.default.contents(atPath: blobs[0])))
        b[b.count - 30] ^= 0x08
        try Data(b).write(to: URL(fileURLWithPath: blobs[0]))
        try FileManager.default.removeItem(atPath: blobs[1])
        let extra = dest + "/blobs/" + String((blobs[2] as NSString).lastPathComponent.prefix(2)) + "/" + String(repeating: "e", count: 32)
        try FileManager.default.copyItem(atPath: blobs[2], toPath: extra)
        let bad = try mv(["backup", "verify", dest, "--json"], backupJob(dir))
        #expect(bad.status == 1)
        let problems = try #require(try json(bad)["problems"] as? [[String: String]])
        let rel = { (p: String) in String(p.dropFirst(dest.count + 1)) }
        #expect(problems.contains { $0["kind"] == "altered" && $0["name"] == rel(blobs[0]) })
        #expect(problems.contains { $0["kind"] == "missing" && $0["name"] == rel(blobs[1]) })
        #expect(problems.contains { $0["kind"] == "extra" && $0["name"] == rel(extra) })
        #expect(problems.count == 3)
        // With the public key alone (no vault at hand), the same verdict.
        let vaultJSON = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: v + "/vault.json"))) as? [String: Any])
        let key = try #require(vaultJSON["manifestPublicKey"] as? String)
        var keyOnly = backupJob(dir)
        keyOnly.removeValue(forKey: "MEDVAULT_VAULT")
        #expect(try mv(["backup", "verify", dest, "--public-key", key], keyOnly).status == 1)

        let repair = try mv(["backup", "sync", "--to", dest, "--rehash"], backupJob(dir))
        #expect(repair.status == 0, "\(repair.stderr)")
        #expect(repair.stdout.contains("repaired 1") && repair.stdout.contains("deleted 1"), "\(repair.stdout)")
        #expect(try mv(["backup", "verify", dest, "--public-key", key], keyOnly).status == 0)

        // Restore into a new directory with the original passphrase; `medvault verify` accepts it and
        // it serves the same studies byte for byte.
        let restored = dir.sub("restored")
        let r = try mv(["backup", "restore", "--from", dest, "--to", restored, "--json"], owner(dir))
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(try json(r)["blobsRestored"] as? Int == corpus.valid.count)
        var restoredEnv = owner(dir)
        restoredEnv["MEDVAULT_VAULT"] = restored
        let check = try mv(["verify"], restoredEnv)
        #expect(check.status == 0 && check.stdout.hasPrefix("OK: \(corpus.valid.count) blobs"), "\(check.stdout)")
        // The audit trail comes back too, as of the snapshot, and goes on with the restore.
        let audit = try mv(["audit", "verify"], restoredEnv)
        #expect(audit.status == 0, "\(audit.stdout)")
        let shown = try #require(
            try JSONSerialization.jsonObject(with: Data(try mv(["audit", "show", "--json"], restoredEnv).stdout.utf8)) as? [[String: Any]])
        #expect(shown.map { $0["action"] as? String } == ["import", "import", "backup.restore"])
        for uid in Set(corpus.valid.compactMap(\.study_uid)) {
            #expect(try mv(["export", "--study", uid, "--out", dir.sub("out")], restoredEnv).status == 0)
        }
        for f in corpus.valid {
            #expect(try sha256(ofFile: dir.sub("out/\(f.study_uid!)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)
        }
        // Restoring onto an existing vault, or with a wrong passphrase, changes nothing and says so.
        #expect(try mv(["backup", "restore", "--from", dest, "--to", restored], owner(dir)).status == 2)
        var wrong = owner(dir)
        wrong["MEDVAULT_PASSPHRASE"] = "not the passphrase"
        let w = try mv(["backup", "restore", "--from", dest, "--to", dir.sub("r2")], wrong)
        #expect(w.status == 2 && w.stderr.contains("wrong passphrase"), "\(w.stderr)")
        // Every passphrase lost: the printed recovery key restores the backup too.
        try Data((recovery + "\n").utf8).write(to: URL(fileURLWithPath: dir.sub("recovery.txt")))
        let rk = try mv(["backup", "restore", "--from", dest, "--to", dir.sub("r3"), "--recovery-key-file", dir.sub("recovery.txt")], backupJob(dir))
        #expect(rk.status == 0, "\(rk.stdout) \(rk.stderr)")
        #expect(rk.stdout.hasPrefix("OK: snapshot"), "\(rk.stdout)")
    }

    /// `kill -9` of the sync at random moments, then a re-run: the previous backup is never damaged
    /// (only not-yet-listed blobs appear), and the re-run completes to a backup that verifies.
    @Test func killedSyncsNeverDamageTheBackupAndResume() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let dest = dir.sub("backup")
        func mv(_ a: [String], _ env: [String: String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        #expect(try mv(["init", "--kdf", "interactive"], owner(dir)).status == 0)
        #expect(try mv(["import"] + corpus.valid.prefix(4).map { corpus.path($0) }, owner(dir)).status == 0)
        #expect(try mv(["backup", "sync", "--to", dest], backupJob(dir)).status == 0)
        let ct = Corpus.generate(["ct-series", dir.sub("ct"), "--slices", "160", "--size", "256", "--patient-id", "KILL-SYNC-1"])
        try FileManager.default.removeItem(atPath: ct.root + "/manifest.json")
        #expect(try mv(["import", ct.root], owner(dir)).status == 0)

        var rng = SystemRandomNumberGenerator()
        var delays: [Int] = []
        var interrupted = 0
        for attempt in 0..<6 {
            // The first kill lands before the sync can finish (process start-up alone takes longer), so at
            // least one is always inside a sync; the others are anywhere.
            let delay = attempt == 0 ? Int.random(in: 1...15, using: &rng) : Int.random(in: 5...250, using: &rng)
            delays.append(delay)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: medvaultBinary)
            p.arguments = ["backup", "sync", "--to", dest, "--batch-files", "1"]
            p.environment = backupJob(dir)
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(useconds_t(delay * 1000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let v = try mv(["backup", "verify", dest, "--json"], backupJob(dir))
            let problems = try #require(try json(v)["problems"] as? [[String: String]])
            #expect(problems.allSatisfy { $0["kind"] == "extra" }, "after a kill at \(delay) ms: \(problems.prefix(3))")
            if try json(v)["blobs"] as? Int != 164 { interrupted += 1 }
        }
        #expect(interrupted > 0, "no kill landed inside a sync (delays \(delays) ms)")
        let finish = try mv(["backup", "sync", "--to", dest, "--json"], backupJob(dir))
        #expect(finish.status == 0, "\(finish.stderr)")
        let verify = try mv(["backup", "verify", dest, "--json"], backupJob(dir))
        #expect(verify.status == 0, "kills at \(delays) ms: \(verify.stdout)")
        #expect(try json(verify)["blobs"] as? Int == 164)
        #expect(FileManager.default.subpaths(atPath: dest + "/tmp") == ["lock"])
        #expect(allFiles(under: dest + "/blobs").count == 164)
    }
}
