import Foundation
import Testing
import TestSupport

/// `medvault serve` with a browser viewer's needs, on live sockets: CORS and the Host check on the
/// loopback listener, failed-login throttling per TCP connection, and the reference Python client
/// (dicomweb-client) searching and retrieving with a bearer token.
@Suite(.serialized) struct ServerBrowserTests {
    static let viewer = "http://localhost:3000"

    /// A vault holding the valid corpus, one radiologist, and a server on a socket and a loopback port.
    final class Server {
        let dir = TempDir()
        var env: [String: String]
        let token: String
        let port = ServerLimitTests.freeLoopbackPort()
        let socket: String
        let process = Process()
        let corpus = Corpus.shared

        init(_ extra: [String] = []) throws {
            env = medvaultEnvironment(vault: dir.sub("vault"))
            socket = dir.sub("s.sock")
            #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
            let files = Corpus.shared.valid.map { Corpus.shared.path($0) }
            _ = try run(medvaultBinary, ["import"] + files, environment: env)
            #expect(try run(medvaultBinary, ["user", "add", "rad", "--role", "radiologist"], environment: env).status == 0)
            let issued = try run(medvaultBinary, ["token", "issue", "rad", "--json"], environment: env)
            token = ((try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])?["token"] as? String) ?? ""
            process.executableURL = URL(fileURLWithPath: medvaultBinary)
            process.arguments = ["serve", "--socket", socket, "--http", "127.0.0.1:\(port)"] + extra
            process.environment = env
            _ = FileManager.default.createFile(atPath: dir.sub("serve.err"), contents: nil)
            process.standardError = FileHandle(forWritingAtPath: dir.sub("serve.err"))
            try process.run()
            for _ in 0..<100 where !ready() { usleep(50_000) }
            #expect(ready(), "the server did not start: \(stderr)")
        }

        var stderr: String { (try? String(contentsOfFile: dir.sub("serve.err"), encoding: .utf8)) ?? "" }

        /// Both listeners answer. The probe is an OPTIONS on a path the API does not have: no failed login,
        /// no record for the paths the tests count.
        func ready() -> Bool {
            FileManager.default.fileExists(atPath: socket) && (try? curl(["-X", "OPTIONS"], path: "/dicom-web/probe").status) == 404
        }

