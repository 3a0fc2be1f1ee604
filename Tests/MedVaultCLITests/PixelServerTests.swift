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
        let env = medvaultEnvironment(vault: dir.sub("vault"))
        func mv(_ a: [String]) throws -> ProcessResult { try run(medvaultBinary, a, environment: env) }
        #expect(try mv(["init", "--kdf", "interactive"]).status == 0)
        #expect(try mv(["import"] + files.map { root + "/" + $0.path }).status == 0)
        #expect(try mv(["user", "add", "rad", "--role", "radiologist"]).status == 0)
        let issued = try mv(["token", "issue", "rad", "--json"])
        let token = try #require((try JSONSerialization.jsonObject(with: Data(issued.stdout.utf8)) as? [String: Any])?["token"] as? String)
        let port = 20000 + Int(getpid() % 20000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: medvaultBinary)
        server.arguments = ["serve", "--http", "127.0.0.1:\(port)"]
        server.environment = env
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer {
            server.interrupt()
            server.waitUntilExit()
        }
        let socket = dir.sub("vault/run/medvault.sock")
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
        usleep(200_000)

        /// (status, headers, body) of a GET with curl.
        func get(_ path: String, _ headers: [String], tcp: Bool) throws -> (Int, String, [UInt8]) {
            let out = dir.sub("body"), head = dir.sub("head")
            var args = ["-s", "-o", out, "-D", head, "-w", "%{http_code}", "-H", "Authorization: Bearer \(token)"]
            for h in headers { args += ["-H", h] }
            args += tcp ? ["http://127.0.0.1:\(port)" + path] : ["--unix-socket", socket, "http://localhost" + path]
            let r = try run("/usr/bin/curl", args)
            return (Int(r.stdout) ?? -1, String(decoding: readBytes(head), as: UTF8.self), readBytes(out))
        }

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
}
