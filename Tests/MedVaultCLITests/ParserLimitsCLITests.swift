import Foundation
import Testing
import TestSupport

/// Issue 10, item 1, as the user met it: one directory holding files that crashed or stalled DCMTK
/// (5,600 and 100,000 nested sequences, 1,100,000 elements, a sparse 2 GB file of zeros) next to
/// ordinary files. The import refuses each hostile file with its reason, imports the others, and
/// neither crashes nor exhausts memory; a re-run behaves the same.
@Suite struct ParserLimitsCLITests {
    @Test func hostileFilesAreRefusedAndTheRestOfTheDirectoryImports() throws {
        let dir = TempDir()
        defer { dir.remove() }
        let corpus = Corpus.generate(["hostile", dir.sub("in")])
        #expect(try run("/usr/bin/truncate", ["-s", "2G", dir.sub("in/zeros-2g.dcm")]).status == 0)
        var env = ProcessInfo.processInfo.environment
        env["MEDVAULT_PASSPHRASE"] = "correct horse battery staple"
        env.removeValue(forKey: "MEDVAULT_VAULT")
        let vault = dir.sub("vault")
        #expect(try run(medvaultBinary, ["init", "--vault", vault, "--kdf", "interactive"], environment: env).status == 0)

        // Through python's resource module: the child's peak RSS and wall time, next to its output.
        let probe = """
            import resource, subprocess, sys, time
            t = time.monotonic()
            r = subprocess.run(sys.argv[2:])
            open(sys.argv[1], "w").write("%d %d %.3f" % (r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.monotonic() - t))
            """
        for round in 1...2 {
            let r = try run(
                "/usr/bin/env", ["python3", "-c", probe, dir.sub("stats"), medvaultBinary, "import", "--vault", vault, dir.sub("in"), "--json"],
                environment: env)
            let stats = try String(contentsOfFile: dir.sub("stats"), encoding: .utf8).split(separator: " ")
            let status = Int(stats[0]) ?? -99, peakKiB = Int(stats[1]) ?? 0, wall = Double(stats[2]) ?? 0
            #expect(status == 1, "round \(round): exit \(status) (negative: killed by a signal); \(r.stderr)")
            #expect(peakKiB < 400 << 10, "round \(round): peak RSS \(peakKiB) KiB")
            #expect(wall < 120, "round \(round): import took \(wall) s")
            let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(r.stderr)")
            let files = try #require(j["files"] as? [[String: Any]])
            func outcome(_ name: String) -> (String?, String?) {
                let row = files.first { ($0["path"] as? String)?.hasSuffix("/" + name) == true }
                return (row?["outcome"] as? String, row?["reason"] as? String)
            }
            for f in corpus.malformed {
                let (o, reason) = outcome(f.path)
                #expect(o == "rejected", "\(f.path)")
                #expect(reason?.contains(f.reason ?? "?") == true, "\(f.path): \(reason ?? "nil")")
            }
            let (zo, zreason) = outcome("zeros-2g.dcm")
            #expect(zo == "rejected")
            #expect(zreason?.hasPrefix("not a DICOM file: no 'DICM' marker") == true, "\(zreason ?? "nil")")
            for f in corpus.valid {
                #expect(outcome(f.path).0 == (round == 1 ? "imported" : "already-present"), "\(f.path): \(outcome(f.path))")
            }
        }
        let ls = try run(medvaultBinary, ["ls", "--vault", vault, "patients"], environment: env)
        for f in corpus.valid { #expect(ls.stdout.contains(try #require(f.patient_id)), "\(f.path)") }
    }
}