        /// (status, headers lowercased, body) of one request with curl; `socket` talks to the Unix socket.
        func curl(_ args: [String], path: String = "/dicom-web/studies", socket useSocket: Bool = false) throws -> (status: Int, headers: String, body: String) {
            let head = dir.sub("head-\(UUID().uuidString)")
            let out = dir.sub("body-\(UUID().uuidString)")
            var a = ["-s", "--max-time", "10", "-D", head, "-o", out, "-w", "%{http_code}"]
            a += useSocket ? ["--unix-socket", socket, "http://localhost" + path] : ["http://127.0.0.1:\(port)" + path]
            let r = try run("/usr/bin/curl", args + a)
            defer { try? FileManager.default.removeItem(atPath: head); try? FileManager.default.removeItem(atPath: out) }
            return (
                Int(r.stdout) ?? -1, ((try? String(contentsOfFile: head, encoding: .utf8)) ?? "").lowercased(),
                (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            )
        }

        func audit() throws -> [[String: Any]] {
            let log = try run(medvaultBinary, ["audit", "show", "--json"], environment: env)
            return (try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]]) ?? []
        }

        func stop() {
            #expect(process.isRunning, "the server died during the test")
            process.interrupt()
            process.waitUntilExit()
        }

        deinit { if process.isRunning { process.terminate() }; dir.remove() }
    }

    @Test(.timeLimit(.minutes(2))) func corsPreflightAndHeadersOnTheLoopbackListener() throws {
        let s = try Server(["--allow-origin", Self.viewer, "--cross-origin-isolation"])
        defer { s.stop() }
        let preflight = try s.curl([
            "-X", "OPTIONS", "-H", "Origin: \(Self.viewer)", "-H", "Access-Control-Request-Method: GET",
            "-H", "Access-Control-Request-Headers: authorization",
        ])
        #expect(preflight.status == 204)
        for line in [
            "access-control-allow-origin: \(Self.viewer)", "access-control-allow-methods: get, head, options, post",
            "access-control-allow-headers: authorization, content-type, accept, range", "access-control-max-age: 600", "vary: origin",
            "cross-origin-opener-policy: same-origin", "cross-origin-embedder-policy: require-corp",
        ] {
            #expect(preflight.headers.contains(line), "\(line) missing in \(preflight.headers)")
        }
        let get = try s.curl(["-H", "Origin: \(Self.viewer)", "-H", "Authorization: Bearer \(s.token)"])
        #expect(get.status == 200 && get.headers.contains("access-control-allow-origin: \(Self.viewer)"))
        #expect(get.headers.contains("access-control-expose-headers: content-type, content-length, content-range, warning"))
        let other = try s.curl(["-H", "Origin: http://evil.example", "-H", "Authorization: Bearer \(s.token)"])
        #expect(other.status == 200 && !other.headers.contains("access-control-allow-origin"))
        // The same preflight over the Unix socket (an SSH tunnel's end) is answered the same way.
        let tunneled = try s.curl(["-X", "OPTIONS", "-H", "Origin: \(Self.viewer)", "-H", "Access-Control-Request-Method: GET"], socket: true)
        #expect(tunneled.status == 204 && tunneled.headers.contains("access-control-allow-origin: \(Self.viewer)"))
        // Audited as OPTIONS, never as GET, and never as a failed login.
        let records = try s.audit()
        #expect(records.filter { $0["action"] as? String == "OPTIONS /dicom-web/studies" }.count == 2)
        #expect(records.filter { $0["action"] as? String == "GET /dicom-web/studies" }.count == 2)
        #expect(records.allSatisfy { ($0["detail"] as? String) != "401" || ($0["action"] as? String)?.hasPrefix("GET") == true })
    }

    @Test(.timeLimit(.minutes(2))) func theLoopbackListenerRefusesAHostThatIsNotLoopback() throws {
        let s = try Server()
        defer { s.stop() }
        let auth = ["-H", "Authorization: Bearer \(s.token)"]
        for host in ["evil.example", "evil.example:\(s.port)", "localhost:\(s.port + 1)", "192.168.1.5:\(s.port)"] {
            let r = try s.curl(auth + ["-H", "Host: \(host)"])
            #expect(r.status == 421, "\(host)")
            #expect(r.headers.contains("content-type: application/json") && r.body.hasPrefix(#"{"error":"#), "\(host)")
        }
        for host in ["localhost", "localhost:\(s.port)", "127.0.0.1:\(s.port)", "[::1]:\(s.port)"] {
            #expect(try s.curl(auth + ["-H", "Host: \(host)"]).status == 200, "\(host)")
        }
        // The Unix socket is not subject to it.
        #expect(try s.curl(auth + ["-H", "Host: evil.example"], socket: true).status == 200)
        let refused = try s.audit().filter { ($0["detail"] as? String)?.hasPrefix("421") == true }
        #expect(refused.count == 4)
        #expect(refused.allSatisfy { $0["action"] as? String == "GET /dicom-web/studies" && $0["outcome"] as? String == "denied" })
        #expect(try run(medvaultBinary, ["audit", "verify"], environment: s.env).status == 0)
    }

    /// Throttling on TCP is per connection: a client guessing tokens on its connection is slowed down;
    /// another client's wrong token is answered at once and its valid request is not delayed.
    @Test(.timeLimit(.minutes(2))) func oneGuessingClientDoesNotSlowAnother() throws {
        let s = try Server()
        defer { s.stop() }
        let script = #"""
            import http.client, json, sys, time
            port, token = int(sys.argv[1]), sys.argv[2]
            def ask(conn, tok):
                start = time.monotonic()
                conn.request("GET", "/dicom-web/studies", headers={"Authorization": "Bearer " + tok})
                r = conn.getresponse(); r.read()
                return r.status, time.monotonic() - start
            guesser = http.client.HTTPConnection("127.0.0.1", port)
            guesses = [ask(guesser, "mvt_guess%d" % i) for i in range(9)]
            other = http.client.HTTPConnection("127.0.0.1", port)
            other_wrong = ask(other, "mvt_typo")
            other_valid = ask(other, token)
            third_valid = ask(http.client.HTTPConnection("127.0.0.1", port), token)
            guesser_next = ask(guesser, "mvt_guess9")
            print(json.dumps({"guesses": guesses, "other_wrong": other_wrong, "other_valid": other_valid,
                              "third_valid": third_valid, "guesser_next": guesser_next}))
            """#
        let r = try run("/usr/bin/env", ["python3", "-c", script, "\(s.port)", s.token])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        func pair(_ k: String) -> (Int, Double) { let a = o[k] as? [Any] ?? []; return ((a.first as? Int) ?? -1, (a.last as? Double) ?? -1) }
        let guesses = (o["guesses"] as? [[Any]] ?? []).map { ($0[0] as? Int ?? -1, $0[1] as? Double ?? -1) }
        #expect(guesses.count == 9 && guesses.allSatisfy { $0.0 == 401 })
        #expect(guesses.last.map { $0.1 >= 1.4 } == true, "the guesser's 9th failure waits 1.6 s: \(guesses)")
        #expect(pair("other_wrong").0 == 401 && pair("other_wrong").1 < 0.5, "another client's first failure is not delayed")
        #expect(pair("other_valid").0 == 200 && pair("other_valid").1 < 1.0)
        #expect(pair("third_valid").0 == 200 && pair("third_valid").1 < 1.0)
        #expect(pair("guesser_next").0 == 401 && pair("guesser_next").1 >= 1.8, "the guesser stays slowed: \(pair("guesser_next"))")
        // Ten failures on the listener within the minute: one alert, naming the listener and the connection.
        let alerts = try s.audit().filter { $0["outcome"] as? String == "alert" }
        #expect(alerts.count == 1)
        #expect((alerts.first?["detail"] as? String)?.contains("the TCP listener (latest from connection 127.0.0.1:") == true)
        #expect(s.stderr.contains("medvault: ALERT: 10 failed authentications from the TCP listener"))
    }

    static var hasDicomwebClient: Bool {
        (try? run("/usr/bin/env", ["python3", "-c", "import dicomweb_client"]).status) == 0
    }

    /// dicomweb-client (the Python client of highdicom and the Imaging Data Commons) over the loopback
    /// listener with a bearer token: wildcard and multi-value QIDO, and instance retrieval.
    @Test(.enabled(if: hasDicomwebClient, "tools/setup installs dicomweb-client"), .timeLimit(.minutes(2)))
    func dicomwebClientSearchesAndRetrieves() throws {
        let s = try Server()
        defer { s.stop() }
        let f = try #require(s.corpus.valid.first { $0.patient_id == "MRN0012345" })
        let script = #"""
            import json, sys, pydicom
            from dicomweb_client.api import DICOMwebClient
            port, token, study, series, sop, original = sys.argv[1:7]
            c = DICOMwebClient(url="http://127.0.0.1:%s/dicom-web" % port, headers={"Authorization": "Bearer " + token})
            uid = lambda o, tag: o[tag]["Value"][0]
            out = {}
            out["wildcard"] = sorted(uid(o, "0020000D") for o in c.search_for_studies(search_filters={"PatientID": "MRN00123*"}))
            out["backslash"] = sorted(uid(o, "00080050") for o in c.search_for_studies(search_filters={"AccessionNumber": "ACC1001\\ACC1003"}))
            out["repeated"] = sorted(uid(o, "00080050") for o in c.search_for_studies(search_filters={"AccessionNumber": ["ACC1001", "ACC1003"]}))
            out["instances"] = sorted(uid(o, "00080018") for o in c.search_for_instances(study_instance_uid=study))
            ds = c.retrieve_instance(study, series, sop)
            orig = pydicom.dcmread(original)
            out["retrieved"] = ds.SOPInstanceUID
            out["same_pixels"] = ds.PixelData == orig.PixelData
            out["same_name"] = str(ds.PatientName) == str(orig.PatientName)
            print(json.dumps(out))
            """#
        let r = try run(
            "/usr/bin/env", ["python3", "-c", script, "\(s.port)", s.token, f.study_uid!, f.series_uid!, f.sop_uid!, s.corpus.path(f)])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let wildcard = Set(s.corpus.valid.filter { ($0.patient_id ?? "").hasPrefix("MRN00123") }.compactMap(\.study_uid))
        #expect(Set(o["wildcard"] as? [String] ?? []) == wildcard && !wildcard.isEmpty)
        #expect(o["backslash"] as? [String] == ["ACC1001", "ACC1003"])
        #expect(o["repeated"] as? [String] == ["ACC1001", "ACC1003"])
        #expect(Set(o["instances"] as? [String] ?? []) == Set(s.corpus.valid.filter { $0.study_uid == f.study_uid }.compactMap(\.sop_uid)))
        #expect(o["retrieved"] as? String == f.sop_uid && o["same_pixels"] as? Bool == true && o["same_name"] as? Bool == true)
        let searches = try s.audit().filter { ($0["action"] as? String) == "GET /dicom-web/studies" }
        #expect(searches.count == 3 && searches.allSatisfy { $0["outcome"] as? String == "ok" })
    }

    /// An instance stored without a Part 10 header (a bare dataset) reaches dicomweb-client as a Part 10
    /// stream: pydicom reads it without force, the meta names the instance and its syntax, and the
    /// dataset equals the original's (read with force).
    @Test(.enabled(if: hasDicomwebClient, "tools/setup installs dicomweb-client"), .timeLimit(.minutes(2)))
    func dicomwebClientRetrievesABareDatasetAsPart10() throws {
        let s = try Server()
        defer { s.stop() }
        let f = try #require(s.corpus.valid.first { $0.path.hasSuffix("no-file-meta.dcm") })
        let script = #"""
            import json, sys, pydicom
            from dicomweb_client.api import DICOMwebClient
            port, token, study, series, sop, original = sys.argv[1:7]
            c = DICOMwebClient(url="http://127.0.0.1:%s/dicom-web" % port, headers={"Authorization": "Bearer " + token})
            ds = c.retrieve_instance(study, series, sop)
            orig = pydicom.dcmread(original, force=True)
            try:
                pydicom.dcmread(original)
                out = {"original_needs_force": False}
            except Exception:
                out = {"original_needs_force": True}
            out["preamble"] = ds.preamble == bytes(128)
            out["syntax"] = str(ds.file_meta.TransferSyntaxUID)
            out["meta_sop"] = str(ds.file_meta.MediaStorageSOPInstanceUID)
            out["meta_class"] = ds.file_meta.MediaStorageSOPClassUID == orig.SOPClassUID
            out["same_dataset"] = ds == orig
            print(json.dumps(out))
            """#
        let r = try run(
            "/usr/bin/env", ["python3", "-c", script, "\(s.port)", s.token, f.study_uid!, f.series_uid!, f.sop_uid!, s.corpus.path(f)])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(o["original_needs_force"] as? Bool == true)
        #expect(o["preamble"] as? Bool == true && o["meta_class"] as? Bool == true && o["same_dataset"] as? Bool == true)
        #expect(o["syntax"] as? String == "1.2.840.10008.1.2" && o["meta_sop"] as? String == f.sop_uid)
    }

    /// dicomweb-client stores a new series with STOW-RS (multipart/related, as the client builds it),
    /// reads it back byte for byte, and is refused with 409 when it stores to another study's URL.
    @Test(.enabled(if: hasDicomwebClient, "tools/setup installs dicomweb-client"), .timeLimit(.minutes(2)))
    func dicomwebClientStoresWithSTOWRS() throws {
        let s = try Server()
        defer { s.stop() }
        let series = Corpus.generate(["ct-series", s.dir.sub("new"), "--slices", "3", "--size", "64", "--patient-id", "STOW-CLIENT",
                                      "--patient-name", "Stowaway^Client"])
        let files = series.valid.map { series.path($0) }.sorted()
        let other = try #require(s.corpus.valid.first?.study_uid)
        let script = #"""
            import json, sys, pydicom, requests
            from dicomweb_client.api import DICOMwebClient
            port, token, other = sys.argv[1:4]
            files = sys.argv[4:]
            c = DICOMwebClient(url="http://127.0.0.1:%s/dicom-web" % port, headers={"Authorization": "Bearer " + token})
            datasets = [pydicom.dcmread(f) for f in files]
            out = {}
            answer = c.store_instances(datasets)
            # The client turns the Store Instances Response into a pydicom Dataset.
            out["stored"] = sorted(i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence)
            out["urls"] = all(i.RetrieveURL.endswith("/instances/" + i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence)
            again = c.store_instances(datasets)
            out["again"] = len(again.ReferencedSOPSequence)
            ds = datasets[0]
            back = c.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            out["same_pixels"] = back.PixelData == ds.PixelData and str(back.PatientName) == str(ds.PatientName)
            try:
                c.store_instances(datasets[:1], study_instance_uid=other)
                out["mismatch"] = "stored"
            except requests.exceptions.HTTPError as e:
                out["mismatch"] = e.response.status_code
                out["reason"] = e.response.json()["00081198"]["Value"][0]["00081197"]["Value"][0]
            print(json.dumps(out))
            """#
        let r = try run("/usr/bin/env", ["python3", "-c", script, "\(s.port)", s.token, other] + files)
        #expect(r.status == 0, "\(r.stderr)")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(o["stored"] as? [String] == series.valid.compactMap(\.sop_uid).sorted())
        #expect(o["again"] as? Int == files.count)
        #expect(o["urls"] as? Bool == true)
        #expect(o["same_pixels"] as? Bool == true)
        #expect(o["mismatch"] as? Int == 409 && o["reason"] as? Int == 0xA900)
        // Audited as imports by the account, and nothing in clear under the vault.
        let imports = try s.audit().filter { $0["action"] as? String == "import" && $0["actor"] as? String == "rad" }
        #expect(imports.count == 3)
        #expect(imports.first?["instances"] as? Int == files.count)
        let name = Array("Stowaway".utf8)
        #expect(allFiles(under: s.dir.sub("vault")).allSatisfy { !fileContains($0, name) })
    }

    static var hasChromium: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium") }

    /// A real browser (headless Chromium) on a page from an allowed origin: it preflights, sends the
    /// token, reads a study search, the metadata and frame 1 of an instance, and the headers CORS exposes.
    /// The same page from an origin not listed cannot read anything. This is what a web viewer does.
    @Test(.enabled(if: hasChromium, "tools/setup installs chromium"), .timeLimit(.minutes(3)))
    func aBrowserOnAnAllowedOriginReadsAndAnotherOriginCannot() throws {
        let allowedPort = ServerLimitTests.freeLoopbackPort(), otherPort = ServerLimitTests.freeLoopbackPort()
        let s = try Server(["--allow-origin", "http://127.0.0.1:\(allowedPort)"])
        defer { s.stop() }
        let f = try #require(s.corpus.valid.first { $0.patient_id == "MRN0012345" })
        let site = s.dir.sub("site")
        try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
        let page = #"""
            <html><body><pre id="out">pending</pre><script>
            (async () => {
              const q = new URLSearchParams(location.search), api = q.get("api"), auth = { Authorization: "Bearer " + q.get("token") };
              const out = {};
              try {
                const r = await fetch(api + "/studies?PatientID=MRN0012345", { headers: { ...auth, Accept: "application/dicom+json" } });
                out.search = r.status; out.studies = (await r.json()).map(o => o["0020000D"].Value[0]);
                out.contentType = r.headers.get("Content-Type");
                const i = api + "/studies/" + q.get("study") + "/series/" + q.get("series") + "/instances/" + q.get("sop");
                const m = await fetch(i + "/metadata", { headers: auth });
                out.metadata = m.status; out.sop = (await m.json())[0]["00080018"].Value[0];
                const fr = await fetch(i + "/frames/1", { headers: { ...auth, Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*' } });
                out.frame = fr.status; out.frameBytes = (await fr.arrayBuffer()).byteLength;
                out.frameType = fr.headers.get("Content-Type").split(";")[0];
              } catch (e) { out.error = e.name + ": " + e.message; }
              document.getElementById("out").textContent = JSON.stringify(out);
            })();
            </script></body></html>
            """#
        try Data(page.utf8).write(to: URL(fileURLWithPath: site + "/viewer.html"))
        var servers: [Process] = []
        // SIGKILL: the test process's children may inherit a blocked SIGTERM.
        defer { for p in servers { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        for port in [allowedPort, otherPort] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-m", "http.server", "\(port)", "--bind", "127.0.0.1", "--directory", site]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            servers.append(p)
        }
        usleep(500_000)
        func browse(_ port: Int) throws -> [String: Any] {
            let query = "api=http://127.0.0.1:\(s.port)/dicom-web&token=\(s.token)&study=\(f.study_uid!)&series=\(f.series_uid!)&sop=\(f.sop_uid!)"
            let r = try run("/usr/bin/chromium", [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--user-data-dir=" + s.dir.sub("profile-\(port)"),
                "--virtual-time-budget=15000", "--dump-dom", "http://127.0.0.1:\(port)/viewer.html?\(query)",
            ])
            let dom = r.stdout
            guard let start = dom.range(of: "<pre id=\"out\">"), let end = dom.range(of: "</pre>", range: start.upperBound..<dom.endIndex) else {
                Issue.record("no result in the page: \(dom.prefix(500)) \(r.stderr.suffix(500))")
                return [:]
            }
            let text = String(dom[start.upperBound..<end.lowerBound]).replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["unparsed": text]
        }
        let allowed = try browse(allowedPort)
        #expect(allowed["error"] == nil, "\(allowed)")
        #expect(allowed["search"] as? Int == 200 && allowed["contentType"] as? String == "application/dicom+json")
        #expect(Set(allowed["studies"] as? [String] ?? []) == Set(s.corpus.valid.filter { $0.patient_id == "MRN0012345" }.compactMap(\.study_uid)))
        #expect(allowed["metadata"] as? Int == 200 && allowed["sop"] as? String == f.sop_uid)
        #expect(allowed["frame"] as? Int == 200 && allowed["frameType"] as? String == "multipart/related")
        #expect((allowed["frameBytes"] as? Int ?? 0) > 0)
        // The browser refuses the answers to a page from an origin not listed: the script sees a network error.
        let other = try browse(otherPort)
        #expect((other["error"] as? String)?.hasPrefix("TypeError") == true, "\(other)")
        #expect(other["search"] == nil)
        // The allowed page's preflights were answered before authentication and recorded as OPTIONS.
        // The other origin's preflight was refused (403), so the browser never sent its GET.
        let preflights = try s.audit().filter { ($0["action"] as? String)?.hasPrefix("OPTIONS /dicom-web/studies") == true }
        let details = preflights.compactMap { $0["detail"] as? String }
        #expect(details.contains("204 preflight") && details.contains("403 preflight from an origin not allowed"), "\(details)")
        #expect(details.allSatisfy { $0 == "204 preflight" || $0 == "403 preflight from an origin not allowed" }, "\(details)")
    }
}
