import Foundation
import Testing
import TestSupport

/// `medvault serve` with the pixel corpus imported, spoken to with curl over the Unix socket and the
/// loopback listener, as a viewer would: frames, bulk data with a range, rendered, thumbnails.
@Suite(.serialized) struct PixelServerTests {
    struct Entry: Decodable {
        let path: String
        let transfer_syntax: String
        let frames: Int
        let reason: String?
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    /// `medvault serve` on a new vault holding `files`, with a radiologist's token; stopped by `stop()`.
    final class LiveServer {
        let dir: TempDir
        let env: [String: String]
        let token: String
        let port: Int
        let socket: String
        private let server = Process()

        init(_ dir: TempDir, importing files: [String]) throws {
            self.dir = dir
            env = medvaultEnvironment(vault: dir.sub("vault"))
            #expect(try run(medvaultBinary, ["init", "--kdf", "interactive"], environment: env).status == 0)
            #expect(try run(medvaultBinary, ["import"] + files, environment: env).status == 0)
            #expect(try run(medvaultBinary, ["user", "add", "rad", "--role", "radiologist"], environment: env).status == 0)
            let issued = try run(medvaultBinary, ["token", "issue", "rad", "--json"], environment: env)
            token = try #require((try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])?["token"] as? String)
            port = 20000 + Int(getpid() % 20000)
            server.executableURL = URL(fileURLWithPath: medvaultBinary)
            server.arguments = ["serve", "--http", "127.0.0.1:\(port)"]
            server.environment = env
            server.standardError = FileHandle.nullDevice
            try server.run()
            socket = dir.sub("vault/run/medvault.sock")
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
            usleep(200_000)
        }

        var isRunning: Bool { server.isRunning }

        func stop() {
            server.interrupt()
            server.waitUntilExit()
        }

        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }

        /// (status, headers, body) of a GET with curl, over the Unix socket or the loopback port.
        func get(_ path: String, _ headers: [String], tcp: Bool) throws -> (Int, String, [UInt8]) {
            let out = dir.sub("body"), head = dir.sub("head")
            var args = ["-s", "-o", out, "-D", head, "-w", "%{http_code}", "-H", "Authorization: Bearer \(token)"]
            for h in headers { args += ["-H", h] }
            args += tcp ? ["http://127.0.0.1:\(port)" + path] : ["--unix-socket", socket, "http://localhost" + path]
            let r = try run("/usr/bin/curl", args)
            return (Int(r.stdout) ?? -1, String(decoding: readBytes(head), as: UTF8.self), readBytes(out))
        }
    }

    @Test func framesBulkDataAndRenderedOnTheSocketAndTheLoopbackPort() throws {
        let dir = TempDir("medvault-pixel-serve")
        defer { dir.remove() }
        let root = dir.sub("pixels")
        #expect(try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "pixels", root]).status == 0)
        struct Manifest: Decodable { let files: [Entry] }
        // Files whose SOP Instance UIDs differ (DCMTK's encoders keep their source's).
        let chosen: Set = ["native/mono16-5-frames.dcm", "jpeg/baseline-mono8-3-frames.dcm", "rle/mono16-5-frames-eot.dcm", "jpeg-ls/near-lossless-mono16-5-frames.dcm"]
        let files = try JSONDecoder().decode(Manifest.self, from: Data(readBytes(root + "/pixels.json"))).files.filter { chosen.contains($0.path) }
        #expect(files.count == chosen.count)
        let server = try LiveServer(dir, importing: files.map { root + "/" + $0.path })
        defer { server.stop() }
        func get(_ path: String, _ headers: [String], tcp: Bool) throws -> (Int, String, [UInt8]) { try server.get(path, headers, tcp: tcp) }
        func mv(_ a: [String]) throws -> ProcessResult { try server.mv(a) }

        let native = try #require(files.first { $0.path == "native/mono16-5-frames.dcm" })
        let jpeg = try #require(files.first { $0.path == "jpeg/baseline-mono8-3-frames.dcm" })
        func base(_ f: Entry) throws -> String {
            let h = try run("/usr/bin/env", ["python3", "-c", "import sys,pydicom; d=pydicom.dcmread(sys.argv[1],stop_before_pixels=True); print(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID)", root + "/" + f.path])
            let u = h.stdout.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            return "/dicom-web/studies/\(u[0])/series/\(u[1])/instances/\(u[2])"
        }
        let nativeFile = readBytes(root + "/" + native.path)
        let frameSize = 24 * 32 * 2
        for tcp in [false, true] {
            // Frame 5 of the native file: the last frameSize bytes of its pixel data, which ends the file.
            let (status, headers, body) = try get(try base(native) + "/frames/5", ["Accept: multipart/related; type=application/octet-stream; transfer-syntax=*"], tcp: tcp)
            #expect(status == 200 && headers.lowercased().contains("content-type: multipart/related"), "tcp \(tcp)")
            let frame = Array(nativeFile.suffix(frameSize))
            #expect(Self.contains(body, frame), "tcp \(tcp)")
            #expect(body.count < frameSize + 400)
            // A JPEG frame as image/jpeg.
            let (js, jh, jb) = try get(try base(jpeg) + "/frames/2", ["Accept: image/jpeg"], tcp: tcp)
            #expect(js == 200 && jh.lowercased().contains("content-type: image/jpeg") && jb.starts(with: [0xFF, 0xD8]))
            // Past the end, and a syntax that cannot be made.
            let (ps, _, pb) = try get(try base(native) + "/frames/6", [], tcp: tcp)
            #expect(ps == 404 && String(decoding: pb, as: UTF8.self).contains("the instance has 5 frame(s)"))
            let (ns, _, _) = try get(try base(native) + "/frames/1", ["Accept: image/jpeg"], tcp: tcp)
            #expect(ns == 406)
            // Bulk data by range: the first frame's first 100 bytes.
            let (bs, bh, bb) = try get(try base(native) + "/bulkdata/7FE00010", ["Accept: application/octet-stream", "Range: bytes=0-99"], tcp: tcp)
            #expect(bs == 206 && bh.contains("bytes 0-99/\(5 * frameSize)"))
            #expect(bb == Array(nativeFile.suffix(5 * frameSize).prefix(100)))
            // Rendered and thumbnail.
            let (rs, rh, rb) = try get(try base(native) + "/frames/2/rendered?accept=image/png", [], tcp: tcp)
            #expect(rs == 200 && rh.lowercased().contains("content-type: image/png") && rb.starts(with: [0x89, 0x50, 0x4E, 0x47]))
            let study = try base(native).components(separatedBy: "/series/")[0]
            let (ts, th, tb) = try get(study + "/thumbnail", [], tcp: tcp)
            #expect(ts == 200 && th.lowercased().contains("content-type: image/jpeg") && tb.starts(with: [0xFF, 0xD8]))
        }
        #expect(server.isRunning)
        let log = try mv(["audit", "show", "--json"])
        let records = try #require(try JSONSerialization.jsonObject(with: Data(log.stdout.utf8)) as? [[String: Any]])
        let frames = records.filter { ($0["action"] as? String)?.hasSuffix("/frames/5") == true }
        #expect(frames.count == 2 && frames.allSatisfy { ($0["bytes"] as? Int) == frameSize && ($0["instances"] as? Int) == 1 })
    }

