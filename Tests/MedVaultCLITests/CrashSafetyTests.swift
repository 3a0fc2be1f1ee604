import Foundation
import Testing
import TestSupport

/// Killing `medvault import` at arbitrary moments, running imports side by side, and watching memory.
@Suite struct CrashSafetyTests {
    static let passphrase = "correct horse battery staple"

    func env() -> [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_PASSPHRASE"] = Self.passphrase
        return e
    }

    func series(_ dir: TempDir, _ name: String, slices: Int, size: Int, patient: String) throws -> Corpus {
        Corpus.generate(["ct-series", dir.sub(name), "--slices", "\(slices)", "--size", "\(size)", "--patient-id", patient])
    }

    @Test func killedImportsLeaveAVaultThatVerifiesAndTheNextImportCompletes() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let ct = try series(dir, "ct", slices: 150, size: 512, patient: "KILL-0001")
        try FileManager.default.removeItem(atPath: ct.root + "/manifest.json")
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env()).status == 0)

        // Kill at increasing delays; small group commits so that kills land between and inside commits.
        for delayMs in [40, 120, 220, 350, 500, 700] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: medvaultBinary)
            p.arguments = ["import", "--vault", v, ct.root, "--batch-files", "7"]
            p.environment = env()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(useconds_t(delayMs * 1000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: env())
            #expect(verify.status == 0, "after a kill at \(delayMs) ms: \(verify.stdout)")
        }
        let finish = try run(medvaultBinary, ["import", "--vault", v, ct.root], environment: env())
        #expect(finish.status == 0, "\(finish.stderr)")
        let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: env())
        let report = try #require(try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8)) as? [String: Any])
        #expect(report["ok"] as? Bool == true)
        #expect(report["blobsChecked"] as? Int == 150)
        #expect(report["interruptedLeftovers"] as? Int == 0)
        #expect(allFiles(under: v + "/blobs").count == 150)
        #expect(allFiles(under: v + "/tmp").isEmpty)

        let study = try #require(ct.valid.first?.study_uid)
        #expect(try run(medvaultBinary, ["export", "--vault", v, "--study", study, "--out", dir.sub("out")], environment: env()).status == 0)
        for f in ct.valid {
            #expect(try sha256(ofFile: dir.sub("out/\(study)/\(f.series_uid!)/\(f.sop_uid!).dcm")) == f.sha256)
        }
    }

    @Test func concurrentImportsIntoOneVaultAreSafe() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let a = try series(dir, "a", slices: 40, size: 256, patient: "CONC-A")
        let b = try series(dir, "b", slices: 40, size: 256, patient: "CONC-B")
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env()).status == 0)
        let results = LockedResults()
        let group = DispatchGroup()
        for c in [a, b] {
            let files = c.valid.map { c.path($0) }
            group.enter()
            Thread {
                let r = try? run(medvaultBinary, ["import", "--vault", v] + files, environment: env())
                results.append(r)
                group.leave()
            }.start()
        }
        group.wait()
        #expect(results.all.count == 2)
        for r in results.all { #expect(r?.status == 0, "\(r?.stderr ?? "no result")") }
        let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: env())
        let report = try #require(try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8)) as? [String: Any])
        #expect(report["ok"] as? Bool == true)
        #expect(report["blobsChecked"] as? Int == 80)
        #expect(report["patients"] as? Int == 2)
    }

    /// Import and export stream: peak memory must not grow with the file. The same commands on an 8 MiB
    /// and a 160 MiB file must peak within a few MiB of each other (the 1 GiB run is `tools/check-memory`).
    @Test func memoryStaysFlatAsFilesGrow() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env()).status == 0)
        func peakRSSMiB(_ args: [String]) throws -> Double {
            let script = """
                import resource, subprocess, sys
                r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
                """
            let r = try run("/usr/bin/env", ["python3", "-c", script, medvaultBinary] + args, environment: env())
            let parts = r.stdout.split(separator: " ")
            #expect(parts.first == "0", "\(args[0]) failed")
            return Double(parts.last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? .infinity
        }
        var peaks: [(import: Double, export: Double)] = []
        for mib in [8, 160] {
            let big = dir.sub("big-\(mib).dcm")
            let gen = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", big, "--mib", "\(mib)"])
            #expect(gen.status == 0)
            let sop = try #require(gen.stdout.split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }.first?["sop_uid"] as? String)
            let i = try peakRSSMiB(["import", "--vault", v, big])
            let e = try peakRSSMiB(["export", "--vault", v, "--instance", sop, "--out", dir.sub("out-\(mib)")])
            #expect(try sha256(ofFile: allFiles(under: dir.sub("out-\(mib)"))[0]) == sha256(ofFile: big))
            peaks.append((i, e))
        }
        // 152 MiB more data may cost at most 12 MiB more memory (allocator noise, page cache accounting).
        #expect(peaks[1].import - peaks[0].import < 12, "import peaks \(peaks)")
        #expect(peaks[1].export - peaks[0].export < 12, "export peaks \(peaks)")
    }
}

