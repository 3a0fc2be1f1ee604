import Foundation
import Testing
import TestSupport

/// `medvault serve` on a real socket, spoken to with curl, as a viewer would.
@Suite(.serialized) struct ServerTests {
    final class Running {
        let dir = TempDir()
        let process = Process()
        var env: [String: String]
        var socket: String { dir.sub("vault/run/medvault.sock") }
        var tokens: [String: String] = [:]
        let corpus = Corpus.shared

        init() throws {
            env = ProcessInfo.processInfo.environment
            env["MEDVAULT_PASSPHRASE"] = "correct horse battery staple"
            env["MEDVAULT_VAULT"] = dir.sub("vault")
            #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
            _ = try mv(["import"] + corpus.valid.map { corpus.path($0) })
            for (name, role) in [("rad", "radiologist"), ("view", "viewer"), ("bk", "backup"), ("gone", "viewer")] {
                #expect(try mv(["user", "add", name, "--role", role]).status == 0)
                let issued = try mv(["token", "issue", name, "--json"])
                tokens[name] = (try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])?["token"] as? String
            }
            #expect(try mv(["user", "disable", "gone"]).status == 0)
            process.executableURL = URL(fileURLWithPath: medvaultBinary)
            process.arguments = ["serve"]
            process.environment = env
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
        }

        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }

        /// (status, body) of a GET over the socket.
        func get(_ path: String, token: String?) throws -> (Int, Data) {
            let out = dir.sub("body-\(UUID().uuidString)")
            var args = ["-s", "--unix-socket", socket, "-o", out, "-w", "%{http_code}"]
            if let token { args += ["-H", "Authorization: Bearer \(token)"] }
            let r = try run("/usr/bin/curl", args + ["http://localhost" + path])
            let body = FileManager.default.contents(atPath: out) ?? Data()
            try? FileManager.default.removeItem(atPath: out)
            return (Int(r.stdout) ?? -1, body)
        }

        /// Stops the server and checks that it was still running and exits cleanly.
        func stop() {
            #expect(process.isRunning, "the server died during the test")
            process.interrupt()
            process.waitUntilExit()
            #expect(process.terminationReason == .exit && process.terminationStatus == 0, "server exit: \(process.terminationStatus)")
        }

        deinit { if process.isRunning { process.terminate() }; dir.remove() }
    }

    /// A Patient ID may contain a comma: the audit record keeps it whole.
    @Test func auditKeepsAPatientIDWithACommaWhole() throws {
        let s = try Running()
        defer { s.stop() }
        let source = try #require(s.corpus.valid.first { $0.path.contains("latin1") })
        let file = s.dir.sub("comma.dcm")
        let script = """
            import sys, pydicom
            from pydicom.uid import generate_uid
            ds = pydicom.dcmread(sys.argv[1])
            ds.PatientID = "A,B^1"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(sys.argv[2])
            """
        #expect(try run("/usr/bin/env", ["python3", "-c", script, s.corpus.path(source), file]).status == 0)
        #expect(try s.mv(["import", file]).status == 0)
        let (status, body) = try s.get("/dicom-web/studies?PatientID=A%2CB%5E1", token: s.tokens["rad"])
        #expect(status == 200 && String(decoding: body, as: UTF8.self).contains("A,B^1"))
        let log = try s.mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let search = try #require(records.last { ($0["action"] as? String) == "GET /dicom-web/studies" })
        #expect(search["patientIDs"] as? [String] == ["A,B^1"])
    }

    @Test func rolesTokensAndEndpoints() throws {
        let s = try Running()
        defer { s.stop() }
        let f = try #require(s.corpus.valid.first { $0.path.contains("latin1") })
        let wado = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)"
        for path in ["/dicom-web/studies", wado] {
            #expect(try s.get(path, token: nil).0 == 401)
            #expect(try s.get(path, token: "mvt_wrong").0 == 401)
            #expect(try s.get(path, token: s.tokens["gone"]).0 == 401)  // disabled account
            #expect(try s.get(path, token: s.tokens["bk"]).0 == 403)  // backup never gets decrypted data
            #expect(try s.get(path, token: s.tokens["view"]).0 == 200)
            #expect(try s.get(path, token: s.tokens["rad"]).0 == 200)
        }
        // Revocation takes effect on the running server at once.
        #expect(try s.mv(["token", "revoke", "--user", "view"]).status == 0)
        #expect(try s.get("/dicom-web/studies", token: s.tokens["view"]).0 == 401)
        // Unknown UIDs, or a real instance under the wrong study: 404.
        #expect(try s.get("/dicom-web/studies/1.2.3/series/4.5.6/instances/\(f.sop_uid!)", token: s.tokens["rad"]).0 == 404)
        #expect(try s.get("/dicom-web/studies/1.2.3/series/4.5.6/instances/7.8.9", token: s.tokens["rad"]).0 == 404)
        // Every request was audited, with the peer's uid and the outcome.
        let log = try s.mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let requests = records.filter { ($0["action"] as? String)?.hasPrefix("GET ") == true }
        #expect(requests.count == 15)  // 2 paths × 6 token states, 1 after revocation, 2 not found
        #expect(requests.filter { $0["outcome"] as? String == "denied" }.count == 9)
        #expect(requests.allSatisfy { ($0["peerUID"] as? Int) == Int(getuid()) && ($0["peerPID"] as? Int ?? 0) > 0 })
        #expect(try s.mv(["audit", "verify"]).status == 0)
    }

    @Test func qidoFiltersAndWadoBytes() throws {
        let s = try Running()
        defer { s.stop() }
        let t = s.tokens["rad"]
        func studies(_ query: String) throws -> [[String: Any]] {
            let (status, body) = try s.get("/dicom-web/studies" + query, token: t)
            #expect(status == 200)
            return (try JSONSerialization.jsonObject(with: body) as? [[String: Any]]) ?? []
        }
        func uid(_ o: [String: Any]) -> String? { ((o["0020000D"] as? [String: Any])?["Value"] as? [String])?.first }
        let all = Set(s.corpus.valid.compactMap(\.study_uid))
        #expect(Set(try studies("").compactMap(uid)) == all)
        let doe = Set(s.corpus.valid.filter { $0.patient_id == "MRN0012345" }.compactMap(\.study_uid))
        #expect(Set(try studies("?PatientID=MRN0012345").compactMap(uid)) == doe)
        #expect(Set(try studies("?PatientName=doe*").compactMap(uid)) == doe)
        #expect(try studies("?PatientName=M%C3%BCller*").count == 2)
        #expect(try studies("?PatientName=nobody*").isEmpty)
        let dated = s.corpus.valid.filter { ($0.study_date ?? "") >= "20230101" && ($0.study_date ?? "") <= "20231231" }
        #expect(Set(try studies("?StudyDate=20230101-20231231").compactMap(uid)) == Set(dated.compactMap(\.study_uid)))
        #expect(try studies("?ModalitiesInStudy=MR").allSatisfy {
            ((($0["00080061"] as? [String: Any])?["Value"] as? [String]) ?? []).contains("MR")
        })
        #expect(try studies("?limit=3").count == 3)
        #expect(try studies("?limit=5&offset=\(all.count - 2)").count == 2)
        // Series and instance search, at every level.
        func objects(_ path: String) throws -> [[String: Any]] {
            let (status, body) = try s.get(path, token: t)
            #expect(status == 200, "\(path)")
            return (try JSONSerialization.jsonObject(with: body) as? [[String: Any]]) ?? []
        }
        func text(_ o: [String: Any], _ tag: String) -> String? { ((o[tag] as? [String: Any])?["Value"] as? [Any])?.first as? String }
        let does: [CorpusFile] = s.corpus.valid.filter { $0.patient_id == "MRN0012345" }
        let study: String = try #require(does.first?.study_uid)
        let series: String = try #require(does.first?.series_uid)
        let seriesOfStudy: Set<String> = Set(try objects("/dicom-web/studies/\(study)/series").compactMap { text($0, "0020000E") })
        #expect(seriesOfStudy == Set(does.filter { $0.study_uid == study }.compactMap { $0.series_uid }))
        let seriesOfPatient: Set<String> = Set(try objects("/dicom-web/series?PatientID=MRN0012345").compactMap { text($0, "0020000E") })
        #expect(seriesOfPatient == Set(does.compactMap { $0.series_uid }))
        #expect(try objects("/dicom-web/series?Modality=MR").allSatisfy { text($0, "00080060") == "MR" })
        let sops: Set<String> = Set(try objects("/dicom-web/studies/\(study)/series/\(series)/instances").compactMap { text($0, "00080018") })
        #expect(sops == Set(does.filter { $0.series_uid == series }.compactMap { $0.sop_uid }))
        #expect(try objects("/dicom-web/instances").count == s.corpus.valid.count)
        #expect(try objects("/dicom-web/instances?SOPInstanceUID=\(does[0].sop_uid!)").count == 1)
        #expect(try objects("/dicom-web/instances?limit=4&offset=1").count == 4)
        #expect(try objects("/dicom-web/studies/1.2.3/series").isEmpty)

        // includefield: beyond the default return set only on request; `all` returns everything held;
        // matching keys are returned; an unknown field is named in a Warning header, not an error.
        let institution: String = try #require(does.first?.institution)
        let plain = try #require(try objects("/dicom-web/studies?PatientID=MRN0012345").first)
        #expect(plain["00080080"] == nil && plain["00100020"] != nil && plain["00201208"] != nil)
        let byKeyword = try #require(try objects("/dicom-web/studies?PatientID=MRN0012345&includefield=InstitutionName").first)
        #expect(text(byKeyword, "00080080") == institution)
        let byTag = try #require(try objects("/dicom-web/studies?PatientID=MRN0012345&includefield=00080080,IssuerOfPatientID").first)
        #expect(text(byTag, "00080080") == institution)
        let everything = try #require(try objects("/dicom-web/series?PatientID=MRN0012345&includefield=all").first)
        #expect(text(everything, "00080080") == institution && text(everything, "00080020") != nil)
        let seriesDefault = try #require(try objects("/dicom-web/series?PatientID=MRN0012345").first)
        #expect(seriesDefault["00080080"] == nil && seriesDefault["00080020"] == nil)
        let matched = try #require(try objects("/dicom-web/series?PatientID=MRN0012345&StudyDate=19000101-").first)
        #expect(text(matched, "00080020") != nil)
        let headerFile = s.dir.sub("headers.txt")
        let warned = try run("/usr/bin/curl", [
            "-s", "--unix-socket", s.socket, "-D", headerFile, "-o", "/dev/null", "-H", "Authorization: Bearer \(t!)",
            "http://localhost/dicom-web/studies?includefield=NoSuchField&includefield=StudyDescription",
        ])
        #expect(warned.status == 0)
        let headers = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        #expect(headers.contains("200") && headers.lowercased().contains("warning: 299") && headers.contains("NoSuchField"))
        #expect(!headers.contains("StudyDescription are not supported"))

        // WADO-RS: the multipart body parsed back holds the original bytes exactly.
        for f in s.corpus.valid.prefix(5) {
            let (status, body) = try s.get("/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)", token: t)
            #expect(status == 200)
            let text = Array(body)
            let start = try #require(body.range(of: Data("\r\n\r\n".utf8))).upperBound
            let end = try #require(body.range(of: Data("\r\n--medvault-".utf8), options: .backwards)).lowerBound
            let part = Data(text[start..<end])
            let path = s.dir.sub("part.dcm")
            try part.write(to: URL(fileURLWithPath: path))
            #expect(try sha256(ofFile: path) == f.sha256, "\(f.path)")
        }
    }

    /// Study and series retrieval, parsed by an independent multipart parser (requests-toolbelt).
    @Test func studyAndSeriesRetrievalParsedByAThirdPartyParser() throws {
        let s = try Running()
        defer { s.stop() }
        let doe = s.corpus.valid.filter { $0.patient_id == "MRN0012345" }
        let study = try #require(doe.first?.study_uid)
        let series = try #require(doe.first?.series_uid)
        for (path, expected) in [
            ("/dicom-web/studies/\(study)", doe.filter { $0.study_uid == study }),
            ("/dicom-web/studies/\(study)/series/\(series)", doe.filter { $0.series_uid == series }),
        ] {
            let body = s.dir.sub("body"), headers = s.dir.sub("headers")
            let r = try run("/usr/bin/curl", [
                "-s", "--unix-socket", s.socket, "-H", "Authorization: Bearer \(s.tokens["rad"]!)", "-D", headers, "-o", body,
                "http://localhost" + path,
            ])
            #expect(r.status == 0)
            let script = """
                import hashlib, sys
                from requests_toolbelt.multipart.decoder import MultipartDecoder
                ctype = [l.split(":", 1)[1].strip() for l in open(sys.argv[2]) if l.lower().startswith("content-type:")][0]
                for part in MultipartDecoder(open(sys.argv[1], "rb").read(), ctype).parts:
                    assert part.headers[b"Content-Type"] == b"application/dicom"
                    print(hashlib.sha256(part.content).hexdigest())
                """
            let parsed = try run("/usr/bin/env", ["python3", "-c", script, body, headers])
            #expect(parsed.status == 0, "\(parsed.stderr)")
            let hashes = parsed.stdout.split(separator: "\n").map(String.init)
            #expect(hashes.sorted() == expected.compactMap(\.sha256).sorted(), "\(path)")
        }
        #expect(try s.get("/dicom-web/studies/1.2.3", token: s.tokens["rad"]).0 == 404)
        #expect(try s.get("/dicom-web/studies/\(study)/series/1.2.3", token: s.tokens["rad"]).0 == 404)
        // A series asked for under another study: 404 as well.
        let other = try #require(s.corpus.valid.first { $0.study_uid != study }?.study_uid)
        #expect(try s.get("/dicom-web/studies/\(other)/series/\(series)", token: s.tokens["rad"]).0 == 404)
    }

    /// What a route disclosed reaches the audit record through the request context: no internal
    /// header leaves the socket, on answers and on refusals alike.
    @Test func noInternalHeaderLeavesTheSocket() throws {
        let s = try Running()
        defer { s.stop() }
        let f = try #require(s.corpus.valid.first)
        let series = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)"
        for (path, token, code) in [
            ("/dicom-web/studies", s.tokens["rad"], "200"),
            (series + "/instances/\(f.sop_uid!)", s.tokens["rad"], "200"),
            (series + "/metadata", s.tokens["rad"], "200"),
            ("/dicom-web/studies/\(f.study_uid!)", s.tokens["view"], "200"),
            ("/dicom-web/studies/1.2.3", s.tokens["rad"], "404"),
            ("/dicom-web/studies", s.tokens["bk"], "403"),
            ("/dicom-web/studies", nil, "401"),
        ] {
            let headerFile = s.dir.sub("headers-\(UUID().uuidString)")
            var args = ["-s", "--unix-socket", s.socket, "-D", headerFile, "-o", "/dev/null", "-w", "%{http_code}"]
            if let token { args += ["-H", "Authorization: Bearer \(token)"] }
            let r = try run("/usr/bin/curl", args + ["http://localhost" + path])
            #expect(r.stdout == code, "\(path)")
            let lines = ((try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? "").split(separator: "\r\n")
            #expect(lines.first?.hasPrefix("HTTP/1.1 \(code)") == true, "\(path)")
            let leaked = lines.filter { $0.lowercased().hasPrefix("x-medvault") }
            #expect(leaked.isEmpty, "\(path): \(leaked)")
        }
        // The facts still reach the record.
        let log = try s.mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let wado = try #require(records.last { $0["action"] as? String == "GET " + series + "/instances/\(f.sop_uid!)" })
        #expect(wado["instances"] as? Int == 1 && wado["bytes"] as? Int == f.size)
        #expect(wado["studyUIDs"] as? [String] == [f.study_uid!] && wado["patientIDs"] as? [String] == [f.patient_id ?? ""])
    }

    @Test func metadataIsDICOMJSONWithPixelDataAsABulkDataURI() throws {
        let s = try Running()
        defer { s.stop() }
        let t = s.tokens["rad"]
        let f = try #require(s.corpus.valid.first { $0.path.contains("latin1") })
        let base = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)"
        let (status, body) = try s.get(base + "/instances/\(f.sop_uid!)/metadata", token: t)
        #expect(status == 200)
        let objects = try #require(try JSONSerialization.jsonObject(with: body) as? [[String: Any]])
        #expect(objects.count == 1)
        let name = ((objects[0]["00100010"] as? [String: Any])?["Value"] as? [[String: Any]])?.first?["Alphabetic"] as? String
        #expect(name == "Müller^Jürgen")  // converted from ISO_IR 100
        #expect(((objects[0]["00080018"] as? [String: Any])?["Value"] as? [String])?.first == f.sop_uid)
        // Pixel Data is never inline: a BulkDataURI that names this instance (issue 11).
        let pixel = try #require(objects[0]["7FE00010"] as? [String: Any])
        #expect(pixel["Value"] == nil && pixel["InlineBinary"] == nil)
        #expect(pixel["BulkDataURI"] as? String == "http://localhost" + base + "/instances/\(f.sop_uid!)/bulkdata/7FE00010")
        let study = try #require(try JSONSerialization.jsonObject(with: try s.get("/dicom-web/studies/\(f.study_uid!)/metadata", token: t).1) as? [[String: Any]])
        #expect(study.count == s.corpus.valid.filter { $0.study_uid == f.study_uid }.count)
        #expect(try s.get(base + "/metadata", token: t).0 == 200)
        #expect(try s.get("/dicom-web/studies/1.2.3/metadata", token: t).0 == 404)
        #expect(try s.get(base + "/metadata", token: s.tokens["bk"]).0 == 403)
        // Every kind of file in the corpus yields metadata (implicit VR, big endian, no meta, compressed…).
        for g in s.corpus.valid {
            let (code, data) = try s.get("/dicom-web/studies/\(g.study_uid!)/series/\(g.series_uid!)/instances/\(g.sop_uid!)/metadata", token: t)
            #expect(code == 200, "\(g.path)")
            #expect((try? JSONSerialization.jsonObject(with: data)) != nil, "\(g.path)")
        }
    }

    @Test func repeatedFailuresAreSlowedAndRaiseAnAlert() throws {
        let s = try Running()
        defer { s.stop() }
        var durations: [Double] = []
        for _ in 1...10 {
            let start = Date()
            #expect(try s.get("/dicom-web/studies", token: "mvt_guess").0 == 401)
            durations.append(Date().timeIntervalSince(start))
        }
        // The first four answer at once; from the fifth on, each waits longer.
        #expect(durations[8] >= 0.75 && durations[9] >= 1.5, "\(durations)")
        let log = try s.mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let alerts = records.filter { $0["action"] as? String == "alert" }
        #expect(alerts.count == 1)
        #expect((alerts.first?["detail"] as? String)?.contains("10 failed authentications from uid \(getuid())") == true)
    }

    @Test func theOptionalLoopbackListenerAndRefusalOfAnyOtherAddress() throws {
        let s = try Running()
        defer { s.stop() }
        for bad in ["0.0.0.0:8042", "192.168.1.10:8042", "[::]:8042", "example.org:80"] {
            let r = try s.mv(["serve", "--http", bad, "--socket", s.dir.sub("other.sock")])
            #expect(r.status != 0, "\(bad) accepted")
            #expect(r.stderr.contains("ssh -L"), "\(r.stderr)")
        }
        #expect(try s.mv(["serve", "--http", "127.0.0.1", "--socket", s.dir.sub("other.sock")]).status != 0)
        // A second server on the same vault with a loopback listener.
        let port = 20000 + Int(getpid() % 20000)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: medvaultBinary)
        p.arguments = ["serve", "--socket", s.dir.sub("second.sock"), "--http", "127.0.0.1:\(port)"]
        p.environment = s.env
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { p.interrupt(); p.waitUntilExit() }
        var code = ""
        for _ in 0..<100 {
            let r = try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer \(s.tokens["rad"]!)",
                                              "http://127.0.0.1:\(port)/dicom-web/studies"])
            code = r.stdout
            if code == "200" { break }
            usleep(50_000)
        }
        #expect(code == "200")
        let anon = try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/dicom-web/studies"])
        #expect(anon.stdout == "401")
        // A TCP peer has no credentials: recorded as unknown (shown as -1), not as uid 4294967295.
        let log = try s.mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let overTCP = records.filter { $0["action"] as? String == "GET /dicom-web/studies" && $0["actor"] as? String == "rad" }
        #expect(!overTCP.isEmpty && overTCP.allSatisfy { $0["peerUID"] as? Int == -1 && $0["peerPID"] as? Int == -1 })
    }

    /// A large instance streams with flat server memory, and a client that goes away stops the
    /// decryption (its reader thread ends).
    @Test func streamingIsFlatAndStopsWhenTheClientLeaves() throws {
        let s = try Running()
        defer { s.stop() }
        let big = s.dir.sub("big.dcm")
        let gen = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", big, "--mib", "160"])
        #expect(gen.status == 0)
        let meta = try #require(gen.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }.first)
        #expect(try s.mv(["import", big]).status == 0)
        let path = "/dicom-web/studies/\(meta["study_uid"]!)/series/\(meta["series_uid"]!)/instances/\(meta["sop_uid"]!)"
        let pid = s.process.processIdentifier
        func status(_ key: String) -> Int {
            let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = text.split(separator: "\n").first { $0.hasPrefix(key + ":") } ?? ""
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
        }
        _ = try s.get("/dicom-web/studies", token: s.tokens["rad"])
        let peakBefore = status("VmHWM")
        let (code, body) = try s.get(path, token: s.tokens["rad"])
        #expect(code == 200 && body.count > 160 << 20)
        #expect(status("VmHWM") - peakBefore < 40 * 1024, "server peak grew by \(status("VmHWM") - peakBefore) kB for a 160 MiB response")

        // A slow client that disconnects mid-stream.
        let threadsIdle = status("Threads")
        let slow = Process()
        slow.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        slow.arguments = ["-s", "--limit-rate", "2M", "-o", "/dev/null", "--unix-socket", s.socket,
                          "-H", "Authorization: Bearer \(s.tokens["rad"]!)", "http://localhost" + path]
        try slow.run()
        // The reader thread is at work once curl is connected (at 2 MB/s the 160 MiB take over a
        // minute, so the stream is still running; polling up to 30 s because a loaded machine starts curl late).
        var working = false
        for _ in 0..<300 where !working {
            usleep(100_000)
            working = status("Threads") > threadsIdle
        }
        #expect(working, "no reader thread started for the slow client")
        // A slow reader does not make the server buffer the file: back-pressure reaches the decryption.
        #expect(status("VmHWM") - peakBefore < 40 * 1024)
        kill(slow.processIdentifier, SIGKILL)
        slow.waitUntilExit()
        var back = false
        for _ in 0..<40 where !back {
            usleep(100_000)
            back = status("Threads") <= threadsIdle
        }
        #expect(back, "the decrypting thread kept running after the client left")
        // …and the server is alive and still answering (an aborted stream once crashed it).
        #expect(s.process.isRunning)
        #expect(try s.get("/dicom-web/studies", token: s.tokens["rad"]).0 == 200)
        // Several clients giving up mid-series, with the next instance already being decrypted.
        let series = "/dicom-web/studies/\(meta["study_uid"]!)"
        for _ in 0..<3 {
            let quitter = Process()
            quitter.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            quitter.arguments = ["-s", "--limit-rate", "1M", "-o", "/dev/null", "--unix-socket", s.socket,
                                 "-H", "Authorization: Bearer \(s.tokens["rad"]!)", "http://localhost" + series]
            try quitter.run()
            usleep(300_000)
            kill(quitter.processIdentifier, SIGKILL)
            quitter.waitUntilExit()
        }
        usleep(500_000)
        #expect(s.process.isRunning)
        #expect(try s.get("/dicom-web/studies", token: s.tokens["rad"]).0 == 200)
    }

    @Test func noTCPListenerAndCleanShutdown() throws {
        let s = try Running()
        let pid = s.process.processIdentifier
        // Every socket the server holds is a Unix socket: none of its socket inodes is in the TCP tables.
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        let inodes = fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") }
            .filter { $0.hasPrefix("socket:[") }.map { String($0.dropFirst(8).dropLast()) }
        #expect(!inodes.isEmpty)
        var tcpInodes = Set<String>()
        for table in ["/proc/\(pid)/net/tcp", "/proc/\(pid)/net/tcp6"] {
            let lines = (try? String(contentsOfFile: table, encoding: .utf8))?.split(separator: "\n").dropFirst() ?? []
            for l in lines { let cols = l.split(separator: " "); if cols.count > 9 { tcpInodes.insert(String(cols[9])) } }
        }
        #expect(tcpInodes.isDisjoint(with: inodes), "the server holds a TCP socket")
        var st = stat()
        #expect(stat(s.socket, &st) == 0 && st.st_mode & 0o777 == 0o660)
        s.stop()
        #expect(s.process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: s.socket))
    }
}
