import VaultIO
import Foundation
import Testing
import TestSupport

/// A vault on a tiny tmpfs: an import that runs out of space stops with a clear error and leaves a
/// vault that verifies. Needs root (mount); enabled only where a tmpfs can be mounted.
let tmpfsMountable: Bool = {
        guard getuid() == 0 else { return false }
        let dir = TempDir("medvault-mountcheck")
        defer { _ = try? run("/bin/umount", [dir.path]); dir.remove() }
        return (try? run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir.path]))?.status == 0
}()

@Suite(.enabled(if: tmpfsMountable)) struct DiskFullTests {

    @Test func aFullDiskStopsTheImportCleanly() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let small = try mountSmallTmpfs(in: dir, size: "14m")
        defer { unmountTmpfs(small) }
        var env = ProcessInfo.processInfo.environment
        env["MEDVAULT_PASSPHRASE"] = "correct horse battery staple"
        let v = small + "/vault"
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env).status == 0)
        // Three 5 MiB instances for ~13 MiB of free space: the third cannot fit.
        for i in 1...3 {
            let g = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", dir.sub("in/\(i).dcm"), "--mib", "5"])
            #expect(g.status == 0)
            let r = try run("/usr/bin/env", ["python3", "-c", "import pydicom,sys; ds=pydicom.dcmread(sys.argv[1]); ds.SOPInstanceUID='1.2.826.0.1.3680043.10.999.90.\(i)'; ds.save_as(sys.argv[1])", dir.sub("in/\(i).dcm")])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let r = try run(medvaultBinary, ["import", "--vault", v, dir.sub("in"), "--batch-files", "1", "--json"], environment: env)
        #expect(r.status == 2)
        #expect(r.stderr.contains("disk is full"), "\(r.stderr)")
        // Nothing half-written is visible: the vault verifies, staging is empty.
        let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: env)
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(allFiles(under: v + "/tmp").isEmpty)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8)) as? [String: Any])
        let committed = try #require(report["blobsChecked"] as? Int)
        #expect(committed < 3)
        #expect(allFiles(under: v + "/blobs").count == committed)
    }
}

