import Foundation
import Testing
import TestSupport

/// Issue 10, items 8 and 9: what a crash prints, and small import and error-message defects.
@Suite struct SmallDefectTests {
    /// Writes a copy of `source` with the given UIDs (pydicom).
    static func variant(_ source: String, _ out: String, study: String, series: String, sop: String) throws {
        let script = """
            import sys, pydicom
            ds = pydicom.dcmread(sys.argv[1])
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = sys.argv[3], sys.argv[4], sys.argv[5]
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(sys.argv[2])
            """
        let r = try run("/usr/bin/env", ["python3", "-c", script, source, out, study, series, sop])
        #expect(r.status == 0, "\(r.stderr)")
    }

    static func json(_ r: ProcessResult) -> [[String: Any]] {
        ((try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [[String: Any]]) ?? []
    }

    /// (8) A crash prints no registers and no memory, whatever SWIFT_BACKTRACE the caller set: the
    /// runtime's crash handler is off. The crash is a debug-only hook, right after the vault is unlocked.
    @Test func aCrashPrintsNoRegistersOrMemory() throws {
        let dir = TempDir()
        defer { dir.remove() }
        var env = medvaultEnvironment(vault: dir.sub("vault"))
        #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
        for setting in [nil, "enable=yes,sanitize=no,registers=all,images=all,threads=all"] {
            env["SWIFT_BACKTRACE"] = setting
            env["MEDVAULT_DEBUG_CRASH"] = "segv"
            let r = try run(medvaultBinary, ["ls"], environment: env)
            #expect(r.status == SIGSEGV, "exit \(r.status)")
            for needle in ["crashed", "Crashed", "Registers", "rax", "rip", "0x", "Backtrace", "Thread 0"] {
                #expect(!r.stderr.contains(needle), "stderr shows \(needle): \(r.stderr.prefix(2000))")
            }
        }
    }

    /// (9a) A file whose series is already in the vault but whose study is new goes to the series'
    /// study, and leaves no empty study behind (one that ls listed and export could not find).
    @Test(arguments: [true, false]) func aKnownSeriesUnderANewStudyLeavesNoEmptyStudy(oneRun: Bool) throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
        let corpus = Corpus.shared
        let source = try #require(corpus.valid.first { $0.path.contains("latin1") })
        let (s1, s2, series) = ("1.2.826.0.1.3680043.10.999.71.1", "1.2.826.0.1.3680043.10.999.71.2", "1.2.826.0.1.3680043.10.999.71.3")
        try Self.variant(corpus.path(source), dir.sub("a.dcm"), study: s1, series: series, sop: series + ".1")
        try Self.variant(corpus.path(source), dir.sub("b.dcm"), study: s2, series: series, sop: series + ".2")
        if oneRun {
            #expect(try run(medvaultBinary, ["import", dir.sub("a.dcm"), dir.sub("b.dcm")], environment: env).status == 0)
        } else {
            #expect(try run(medvaultBinary, ["import", dir.sub("a.dcm")], environment: env).status == 0)
            #expect(try run(medvaultBinary, ["import", dir.sub("b.dcm")], environment: env).status == 0)
        }
        let studies = Self.json(try run(medvaultBinary, ["ls", "studies", "--json"], environment: env))
        #expect(studies.map { $0["studyInstanceUID"] as? String } == [s1])
        #expect(studies.allSatisfy { ($0["instances"] as? Int ?? 0) > 0 })
        let out = dir.sub("out")
        #expect(try run(medvaultBinary, ["export", "--study", s1, "--out", out], environment: env).status == 0)
        #expect(allFiles(under: out).count == 2)
        #expect(try run(medvaultBinary, ["verify"], environment: env).status == 0)
    }

    /// (9b) UIDs longer than DICOM's 64 characters are refused at import, with the reason; the rest of
    /// the run imports.
    @Test func overlongUIDsAreRefusedAtImport() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
        let corpus = Corpus.shared
        let source = try #require(corpus.valid.first { $0.path.contains("latin1") })
        let base = "1.2.826.0.1.3680043.10.999.72"
        let long65 = base + "." + String(repeating: "1", count: 64 - base.count)
        let long300 = base + "." + String(repeating: "2", count: 299 - base.count)
        #expect(long65.count == 65 && long300.count == 300)
        try Self.variant(corpus.path(source), dir.sub("ok.dcm"), study: base + ".1", series: base + ".2", sop: String(long65.dropLast()))
        try Self.variant(corpus.path(source), dir.sub("sop.dcm"), study: base + ".1", series: base + ".2", sop: long65)
        try Self.variant(corpus.path(source), dir.sub("study.dcm"), study: long300, series: base + ".3", sop: base + ".4")
        let r = try run(medvaultBinary, ["import", dir.sub("ok.dcm"), dir.sub("sop.dcm"), dir.sub("study.dcm")], environment: env)
        #expect(r.status == 1)
        #expect(r.stderr.contains("sop.dcm: not importable: non-conformant SOP Instance UID (0008,0018): 65 characters, DICOM allows at most 64"), "\(r.stderr)")
        #expect(r.stderr.contains("study.dcm: not importable: non-conformant Study Instance UID (0020,000D): 300 characters"), "\(r.stderr)")
        #expect(r.stdout.contains("imported 1,"), "\(r.stdout)")
        let out = dir.sub("out")
        #expect(try run(medvaultBinary, ["export", "--instance", String(long65.dropLast()), "--out", out], environment: env).status == 0)
        #expect(allFiles(under: out).count == 1)
    }

    /// (9c) A FIFO or a device named on the command line is reported, not skipped silently (and a FIFO
    /// is never opened, which could block for ever).
    @Test(.timeLimit(.minutes(1))) func specialFilesAreReported() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
        let fifo = dir.sub("pipe")
        #expect(mkfifo(fifo, 0o600) == 0)
        try FileManager.default.createDirectory(atPath: dir.sub("folder"), withIntermediateDirectories: true)
        #expect(mkfifo(dir.sub("folder/inner-pipe"), 0o600) == 0)
        let r = try run(medvaultBinary, ["import", fifo, "/dev/null", dir.sub("folder")], environment: env)
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(fifo): not imported: a FIFO, not a regular file or folder"), "\(r.stderr)")
        #expect(r.stderr.contains("/dev/null: not imported: a character device"), "\(r.stderr)")
        #expect(r.stderr.contains("inner-pipe: not imported: a FIFO"), "\(r.stderr)")
        #expect(r.stdout.contains("failed 3"), "\(r.stdout)")
    }

    /// (9d) With no space left, a command that writes the catalog says the disk is full, not
    /// "disk I/O error". Needs root (a small tmpfs).
    @Test(.enabled(if: tmpfsMountable)) func aFullDiskIsCalledFull() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let small = try mountSmallTmpfs(in: dir, size: "4m")
        defer { unmountTmpfs(small) }
        let env = medvaultEnvironment(vault: small + "/vault")
        #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
        // Fill the filesystem to its last byte.
        _ = try run("/bin/dd", ["if=/dev/zero", "of=\(small)/fill", "bs=4k"])
        for args in [["user", "add", "bob", "--role", "viewer"], ["ls"]] {
            let r = try run(medvaultBinary, args, environment: env)
            #expect(r.status == 2)
            #expect(r.stderr.contains("is full"), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("disk I/O error"), "\(args): \(r.stderr)")
        }
        // Space freed: the same commands work.
        try FileManager.default.removeItem(atPath: small + "/fill")
        #expect(try run(medvaultBinary, ["user", "add", "bob", "--role", "viewer"], environment: env).status == 0)
    }
}
