import VaultAudit
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultDICOM
import VaultServer
import VaultStore

/// One file of `tools/gen-dicom.py pixels` (pixels.json).
struct PixelEntry: Decodable, Sendable {
    let path: String
    let raw: String
    let transfer_syntax: String
    let frames: Int
    let lossy: Bool
    let encapsulated: Bool
    let reason: String?
}

/// The frames, bulk data, rendered and thumbnail routes on a real vault holding the pixel corpus
/// (native, JPEG, JPEG-LS, RLE, JPEG 2000), over a live loopback connection: the answers are compared
/// with the original files, read independently of the server.
@Suite struct PixelRouteTests {
    final class Served: Sendable {
        let dir = TempDir("medvault-pixel-routes")
        let root: String
        /// The imported copies (SOP Instance UIDs made unique).
        let input: String
        let files: [PixelEntry]
        let vault: Vault
        let server: VaultAPIServer
        let rad: String
        let backup: String
        /// file path → (study, series, instance)
        let uids: [String: (String, String, String)]

        init() throws {
            root = dir.sub("pixels")
            let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "pixels", root])
            #expect(r.status == 0, "\(r.stderr)")
            struct Manifest: Decodable { let files: [PixelEntry] }
            let manifest = try JSONDecoder().decode(Manifest.self, from: Data(readBytes(root + "/pixels.json")))
            // The compressed files keep their source's SOP Instance UID: give each copy a UID of its own
            // (same length, so every element length stays right) and import the copies.
            input = dir.sub("input")
            files = manifest.files.filter { $0.reason == nil }
            var uids: [String: (String, String, String)] = [:]
            for (i, f) in files.enumerated() {
                let h = try DICOMParser.parse(path: root + "/" + f.path)
                let sop = h.sopInstanceUID ?? ""
                let unique = Self.renumber(sop, i)
                let bytes = Self.replace(sop, with: unique, in: readBytes(root + "/" + f.path))
                try FileManager.default.createDirectory(atPath: ((input + "/" + f.path) as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try writeBytes(input + "/" + f.path, bytes)
                uids[f.path] = (h.studyInstanceUID ?? "", h.seriesInstanceUID ?? "", unique)
            }
            self.uids = uids
            vault = try makeVault(dir).vault
            let summary = try vault.importFiles([input])
            #expect(summary.count("imported") == files.count)
            try vault.addUser("rad", role: .radiologist)
            try vault.addUser("bk", role: .backup)
            rad = try vault.issueToken(for: "rad", lifetime: 3600).token
            backup = try vault.issueToken(for: "bk", lifetime: 3600).token
            server = VaultAPIServer(vault: vault, socketPath: dir.sub("unused.sock"))
        }

        deinit { dir.remove() }

        var app: Application<RouterResponder<VaultRequestContext>> {
            server.makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 8)
        }

        /// The bytes imported (the copy), or the generator's raw pixels.
        func bytes(_ path: String) -> [UInt8] { readBytes((path.hasSuffix(".raw") ? root : input) + "/" + path) }

        /// The UID with its longest component replaced by another number of the same length.
        static func renumber(_ uid: String, _ i: Int) -> String {
            var parts = uid.split(separator: ".").map(String.init)
            guard let longest = parts.indices.max(by: { parts[$0].count < parts[$1].count }), parts[longest].count >= 4 else { return uid }
            let n = parts[longest].count
            parts[longest] = String(Int(pow(10, Double(n - 1))) + 1000 + i)
            return parts.joined(separator: ".")
        }

        /// Every whole occurrence of `uid` (not followed by another digit or dot) replaced.
        static func replace(_ uid: String, with new: String, in bytes: [UInt8]) -> [UInt8] {
            let old = Array(uid.utf8), repl = Array(new.utf8)
            precondition(old.count == repl.count)
            var out = bytes
            var i = 0
            while i + old.count <= out.count {
                if out[i..<(i + old.count)].elementsEqual(old), i + old.count == out.count || !(out[i + old.count] == 0x2E || (0x30...0x39).contains(out[i + old.count])) {
                    out.replaceSubrange(i..<(i + old.count), with: repl)
                    i += old.count
                } else {
                    i += 1
                }
            }
            return out
        }

