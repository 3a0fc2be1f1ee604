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
}
