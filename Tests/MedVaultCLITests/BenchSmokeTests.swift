// The benchmarks are not tests, but they must not rot: a short smoke run of `tools/bench-serve`
// (a few hundred tiny instances, the debug build) must still produce every figure.
import Foundation
import Testing
import TestSupport

@Suite struct BenchSmokeTests {
    @Test func benchServeProducesEveryFigure() throws {
        var env = ProcessInfo.processInfo.environment
        env["MEDVAULT_BIN"] = medvaultBinary
        let r = try run("/bin/bash", [packageRoot + "/tools/bench-serve", "--smoke"], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        for figure in [
            "QIDO studies?PatientID=", "studies?PatientName= exact", "studies?PatientName= prefix", "studies?StudyDate= range",
            "studies/{s}/series ", "studies/{s}/series/{se}/instances", "WADO one instance", "WADO series", "frame 1 of a 512² CT slice",
            "rendered 512² JPEG", "frame 400 of a 500-frame instance", "STOW-RS", "STOW-RS / CLI", "server memory",
        ] {
            #expect(r.stdout.contains(figure), "missing: \(figure)\n\(r.stdout)")
        }
    }

    /// The comparison with Orthanc (Debian's `orthanc`, `orthanc-dicomweb`; tools/setup installs them
    /// when it can): every row, for both servers.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/Orthanc"), "Orthanc is not installed"))
    func benchCompareProducesEveryRowForBothServers() throws {
        var env = ProcessInfo.processInfo.environment
        env["MEDVAULT_BIN"] = medvaultBinary
        let r = try run("/bin/bash", [packageRoot + "/tools/bench-compare", "--smoke"], environment: env)
        #expect(r.status == 0, "\(r.stderr)")
        for figure in [
            "import 60 ×", "import 300 ×", "QIDO studies?PatientID=", "QIDO studies?PatientName= exact", "QIDO studies/{s}/series",
            "QIDO series/{300}/instances", "-instance series", "WADO 300-slice series (MB/s", "first byte", "server memory",
        ] {
            #expect(r.stdout.contains(figure), "missing: \(figure)\n\(r.stdout)")
        }
    }
}