        func instancePath(_ path: String) throws -> String {
            let (st, se, i) = try #require(uids[path])
            return "/dicom-web/studies/\(st)/series/\(se)/instances/\(i)"
        }

        func requests(_ path: String) -> [AuditEvent] {
            vault.readAudit().records.map(\.event).filter { $0.action == .request(method: "GET", path: path) }
        }

        func headers(_ accept: String? = nil) -> HTTPFields {
            var h: HTTPFields = [.authorization: "Bearer \(rad)"]
            if let accept { h[.accept] = accept }
            return h
        }
    }

    static let asStored = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*"
    static let asStoredUnquoted = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    static let explicitLE = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.1"

    static func text(_ response: TestResponse) -> String { String(decoding: response.body.readableBytesView, as: UTF8.self) }

    /// Every frame of every file, as stored: the bytes the pixel layer finds in the original file.
    @Test func everyFrameAsStoredIsTheOriginalFramesBytes() async throws {
        let s = try Served()
        try await s.app.test(.live) { client in
            for f in s.files {
                let file = s.bytes(f.path)
                let layout = try DICOMPixelLayout.read(file)
                let list = (1...f.frames).map(String.init).joined(separator: ",")
                for accept in [Self.asStored, Self.asStoredUnquoted] {
                    try await client.execute(uri: try s.instancePath(f.path) + "/frames/\(list)", method: .get, headers: s.headers(accept)) { response in
                        #expect(response.status == .ok, "\(f.path): \(Self.text(response))")
                        let parts = try Multipart.parts(response)
                        #expect(parts.count == f.frames, "\(f.path)")
                        for (k, part) in parts.enumerated() {
                            let expected = try layout.storedFrame(k, in: file)
                            #expect(part.body == expected, "\(f.path) frame \(k + 1)")
                            #expect(part.contentType == "application/octet-stream; transfer-syntax=\(f.transfer_syntax)", "\(f.path)")
                        }
                    }
                }
            }
        }
    }

    /// Explicit VR Little Endian asked for: lossless files give back exactly the generated pixels;
    /// lossy ones what DCMTK decodes; JPEG 2000 (not decodable here) is 406 with a JSON body.
    @Test func framesDecodedToExplicitLittleEndianOr406() async throws {
        let s = try Served()
        try await s.app.test(.live) { client in
            for f in s.files {
                let file = s.bytes(f.path)
                let layout = try DICOMPixelLayout.read(file)
                let raw = s.bytes(f.raw)
                // Out of order, with a repeat: answered in the order asked.
                let order = f.frames >= 3 ? [3, 1, 3] : [1]
                let path = try s.instancePath(f.path) + "/frames/" + order.map(String.init).joined(separator: ",")
                try await client.execute(uri: path, method: .get, headers: s.headers(Self.explicitLE)) { response in
                    if f.transfer_syntax.hasPrefix("1.2.840.10008.1.2.4.9") {
                        #expect(response.status == .notAcceptable, "\(f.path)")
                        #expect(response.headers[.contentType] == "application/json")
                        #expect(Self.text(response).contains("cannot be decoded"))
                        return
                    }
                    #expect(response.status == .ok, "\(f.path): \(Self.text(response))")
                    let parts = try Multipart.parts(response)
                    #expect(parts.count == order.count)
                    for (part, n) in zip(parts, order) {
                        #expect(part.contentType == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")
                        let expected = f.lossy || f.path.contains("rgb") && f.encapsulated
                            ? try DICOMPixels.decodeFrame(try layout.storedFrame(n - 1, in: file), layout: layout).bytes
                            : Array(raw[((n - 1) * layout.frameSize)..<(n * layout.frameSize)])
                        #expect(part.body == expected, "\(f.path) frame \(n)")
                    }
                }
            }
        }
    }

    @Test func singleFrameMediaTypesForCompressedData() async throws {
        let s = try Served()
        let jpeg = "jpeg/baseline-mono8-3-frames.dcm", jls = "jpeg-ls/lossless-mono16-5-frames.dcm"
        try await s.app.test(.live) { client in
            for (path, type) in [(jpeg, "image/jpeg"), (jls, "image/jls"), ("rle/rgb-3-frames.dcm", "image/dicom-rle")] {
                let file = s.bytes(path)
                let layout = try DICOMPixelLayout.read(file)
                try await client.execute(uri: try s.instancePath(path) + "/frames/2", method: .get, headers: s.headers(type)) { response in
                    #expect(response.status == .ok, "\(path): \(Self.text(response))")
                    #expect(response.headers[.contentType] == type)
                    let expected = try layout.storedFrame(1, in: file)
                    #expect(Array(response.body.readableBytesView) == expected)
                }
                // The same type in multipart.
                try await client.execute(uri: try s.instancePath(path) + "/frames/1,2", method: .get, headers: s.headers("multipart/related; type=\"\(type)\"")) { response in
                    #expect(response.status == .ok)
                    let types = try Multipart.parts(response).map(\.contentType)
                    #expect(types == [type, type])
                }
            }
            // A JPEG type for native or JPEG-LS data, or a syntax that is not the stored one: 406.
            for (path, accept) in [
                ("native/mono16-5-frames.dcm", "image/jpeg"), (jls, "image/jpeg"),
                (jpeg, "multipart/related; type=\"application/octet-stream\"; transfer-syntax=1.2.840.10008.1.2.4.80"),
                (jpeg, "image/jpeg, text/html"),
            ] where !(path == jpeg && accept.hasPrefix("image/jpeg")) {
                try await client.execute(uri: try s.instancePath(path) + "/frames/1", method: .get, headers: s.headers(accept)) { response in
                    #expect(response.status == .notAcceptable, "\(path) \(accept)")
                    #expect(response.headers[.contentType] == "application/json")
                }
            }
            // Several frames cannot be one single-part image.
            try await client.execute(uri: try s.instancePath(jpeg) + "/frames/1,2", method: .get, headers: s.headers("image/jpeg")) { response in
                #expect(response.status == .notAcceptable)
            }
        }
    }

    @Test func badFrameListsAndFramesPastTheEnd() async throws {
        let s = try Served()
        let path = try s.instancePath("native/mono16-5-frames.dcm")
        try await s.app.test(.live) { client in
            for (list, status) in [("6", HTTPResponse.Status.notFound), ("1,99", .notFound), ("0", .badRequest), ("x", .badRequest), ("1,,2", .badRequest), ("-1", .badRequest)] {
                try await client.execute(uri: path + "/frames/" + list, method: .get, headers: s.headers(Self.asStored)) { response in
                    #expect(response.status == status, "\(list)")
                    #expect(response.headers[.contentType] == "application/json")
                    #expect(Self.text(response).hasPrefix(#"{"error":"#))
                }
            }
            try await client.execute(uri: path + "/frames/6", method: .get, headers: s.headers(Self.asStored)) { response in
                #expect(Self.text(response) == #"{"error":"frame 6 does not exist: the instance has 5 frame(s)"}"#)
            }
        }
    }

    /// Every new route: 403 for the backup role, 404 for unknown UIDs, and audited with what it disclosed.
    @Test func rolesNotFoundAndAudit() async throws {
        let s = try Served()
        let f = "native/mono16-5-frames.dcm"
        let base = try s.instancePath(f)
        let (study, series, _) = try #require(s.uids[f])
        let routes = [
            base + "/frames/1", base + "/bulkdata/7FE00010", base + "/rendered", base + "/thumbnail", base + "/frames/2/rendered",
            base + "/frames/2/thumbnail", "/dicom-web/studies/\(study)/series/\(series)/rendered", "/dicom-web/studies/\(study)/rendered",
            "/dicom-web/studies/\(study)/series/\(series)/thumbnail", "/dicom-web/studies/\(study)/thumbnail",
        ]
        try await s.app.test(.live) { client in
            for route in routes {
                try await client.execute(uri: route, method: .get, headers: [.authorization: "Bearer \(s.backup)"]) { response in
                    #expect(response.status == .forbidden, "\(route)")
                }
                try await client.execute(uri: route, method: .get, headers: [:]) { response in
                    #expect(response.status == .unauthorized, "\(route)")
                }
                try await client.execute(uri: route, method: .get, headers: s.headers()) { response in
                    #expect(response.status == .ok, "\(route): \(Self.text(response))")
                }
                let unknown = route.replacingOccurrences(of: study, with: "1.2.3.999")
                try await client.execute(uri: unknown, method: .get, headers: s.headers()) { response in
                    #expect(response.status == .notFound, "\(unknown)")
                    #expect(response.headers[.contentType] == "application/json")
                }
            }
            try await client.execute(uri: base + "/bulkdata/00100010", method: .get, headers: s.headers()) { response in
                #expect(response.status == .notFound)
            }
        }
        for route in routes {
            let records = s.requests(route)
            #expect(records.map(\.outcome) == [.denied, .denied, .ok], "\(route)")
            let ok = try #require(records.last)
            #expect(ok.actor == "rad" && ok.patientIDs == ["PIXELS-1"] && ok.studyUIDs == [study] && ok.instances == 1, "\(route)")
            #expect(ok.bytes > 0, "\(route)")
        }
        // A frame's record counts the frame's bytes.
        let frame = try #require(s.requests(base + "/frames/1").last)
        #expect(frame.bytes == Int64(24 * 32 * 2))
    }

    @Test func metadataCarriesABulkDataURIThatServesThePixelData() async throws {
        let s = try Served()
        let f = "native/mono16-5-frames.dcm"
        let file = s.bytes(f)
        let layout = try DICOMPixelLayout.read(file)
        let value = Array(file[Int(layout.valueOffset)..<Int(layout.valueOffset + (layout.valueLength ?? 0))])
        let (study, series, _) = try #require(s.uids[f])
        try await s.app.test(.live) { client in
            var uri = ""
            try await client.execute(uri: "/dicom-web/studies/\(study)/series/\(series)/metadata", method: .get, headers: s.headers()) { response in
                #expect(response.status == .ok)
                let objects = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
                #expect(objects.count == s.files.count)
                let uris = objects.compactMap { ($0["7FE00010"] as? [String: Any])?["BulkDataURI"] as? String }
                #expect(uris.count == s.files.count)
                uri = try #require(uris.first { $0.contains(try s.instancePath(f)) })
                #expect(uri.hasPrefix("http://localhost/dicom-web/studies/") && uri.hasSuffix("/bulkdata/7FE00010"))
                let pixel = try #require(objects.first { (($0["7FE00010"] as? [String: Any])?["BulkDataURI"] as? String) == uri }?["7FE00010"] as? [String: Any])
                #expect(pixel["vr"] as? String == "OW")
            }
            let path = String(uri[try #require(uri.range(of: "/dicom-web"))!.lowerBound...])
            // Default: multipart, one part with the value.
            try await client.execute(uri: path, method: .get, headers: s.headers()) { response in
                #expect(response.status == .ok)
                let parts = try Multipart.parts(response)
                #expect(parts.map(\.body) == [value])
                #expect(parts.first?.contentType == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1")
            }
            // Single part, whole and by range.
            try await client.execute(uri: path, method: .get, headers: s.headers("application/octet-stream")) { response in
                #expect(response.status == .ok)
                #expect(Array(response.body.readableBytesView) == value)
                #expect(response.headers[.acceptRanges] == "bytes")
            }
            var ranged = s.headers("application/octet-stream")
            for (range, expected, contentRange) in [
                ("bytes=100-1123", Array(value[100...1123]), "bytes 100-1123/\(value.count)"),
                ("bytes=\(value.count - 10)-", Array(value.suffix(10)), "bytes \(value.count - 10)-\(value.count - 1)/\(value.count)"),
                ("bytes=-7", Array(value.suffix(7)), "bytes \(value.count - 7)-\(value.count - 1)/\(value.count)"),
                ("bytes=0-999999999", value, "bytes 0-\(value.count - 1)/\(value.count)"),
            ] {
                ranged[.range] = range
                try await client.execute(uri: path, method: .get, headers: ranged) { response in
                    #expect(response.status == .partialContent, "\(range)")
                    #expect(response.headers[.contentRange] == contentRange, "\(range)")
                    #expect(Array(response.body.readableBytesView) == expected, "\(range)")
                }
            }
            ranged[.range] = "bytes=\(value.count)-"
            try await client.execute(uri: path, method: .get, headers: ranged) { response in
                #expect(response.status == .rangeNotSatisfiable)
                #expect(response.headers[.contentRange] == "bytes */\(value.count)")
                #expect(response.headers[.contentType] == "application/json")
            }
            // Encapsulated: one part per frame, as stored.
            let rle = "rle/mono16-5-frames-no-bot.dcm", rleFile = s.bytes(rle)
            let rleLayout = try DICOMPixelLayout.read(rleFile)
            try await client.execute(uri: try s.instancePath(rle) + "/bulkdata/7FE00010", method: .get, headers: s.headers()) { response in
                #expect(response.status == .ok)
                let bodies = try Multipart.parts(response).map(\.body)
                let expected = try (0..<5).map { try rleLayout.storedFrame($0, in: rleFile) }
                #expect(bodies == expected)
            }
            try await client.execute(uri: try s.instancePath(rle) + "/bulkdata/7FE00010", method: .get, headers: s.headers("text/html")) { response in
                #expect(response.status == .notAcceptable)
            }
        }
    }

    /// PNG's IHDR: width and height (independent of DCMTK).
    static func pngSize(_ b: [UInt8]) -> (Int, Int)? {
        guard b.count > 24, b.starts(with: [0x89, 0x50, 0x4E, 0x47]) else { return nil }
        func u32(_ i: Int) -> Int { Int(b[i]) << 24 | Int(b[i + 1]) << 16 | Int(b[i + 2]) << 8 | Int(b[i + 3]) }
        return (u32(16), u32(20))
    }

    @Test func renderedAndThumbnailsWithParameters() async throws {
        let s = try Served()
        let f = "native/mono16-5-frames.dcm"  // 32 x 24
        let base = try s.instancePath(f)
        let (study, series, _) = try #require(s.uids[f])
        try await s.app.test(.live) { client in
            try await client.execute(uri: base + "/rendered", method: .get, headers: s.headers()) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "image/jpeg")
                #expect(Array(response.body.readableBytesView.prefix(2)) == [0xFF, 0xD8])
            }
            for uri in [base + "/rendered?accept=image/png&viewport=64,64", base + "/frames/3/rendered?viewport=64,0&window=30000,20000,sigmoid"] {
                try await client.execute(uri: uri, method: .get, headers: s.headers("image/png")) { response in
                    #expect(response.status == .ok, "\(uri): \(Self.text(response))")
                    #expect(response.headers[.contentType] == "image/png")
                    let size = Self.pngSize(Array(response.body.readableBytesView))
                    #expect(size.map { [$0.0, $0.1] } == [64, 48], "\(uri)")
                }
            }
            // Window changes the pixels: a narrow window far above the data renders black.
            var plain: [UInt8] = [], dark: [UInt8] = []
            try await client.execute(uri: base + "/rendered?accept=image/png", method: .get, headers: s.headers()) { plain = Array($0.body.readableBytesView) }
            try await client.execute(uri: base + "/rendered?accept=image/png&window=70000,10,linear", method: .get, headers: s.headers()) { dark = Array($0.body.readableBytesView) }
            #expect(!plain.isEmpty && plain != dark)
            // Thumbnails fit in 128 x 128 by default.
            for uri in [base + "/thumbnail?accept=image/png", "/dicom-web/studies/\(study)/series/\(series)/thumbnail?accept=image/png"] {
                try await client.execute(uri: uri, method: .get, headers: s.headers()) { response in
                    #expect(response.status == .ok)
                    let size = try #require(Self.pngSize(Array(response.body.readableBytesView)))
                    #expect(max(size.0, size.1) == 128, "\(uri)")
                }
            }
            // Compressed and colour files render too; JPEG 2000 cannot be here.
            for file in s.files {
                try await client.execute(uri: try s.instancePath(file.path) + "/frames/1/rendered?quality=50", method: .get, headers: s.headers()) { response in
                    if file.transfer_syntax.hasPrefix("1.2.840.10008.1.2.4.9") {
                        #expect(response.status == .notAcceptable, "\(file.path)")
                    } else {
                        #expect(response.status == .ok, "\(file.path): \(Self.text(response))")
                    }
                }
            }
            // Bad parameters: 400 with a JSON body; a type that cannot be made: 406.
            for (query, status) in [
                ("window=1,0,linear", HTTPResponse.Status.badRequest), ("window=1,2,cubic", .badRequest), ("window=abc", .badRequest),
                ("viewport=10", .badRequest), ("viewport=1,2,3,4,5,6", .badRequest), ("viewport=0,0", .badRequest), ("viewport=99999,1", .badRequest),
                ("quality=0", .badRequest), ("quality=101", .badRequest), ("accept=image/gif", .notAcceptable),
            ] {
                try await client.execute(uri: base + "/rendered?" + query, method: .get, headers: s.headers()) { response in
                    #expect(response.status == status, "\(query)")
                    #expect(response.headers[.contentType] == "application/json", "\(query)")
                }
            }
            try await client.execute(uri: base + "/frames/9/rendered", method: .get, headers: s.headers()) { response in
                #expect(response.status == .notFound)
            }
            try await client.execute(uri: base + "/frames/1,2/rendered", method: .get, headers: s.headers()) { response in
                #expect(response.status == .badRequest)
            }
            try await client.execute(uri: base + "/rendered", method: .get, headers: s.headers("image/gif")) { response in
                #expect(response.status == .notAcceptable)
            }
        }
    }
}

