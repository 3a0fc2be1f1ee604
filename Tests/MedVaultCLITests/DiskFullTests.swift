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
        let small = dir.sub("small")
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        #expect(try run("/bin/mount", ["-t", "tmpfs", "-o", "size=14m", "tmpfs", small]).status == 0)
        defer { _ = try? run("/bin/umount", [small]) }
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
