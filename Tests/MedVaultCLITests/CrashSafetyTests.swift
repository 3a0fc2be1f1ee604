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
