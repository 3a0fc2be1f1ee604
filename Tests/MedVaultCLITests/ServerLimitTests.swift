import Foundation
import Testing
import TestSupport

/// Resource limits of `medvault serve` (issue 10, item 7): idle and slow connections, oversized request
/// lines and heads. Clients are real sockets opened by a Python helper; the server is a real process,
/// with the usual soft limit of 1,024 descriptors.
@Suite(.serialized) struct ServerLimitTests {
    /// The raw-socket client. Modes:
    ///   hold ADDR N          open N connections without sending anything, print "ready N", wait for stdin to close
    ///   trickle ADDR DELAY   send a request head one byte every DELAY s; print the seconds until the server closed
    ///   send ADDR FILE       send FILE's bytes, then print the first line of the answer and whether EOF followed
    /// ADDR is tcp:HOST:PORT or unix:PATH.
    static let client = #"""
        import socket, sys, time, resource, threading
        def connect(addr, block=True):
            kind, rest = addr.split(":", 1)
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(rest); return s
            host, port = rest.rsplit(":", 1)
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if block:
                s.connect((host, int(port)))
            else:
                s.setblocking(False); s.connect_ex((host, int(port)))
            return s
        def exchange(addr, payload_file, timeout):
            # Sends the file's bytes, reads until the server closes (or `timeout` passes without a byte).
            # Returns (answer, "eof" or the error that ended the reading).
            s = connect(addr); s.settimeout(timeout)
            try:
                s.sendall(open(payload_file, "rb").read())
            except OSError:
                pass
            answer = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                return answer, "eof"
            except OSError as e:
                return answer, "error " + type(e).__name__
        mode, addr = sys.argv[1], sys.argv[2]
        if mode == "hold":
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            socks = [connect(addr, block=False) for _ in range(int(sys.argv[3]))]
            print("ready %d" % len(socks), flush=True)
            sys.stdin.read()
        elif mode == "trickle":
            s = connect(addr); s.settimeout(60)
            head = b"GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\n" + b"X-Padding: " + b"a" * 400 + b"\r\n\r\n"
            start = time.monotonic()
            def trickle():
                try:
                    for b in head:
                        s.send(bytes([b])); time.sleep(float(sys.argv[3]))
                except OSError:
                    pass
            threading.Thread(target=trickle, daemon=True).start()
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            print("%.2f %s" % (time.monotonic() - start, "answered" if data else "closed"), flush=True)
        elif mode == "keepalive":
            # One complete request; once its answer starts, either nothing (DELAY < 0) or the next
            # request's head a byte every DELAY s. Prints the seconds from the answer until the close.
            s = connect(addr); s.settimeout(60)
            s.sendall(b"GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\n\r\n")
            first = s.recv(65536)
            start = time.monotonic()
            delay = float(sys.argv[3])
            if delay >= 0:
                def trickle():
                    try:
                        for b in b"GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 400:
                            s.send(bytes([b])); time.sleep(delay)
                    except OSError:
                        pass
                threading.Thread(target=trickle, daemon=True).start()
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
            print("%.2f %s" % (time.monotonic() - start, first.split(b"\r\n", 1)[0].decode("latin-1")), flush=True)
        elif mode == "stall":
            # Asks for PATH with TOKEN, reads 1 KiB, stops reading for SECONDS, then reads to the end.
            # Prints the bytes received in all.
            s = connect(addr); s.settimeout(60)
            s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n" % (sys.argv[4], sys.argv[3])).encode())
            total = len(s.recv(1024))
            time.sleep(float(sys.argv[5]))
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
            except OSError:
                pass
            print(total, flush=True)
        elif mode == "statuses":
            # Prints every status line the server sent on one connection (responses to pipelined requests).
            import re
            answer, _ = exchange(addr, sys.argv[3], 5)
            print(" ; ".join(m.decode("latin-1") for m in re.findall(rb"HTTP/1\.1 [0-9]{3} [^\r]*", answer)), flush=True)
        elif mode == "send":
            answer, eof = exchange(addr, sys.argv[3], 20)
            print(answer.split(b"\r\n", 1)[0].decode("latin-1"), "|", eof, flush=True)
        """#

    /// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it).
    static func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// A vault with one account, and a server on a socket and a loopback port.
    final class Server {
        let dir = TempDir()
        var env: [String: String]
        let token: String
        let port = ServerLimitTests.freeLoopbackPort()
        let socket: String
        let process = Process()

        init(_ extra: [String] = []) throws {
            env = medvaultEnvironment(vault: dir.sub("vault"))
            socket = dir.sub("s.sock")
            #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
            let corpus = Corpus.shared
            _ = try run(medvaultBinary, ["import"] + corpus.valid.prefix(3).map { corpus.path($0) }, environment: env)
            #expect(try run(medvaultBinary, ["user", "add", "rad", "--role", "radiologist"], environment: env).status == 0)
            let issued = try run(medvaultBinary, ["token", "issue", "rad", "--json"], environment: env)
            token = ((try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])?["token"] as? String) ?? ""
            // The soft descriptor limit most services get (systemd's default), whatever the test runner has.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--nofile=1024:1024", medvaultBinary, "serve", "--socket", socket, "--http", "127.0.0.1:\(port)"] + extra
            process.environment = env
            _ = FileManager.default.createFile(atPath: dir.sub("serve.err"), contents: nil)
            process.standardError = FileHandle(forWritingAtPath: dir.sub("serve.err"))
            try process.run()
            for _ in 0..<100 {
                if ready() { break }
                usleep(50_000)
            }
            #expect(ready(), "the server did not start: \(stderr)")
        }

        var stderr: String { (try? String(contentsOfFile: dir.sub("serve.err"), encoding: .utf8)) ?? "" }

        func ready() -> Bool {
            FileManager.default.fileExists(atPath: socket) && (try? get(tcp: true, timeout: 1).0) == 401
        }

        /// (HTTP status, seconds) of one authenticated search, over the socket or the TCP port.
        func get(tcp: Bool = false, timeout: Int = 10, token: String? = nil) throws -> (Int, Double) {
            let start = Date()
            var args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "\(timeout)"]
            if let token { args += ["-H", "Authorization: Bearer \(token)"] }
            args += tcp ? ["http://127.0.0.1:\(port)/dicom-web/studies"] : ["--unix-socket", socket, "http://localhost/dicom-web/studies"]
            let r = try run("/usr/bin/curl", args)
            return (Int(r.stdout) ?? -1, Date().timeIntervalSince(start))
        }

        func procStatus(_ key: String) -> Int {
            let text = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
            let line = text.split(separator: "\n").first { $0.hasPrefix(key + ":") } ?? ""
            return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? -1
        }

        var openDescriptors: Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? -1
        }

        func client(_ args: [String]) throws -> ProcessResult {
            try run("/usr/bin/env", ["python3", "-c", ServerLimitTests.client] + args)
        }

        func stop() {
            #expect(process.isRunning, "the server died during the test")
            process.interrupt()
            process.waitUntilExit()
        }

        deinit { if process.isRunning { process.terminate() }; dir.remove() }
    }

    /// 3,000 idle TCP connections (more than the server's 1,024 descriptors) do not keep the owner
    /// off the Unix socket: the TCP listener serves at most its cap, the rest wait in the kernel.
    @Test(.timeLimit(.minutes(2))) func idleTCPConnectionsDoNotStarveTheSocket() throws {
        let s = try Server()
        defer { s.stop() }
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = ["python3", "-c", Self.client, "hold", "tcp:127.0.0.1:\(s.port)", "3000"]
        let out = Pipe(), inp = Pipe()
        holder.standardOutput = out
        holder.standardInput = inp
        try holder.run()
        defer { try? inp.fileHandleForWriting.close(); holder.waitUntilExit() }
        var line = ""
        while !line.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line += String(decoding: chunk, as: UTF8.self)
        }
        #expect(line.hasPrefix("ready 3000"), "\(line)")
        // Let the server accept what it will: connections beyond the accept queue are retried by the
        // client's kernel (after 1 s, 3 s, 7 s), so wait until the count is stable.
        var last = -1, stable = 0
        for _ in 0..<60 where stable < 4 {
            usleep(250_000)
            let n = s.openDescriptors
            stable = n == last ? stable + 1 : 0
            last = n
        }
        let (status, seconds) = try s.get(timeout: 5, token: s.token)
        #expect(status == 200, "the owner's request over the socket got \(status)")
        #expect(seconds < 3, "the owner's request took \(seconds) s")
        #expect(s.openDescriptors < 300, "the server holds \(s.openDescriptors) descriptors")
        // The TCP listener itself still works for a new client once the idle ones are dropped
        // (header timeout), and the descriptors come back.
        try? inp.fileHandleForWriting.close()
        holder.waitUntilExit()
        var tcp = 0
        for _ in 0..<40 where tcp != 200 {
            tcp = try s.get(tcp: true, timeout: 2, token: s.token).0
            if tcp != 200 { usleep(250_000) }
        }
        #expect(tcp == 200)
        #expect(s.openDescriptors < 100)
    }

    /// A client that sends its request head a byte at a time is disconnected after the header
    /// timeout, on both listeners.
    @Test(.timeLimit(.minutes(1))) func aSlowClientIsDisconnectedAfterTheHeaderTimeout() throws {
        let s = try Server(["--header-timeout", "1"])
        defer { s.stop() }
        for addr in ["tcp:127.0.0.1:\(s.port)", "unix:\(s.socket)"] {
            let r = try s.client(["trickle", addr, "0.1"])
            let parts = r.stdout.split(separator: " ")
            let seconds = Double(parts.first ?? "") ?? -1
            #expect(parts.last?.hasPrefix("closed") == true, "\(addr): \(r.stdout) \(r.stderr)")
            #expect(seconds >= 0.9 && seconds < 4, "\(addr): closed after \(seconds) s")
        }
        #expect(try s.get(token: s.token).0 == 200)
    }

    /// A kept-alive connection is closed after the idle timeout, whether it sends nothing more or the
    /// next request's head a byte at a time.
    @Test(.timeLimit(.minutes(1))) func anIdleOrSlowKeptAliveConnectionIsClosedAfterTheIdleTimeout() throws {
        let s = try Server(["--idle-timeout", "1"])
        defer { s.stop() }
        for addr in ["tcp:127.0.0.1:\(s.port)", "unix:\(s.socket)"] {
            for delay in ["-1", "0.1"] {
                let r = try s.client(["keepalive", addr, delay])
                let seconds = Double(r.stdout.split(separator: " ").first ?? "") ?? -1
                #expect(r.stdout.contains("HTTP/1.1 401"), "\(addr) \(delay): \(r.stdout) \(r.stderr)")
                #expect(seconds >= 0.8 && seconds < 4, "\(addr) \(delay): closed after \(seconds) s")
            }
        }
    }

    /// A client that stops reading a response is cut off after the send timeout (the response is not
    /// held, nor its decryption left waiting, for ever); the server goes on serving.
    @Test(.timeLimit(.minutes(2))) func aClientThatStopsReadingIsCutOffAfterTheSendTimeout() throws {
        let s = try Server(["--send-timeout", "1"])
        defer { s.stop() }
        let big = s.dir.sub("big.dcm")
        let gen = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", big, "--mib", "32"])
        #expect(gen.status == 0)
        let meta = try #require(gen.stdout.split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }.first)
        #expect(try run(medvaultBinary, ["import", big], environment: s.env).status == 0)
        let path = "/dicom-web/studies/\(meta["study_uid"]!)/series/\(meta["series_uid"]!)/instances/\(meta["sop_uid"]!)"
        let size = 32 << 20
        // A client that keeps reading gets everything…
        let full = try s.client(["stall", "unix:\(s.socket)", s.token, path, "0"])
        #expect((Int(full.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > size, "\(full.stdout) \(full.stderr)")
        // …one that pauses for longer than the send timeout does not.
        for addr in ["tcp:127.0.0.1:\(s.port)", "unix:\(s.socket)"] {
            let r = try s.client(["stall", addr, s.token, path, "4"])
            let got = Int(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            #expect(got >= 0 && got < size, "\(addr): \(r.stdout) \(r.stderr)")
        }
        #expect(try s.get(token: s.token).0 == 200)
    }

    /// A 1 MB URL gets 414 and a 1 MB header 431, then the connection is closed; repeated, the server's
    /// memory and descriptors stay where they were. A request body is refused (413); normal requests
    /// still work.
    @Test(.timeLimit(.minutes(2))) func oversizedRequestsAreRefusedAndClosed() throws {
        let s = try Server()
        defer { s.stop() }
        let mb = String(repeating: "a", count: 1 << 20)
        let url = s.dir.sub("url"), header = s.dir.sub("header"), body = s.dir.sub("body")
        try Data("GET /dicom-web/studies?PatientName=\(mb) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8).write(to: URL(fileURLWithPath: url))
        try Data("GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nX-Big: \(mb)\r\n\r\n".utf8).write(to: URL(fileURLWithPath: header))
        try Data("GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello".utf8).write(to: URL(fileURLWithPath: body))
        _ = try s.get(token: s.token)
        let memoryBefore = s.procStatus("VmHWM"), descriptorsBefore = s.openDescriptors
        for round in 0..<10 {
            for addr in ["tcp:127.0.0.1:\(s.port)", "unix:\(s.socket)"] {
                let u = try s.client(["send", addr, url]).stdout
                #expect(u.hasPrefix("HTTP/1.1 414") && u.contains("| eof"), "round \(round) \(addr): \(u)")
                let h = try s.client(["send", addr, header]).stdout
                #expect(h.hasPrefix("HTTP/1.1 431") && h.contains("| eof"), "round \(round) \(addr): \(h)")
                if round == 0 {
                    let b = try s.client(["send", addr, body]).stdout
                    #expect(b.hasPrefix("HTTP/1.1 413") && b.contains("| eof"), "\(addr): \(b)")
                }
            }
        }
        #expect(s.procStatus("VmHWM") - memoryBefore < 16 * 1024, "peak memory grew by \(s.procStatus("VmHWM") - memoryBefore) kB")
        usleep(300_000)
        #expect(s.openDescriptors <= descriptorsBefore + 2, "\(descriptorsBefore) → \(s.openDescriptors) descriptors")
        #expect(try s.get(token: s.token).0 == 200)
        #expect(try s.get(tcp: true, token: s.token).0 == 200)
    }

    /// STOW-RS is the one request with a body. The guard passes over a chunked or a Content-Length body
    /// and goes on bounding the next request's head on the same connection; a body anywhere else is 413.
    @Test(.timeLimit(.minutes(2))) func theGuardLetsOnlySTOWBodiesThroughAndResumesAfterThem() throws {
        let s = try Server()
        defer { s.stop() }
        let part = "--b1\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--b1--\r\n"
        let head = "POST /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(s.token)\r\n"
            + "Content-Type: multipart/related; type=\"application/dicom\"; boundary=b1\r\n"
        let next = "GET /dicom-web/studies HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(s.token)\r\nConnection: close\r\n\r\n"
        let chunked = head + "Transfer-Encoding: chunked\r\n\r\n" + String(part.utf8.count - 10, radix: 16) + ";ext=1\r\n"
            + String(decoding: part.utf8.dropLast(10), as: UTF8.self) + "\r\na\r\n" + String(decoding: part.utf8.suffix(10), as: UTF8.self)
            + "\r\n0\r\nX-Trailer: t\r\n\r\n" + next  // (bytes, not Characters: "\r\n" is one Character)
        let sized = head + "Content-Length: \(part.utf8.count)\r\n\r\n" + part + next
        let elsewhere = "POST /dicom-web/studies/1.2.3/series HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello"
        for (name, request, expected) in [
            ("chunked", chunked, "HTTP/1.1 409 Conflict ; HTTP/1.1 200 OK"), ("sized", sized, "HTTP/1.1 409 Conflict ; HTTP/1.1 200 OK"),
            ("elsewhere", elsewhere, "HTTP/1.1 413 Content Too Large"),
        ] {
            let file = s.dir.sub(name)
            try Data(request.utf8).write(to: URL(fileURLWithPath: file))
            for addr in ["tcp:127.0.0.1:\(s.port)", "unix:\(s.socket)"] {
                let out = try s.client(["statuses", addr, file]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(out == expected, "\(name) \(addr): \(out)")
            }
        }
    }

    /// `serve --help` describes the --http listener and the limits (it used to say there was no TCP listener).
    @Test func serveHelpDescribesTheLoopbackListenerAndLimits() throws {
        let r = try run(medvaultBinary, ["serve", "--help"])
        #expect(!r.stdout.contains("There is no TCP listener"))
        for needle in ["--http", "loopback", "--header-timeout", "--idle-timeout", "--max-http-connections", "--max-url-bytes"] {
            #expect(r.stdout.contains(needle), "\(needle) missing from serve --help")
        }
    }
}