final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ProcessResult?] = []
    func append(_ r: ProcessResult?) { lock.lock(); items.append(r); lock.unlock() }
    var all: [ProcessResult?] { lock.lock(); defer { lock.unlock() }; return items }
}

let straceAvailable: Bool = FileManager.default.isExecutableFile(atPath: "/usr/bin/strace")

/// Real faults at exact syscalls (strace injection): a kill inside an audit append or a snapshot
/// publish, leftovers of an interrupted publish, and a short crash sweep of every writer.
@Suite(.enabled(if: straceAvailable)) struct InterruptedWriterTests {
    let passphrase = "correct horse battery staple"
    func env() -> [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_PASSPHRASE"] = passphrase
        e["XDG_STATE_HOME"] = NSTemporaryDirectory() + "/medvault-state-" + UUID().uuidString
        return e
    }
    func json(_ r: ProcessResult) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stdout) \(r.stderr)")
    }
    func vault(_ dir: TempDir, _ env: [String: String], patient: String = "AUDIT-0001") throws -> (vault: String, corpus: Corpus) {
        let c = Corpus.generate(["ct-series", dir.sub("ct-" + patient), "--slices", "3", "--size", "32", "--patient-id", patient])
        try? FileManager.default.removeItem(atPath: c.root + "/manifest.json")
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env).status == 0)
        #expect(try run(medvaultBinary, ["import", "--vault", v, c.root], environment: env).status == 0)
        return (v, c)
    }
    /// Runs medvault under strace with one fault injected.
    func inject(_ spec: String, _ syscall: String, _ args: [String], _ env: [String: String]) throws -> ProcessResult {
        try run("/usr/bin/strace", ["-f", "-qq", "-o", "/dev/null", "-e", "trace=" + syscall, "-e", "inject=\(syscall):\(spec)", medvaultBinary] + args, environment: env)
    }

    @Test func aKillBetweenTheAuditRecordAndItsHeadIsRepairedAndRecorded() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let v = try vault(dir, e).vault
        // `ls` writes one audit record: the segment write and fdatasync, then the head's rename. Killed at that rename.
        let killed = try inject("signal=SIGKILL:when=1", "rename", ["ls", "--vault", v], e)
        #expect(killed.status != 0)
        // Before the repair: not tampering, but a notice that the next command repairs.
        let before = try json(try run(medvaultBinary, ["audit", "verify", "--vault", v, "--json"], environment: e))
        #expect(before["ok"] as? Bool == true, "\(before)")
        #expect("\(before["notices"] ?? "")".contains("interrupted append"))
        // The next command adopts the record (the sequence number is not reused) and says so.
        #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: e).status == 0)
        let after = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
        #expect(after.status == 0, "\(after.stdout)")
        #expect(after.stdout.contains("repaired after an interrupted append: adopted record"), "\(after.stdout)")
        let show = try run(medvaultBinary, ["audit", "show", "--vault", v, "--json"], environment: e)
        #expect(show.stdout.contains("audit.repair"))

        // A torn tail: a partial record at the end (what a short write leaves: the start of a header).
        let segment = v + "/audit/segment-000001.log"
        let h = try #require(FileHandle(forWritingAtPath: segment))
        h.seekToEndOfFile()
        h.write(Data("MVAR".utf8) + Data([0, 0, 0]))
        try h.close()
        let torn = try json(try run(medvaultBinary, ["audit", "verify", "--vault", v, "--json"], environment: e))
        #expect(torn["ok"] as? Bool == true)
        #expect("\(torn["notices"] ?? "")".contains("partial record of 7 bytes"))
        #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: e).status == 0)
        let repaired = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
        #expect(repaired.status == 0)
        #expect(repaired.stdout.contains("truncated a partial record of 7 bytes"), "\(repaired.stdout)")

        // Tampering in the middle stays tampering: flip a byte of record 1's body.
        var edited = try #require(FileManager.default.contents(atPath: segment))
        edited[30] ^= 1
        try edited.write(to: URL(fileURLWithPath: segment))
        let tampered = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
        #expect(tampered.status == 1)
        #expect(tampered.stdout.contains("chain MAC does not verify"))
    }

    @Test func anImportKilledWhilePublishingIsPublishedByTheNextWriterAndSyncSaysSo() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let (v, _) = try vault(dir, e)
        let backup = dir.sub("backup")
        #expect(try run(medvaultBinary, ["backup", "sync", "--vault", v, "--to", backup], environment: e).status == 0)
        let more = Corpus.generate(["ct-series", dir.sub("more"), "--slices", "4", "--size", "32", "--patient-id", "AUDIT-0002"])
        try? FileManager.default.removeItem(atPath: more.root + "/manifest.json")
        // Count the import's renames on a copy; the last one publishes the manifest. Kill there.
        let copy = dir.sub("copy")
        #expect(try run("/bin/cp", ["-a", v, copy]).status == 0)
        let traceFile = dir.sub("trace.txt")
        _ = try run("/usr/bin/strace", ["-f", "-qq", "-o", traceFile, "-e", "trace=rename", medvaultBinary, "import", "--vault", copy, more.root], environment: e)
        let renames = try String(contentsOfFile: traceFile, encoding: .utf8).split(separator: "\n").filter { $0.contains("rename(") && $0.contains(".manifest") }
        #expect(renames.count == 1)
        let all = try String(contentsOfFile: traceFile, encoding: .utf8).split(separator: "\n").filter { $0.contains("rename(") }
        let n = try #require(all.firstIndex { $0.contains(".manifest") }) + 1
        let killed = try inject("signal=SIGKILL:when=\(n)", "rename", ["import", "--vault", v, more.root], e)
        #expect(killed.status != 0)

        // The import committed; its snapshot was not published. verify and sync say so.
        let verify = try json(try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: e))
        #expect(verify["blobsChecked"] as? Int == 7)
        #expect(verify["snapshotStale"] as? Bool == true)
        let stale = try run(medvaultBinary, ["backup", "sync", "--vault", v, "--to", backup], environment: e)
        #expect(stale.status == 1)
        #expect(stale.stderr.contains("stale"), "\(stale.stderr)")
        // The re-run imports nothing new, and publishes.
        let rerun = try run(medvaultBinary, ["import", "--vault", v, more.root, "--json"], environment: e)
        #expect(rerun.status == 0, "\(rerun.stderr)")
        #expect(try json(try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: e))["snapshotStale"] as? Bool == false)
        #expect(try run(medvaultBinary, ["backup", "sync", "--vault", v, "--to", backup], environment: e).status == 0)
        let restored = dir.sub("restored")
        let r = try run(medvaultBinary, ["backup", "restore", "--from", backup, "--to", restored], environment: e)
        #expect(r.status == 0, "\(r.stderr)")
        let rv = try json(try run(medvaultBinary, ["verify", "--vault", restored, "--json"], environment: e))
        #expect(rv["blobsChecked"] as? Int == 7)
        #expect(rv["patients"] as? Int == 2)
    }

    @Test func snapshotLeftoversAreReportedByVerifyAndSweptByTheNextWriter() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let (v, c) = try vault(dir, e)
        let snaps = v + "/snapshots"
        let leftovers = [".staging-0123456789abcdef.sqlite", ".staging-0123456789abcdef.sqlite-journal", ".staging-0123456789abcdef.mvsnap",
                         "snapshot-000000000009.mvsnap", "vault-000000000009.json", "0123abcd.tmp"]
        for name in leftovers { try Data("left over".utf8).write(to: URL(fileURLWithPath: snaps + "/" + name)) }
        let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: e)
        #expect(verify.status == 0)
        #expect((try json(verify)["snapshotLeftovers"] as? [String])?.count == leftovers.count)
        #expect(try run(medvaultBinary, ["verify", "--vault", v], environment: e).stdout.contains("left by an interrupted publish"))
        // An import with nothing new still sweeps them (any writer does).
        #expect(try run(medvaultBinary, ["import", "--vault", v, c.root], environment: e).status == 0)
        for name in leftovers { #expect(!FileManager.default.fileExists(atPath: snaps + "/" + name), "\(name)") }
        #expect((try json(try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: e))["snapshotLeftovers"] as? [String])?.isEmpty == true)
    }

    /// The short version of tools/crash-sweep: a few kills per writer, every check after each.
    @Test func crashSweepSmoke() throws {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_BIN"] = medvaultBinary
        let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/crash-sweep", "--writer", "all", "--trials", "2", "--seed", "7"], environment: e)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("total: 16 trials, 0 failures"), "\(r.stdout)")
    }
}