/// The engine's reader: a native frame of a new (format-2) blob costs the chunks it lies in, not the
/// file before it (format 1's forward reading: VaultStoreTests' SeekableFramesTests).
@Suite struct InstanceFrameReaderTests {
    @Test func aNativeFrameDecryptsOnlyItsOwnChunks() throws {
        let dir = TempDir("medvault-frame-reader")
        defer { dir.remove() }
        let file = dir.sub("input/big.dcm")
        try FileManager.default.createDirectory(atPath: dir.sub("input"), withIntermediateDirectories: true)
        // 64 frames of 256 x 256 x 16 bit (128 KiB each), 8 MiB in all.
        let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "big-file", file, "--mib", "8", "--size", "256"])
        #expect(r.status == 0, "\(r.stderr)")
        let vault = try makeVault(dir).vault
        try vault.importFiles([dir.sub("input")])
        let h = try DICOMParser.parse(path: file)
        let item = try #require(try vault.instanceForRetrieval(study: h.studyInstanceUID ?? "", series: h.seriesInstanceUID ?? "", instance: h.sopInstanceUID ?? ""))
        let original = readBytes(file)
        let layout = try DICOMPixelLayout.read(original)
        #expect(layout.numberOfFrames == 64)
        for k in [0, 10, 63] {
            let frames = try vault.openFrames(item)
            defer { frames.close() }
            #expect(frames.readsByRange)
            #expect(try frames.storedFrame(k) == (try layout.storedFrame(k, in: original)))
            // The header's chunk, and the 2 or 3 chunks a 128 KiB frame lies in.
            #expect(frames.chunksDecrypted <= 4, "frame \(k + 1): \(frames.chunksDecrypted) chunks")
            #expect(frames.bytesDecrypted <= 4 * 65_536, "frame \(k + 1): \(frames.bytesDecrypted)")
        }
        // Any order costs the frames asked for, in one pass.
        let frames = try vault.openFrames(item)
        defer { frames.close() }
        for k in [2, 5, 40, 1] { #expect(try frames.storedFrame(k) == (try layout.storedFrame(k, in: original))) }
        #expect(frames.passes == 1)
        #expect(frames.chunksDecrypted <= 1 + 4 * 3)
    }
}