    /// The nested bulk data of an Explicit VR Big Endian instance, as a viewer reaches it: the
    /// BulkDataURIs of `/metadata`, fetched as they are given (absolute, with the request's host), on
    /// the socket and the loopback port; the values come back little endian.
    @Test func nestedBulkDataURIsServeTheirValuesOnTheSocketAndTheLoopbackPort() throws {
        let dir = TempDir("medvault-bulk-serve")
        defer { dir.remove() }
        let root = dir.sub("bulk")
        #expect(try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "bulk-elements", root]).status == 0)
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(readBytes(root + "/bulk.json"))) as? [String: Any])
        let file = try #require((manifest["files"] as? [[String: String]])?.first { $0["path"] == "explicit-be.dcm" })
        let elements = try #require(manifest["elements"] as? [[String: Any]]).filter { $0["bulk"] as? Bool == true }
        #expect(elements.count == 4)
        let server = try LiveServer(dir, importing: [root + "/explicit-be.dcm"])
        defer { server.stop() }
        let instance = "/dicom-web/studies/\(file["study_uid"] ?? "")/series/\(file["series_uid"] ?? "")/instances/\(file["sop_uid"] ?? "")"
        for tcp in [false, true] {
            let (status, _, body) = try server.get(instance + "/metadata", [], tcp: tcp)
            #expect(status == 200)
            let text = String(decoding: body, as: UTF8.self)
            let host = tcp ? "http://127.0.0.1:\(server.port)" : "http://localhost"
            for e in elements {
                let path = try #require(e["path"] as? String), hex = try #require(e["value"] as? String)
                let uri = host + instance + "/bulkdata/" + path
                #expect(text.contains("\"BulkDataURI\":\"\(uri)\""), "tcp \(tcp): \(path)")
                let (vs, vh, value) = try server.get(String(uri.dropFirst(host.count)), ["Accept: application/octet-stream"], tcp: tcp)
                #expect(vs == 200 && vh.lowercased().contains("content-type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"))
                #expect(value.map { String(format: "%02x", $0) }.joined() == hex, "tcp \(tcp): \(path)")
            }
            let (rs, rh, rb) = try server.get(instance + "/bulkdata/00880200/0/7FE00010", ["Accept: application/octet-stream", "Range: bytes=0-99"], tcp: tcp)
            #expect(rs == 206 && rh.contains("bytes 0-99/4096") && rb.count == 100)
            let (ns, _, nb) = try server.get(instance + "/bulkdata/00880200/1/7FE00010", [], tcp: tcp)
            #expect(ns == 404 && String(decoding: nb, as: UTF8.self).contains("has 1 item(s)"))
        }
        #expect(server.isRunning)
    }
}