/// ENOSPC at exact syscalls (strace), and the 0-byte head an older release left on a full disk.
@Suite(.enabled(if: straceAvailable)) struct AuditDiskFullTests {
    func env() -> [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_PASSPHRASE"] = "correct horse battery staple"
        e["XDG_STATE_HOME"] = NSTemporaryDirectory() + "/medvault-state-" + UUID().uuidString
        return e
    }

    @Test func aFullDiskDuringTheFirstAuditRecordLeavesAUsableVault() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: e).status == 0)
        // `ls` on a new vault writes the first audit record. (a) Every write to the segment fails.
        #expect(FileManager.default.createFile(atPath: v + "/audit/segment-000001.log", contents: Data()))
        let full = try run("/usr/bin/strace", ["-f", "-qq", "-o", "/dev/null", "-P", v + "/audit/segment-000001.log", "-e", "trace=write",
                                               "-e", "inject=write:error=ENOSPC:when=1+", medvaultBinary, "ls", "--vault", v], environment: e)
        #expect(full.status == 2, "\(full.stderr)")
        #expect(full.stderr.contains("disk is full"), "\(full.stderr)")
        #expect(FileIOProbe.size(v + "/audit/head") == nil)
        // (b) The record is written, the head's write fails (the 72-byte write; found on a copy).
        let copy = dir.sub("copy")
        #expect(try run("/bin/cp", ["-a", v, copy]).status == 0)
        let trace = dir.sub("trace.txt")
        _ = try run("/usr/bin/strace", ["-f", "-qq", "-o", trace, "-e", "trace=write", medvaultBinary, "ls", "--vault", copy], environment: e)
        let writes = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").filter { $0.contains("write(") }
        let headWrite = try #require(writes.firstIndex { $0.hasSuffix(", 72) = 72") }) + 1
        let headFull = try run("/usr/bin/strace", ["-f", "-qq", "-o", "/dev/null", "-e", "trace=write", "-e", "inject=write:error=ENOSPC:when=\(headWrite)",
                                                   medvaultBinary, "ls", "--vault", v], environment: e)
        #expect(headFull.status == 2, "\(headFull.stderr)")
        #expect(headFull.stderr.contains("disk is full"), "\(headFull.stderr)")
        #expect(FileIOProbe.size(v + "/audit/head") == nil)  // the old head (none): never a 0-byte file
        // Space is back: everything works, and the log verifies.
        #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: e).status == 0)
        let c = Corpus.generate(["ct-series", dir.sub("ct"), "--slices", "2", "--size", "32", "--patient-id", "FULL-0001"])
        try? FileManager.default.removeItem(atPath: c.root + "/manifest.json")
        #expect(try run(medvaultBinary, ["import", "--vault", v, c.root], environment: e).status == 0)
        #expect(try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e).status == 0)
        // ENOSPC at the head's fsync and at the segment's fdatasync: the old head stays, the next command repairs.
        for (syscall, n) in [("fsync", 1), ("fdatasync", 1)] {
            let r = try run("/usr/bin/strace", ["-f", "-qq", "-o", "/dev/null", "-e", "trace=\(syscall)", "-e", "inject=\(syscall):error=ENOSPC:when=\(n)",
                                                medvaultBinary, "ls", "--vault", v], environment: e)
            #expect(r.status != 0)
            #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: e).status == 0)
            let a = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
            #expect(a.status == 0, "\(syscall): \(a.stdout)")
        }
    }

    @Test func aZeroByteHeadFromAnOlderReleaseIsRepaired() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: e).status == 0)
        #expect(FileManager.default.createFile(atPath: v + "/audit/head", contents: Data()))
        let before = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
        #expect(before.status == 0, "\(before.stdout)")
        #expect(before.stdout.contains("empty file"))
        #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: e).status == 0)
        let after = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: e)
        #expect(after.status == 0)
        #expect(after.stdout.contains("repaired after an interrupted append: audit/head was an empty file"), "\(after.stdout)")
    }

    /// A full disk while the publish copies the catalog used to say "catalog error while snapshotting:
    /// not an error" (SQLite's message of the wrong connection). Every point of the publish's SQLite
    /// writes, from the first on: the message names what failed.
    @Test func aSnapshotFailureSaysWhatFailed() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let e = env()
        let v = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: e).status == 0)
        var copyFailures = 0
        for n in stride(from: 1, through: 40, by: 3) {
            let r = try run("/usr/bin/strace", ["-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64", "-e", "inject=pwrite64:error=ENOSPC:when=\(n)+",
                                                medvaultBinary, "backup", "publish", "--vault", v], environment: e)
            #expect(!r.stderr.contains("not an error"), "\(r.stderr)")
            if r.stderr.contains("snapshot failed while copying the catalog into") {
                #expect(r.stderr.contains("the disk is full"), "\(r.stderr)")
                copyFailures += 1
            }
        }
        #expect(copyFailures > 0)
        #expect(try run(medvaultBinary, ["backup", "publish", "--vault", v], environment: e).status == 0)
        let verify = try run(medvaultBinary, ["verify", "--vault", v, "--json"], environment: e)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8)) as? [String: Any])
        #expect((report["snapshotLeftovers"] as? [String])?.isEmpty == true)
        #expect(report["snapshotStale"] as? Bool == false)
    }

    /// The short version of `tools/crash-sweep --mode enospc`.
    @Test func diskFullSweepSmoke() throws {
        var e = ProcessInfo.processInfo.environment
        e["MEDVAULT_BIN"] = medvaultBinary
        let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/crash-sweep", "--mode", "enospc", "--writer", "all", "--trials", "1", "--seed", "5"], environment: e)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("total: 8 trials, 0 failures"), "\(r.stdout)")
    }
}

enum FileIOProbe {
    static func size(_ path: String) -> Int? { (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int }
}

extension DiskFullTests {
    /// A real full filesystem (tmpfs): the first audit record cannot be written; after space is freed
    /// the vault works and its log verifies.
    @Test func aFullTmpfsDuringAnAuditAppendRecovers() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let small = try mountSmallTmpfs(in: dir, size: "4m")
        defer { unmountTmpfs(small) }
        var env = ProcessInfo.processInfo.environment
        env["MEDVAULT_PASSPHRASE"] = "correct horse battery staple"
        let v = small + "/vault"
        #expect(try run(medvaultBinary, ["init", "--vault", v, "--kdf", "interactive"], environment: env).status == 0)
        // Fill the filesystem to the last byte.
        _ = try run("/bin/dd", ["if=/dev/zero", "of=\(small)/filler", "bs=4k"])
        _ = try run("/bin/dd", ["if=/dev/zero", "of=\(small)/filler2", "bs=1"])
        let full = try run(medvaultBinary, ["ls", "--vault", v], environment: env)
        #expect(full.status == 2, "\(full.stdout) \(full.stderr)")
        #expect(FileIOProbe.size(v + "/audit/head") != 0)
        try FileManager.default.removeItem(atPath: small + "/filler")
        try? FileManager.default.removeItem(atPath: small + "/filler2")
        #expect(try run(medvaultBinary, ["ls", "--vault", v], environment: env).status == 0)
        let a = try run(medvaultBinary, ["audit", "verify", "--vault", v], environment: env)
        #expect(a.status == 0, "\(a.stdout)")
        #expect(try run(medvaultBinary, ["verify", "--vault", v], environment: env).status == 0)
    }
}
