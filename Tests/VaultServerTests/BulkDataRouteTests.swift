import VaultAudit
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultServer
import VaultStore

/// `tools/gen-dicom.py bulk-elements` (bulk.json): one instance with an icon image, overlays, private
/// OB values and nested OF point coordinates, in Explicit VR Little Endian, Implicit VR Little Endian
/// and Explicit VR Big Endian. Values are given little endian, as the server must send them.
struct BulkManifest: Decodable, Sendable {
    struct File: Decodable, Sendable {
        let path: String
        let transfer_syntax: String
        let study_uid: String
        let series_uid: String
        let sop_uid: String
    }
    struct Element: Decodable, Sendable {
        let path: String
        let vr: String
        let value: String
        let bulk: Bool

        var bytes: [UInt8] {
            var out: [UInt8] = []
            var i = value.startIndex
            while i < value.endIndex, let j = value.index(i, offsetBy: 2, limitedBy: value.endIndex) {
                out.append(UInt8(value[i..<j], radix: 16) ?? 0)
                i = j
            }
            return out
        }
    }
    let files: [File]
    let elements: [Element]

    static func generate(into dir: String) throws -> BulkManifest {
        let r = try run("/usr/bin/env", ["python3", packageRoot + "/tools/gen-dicom.py", "bulk-elements", dir])
        #expect(r.status == 0, "\(r.stderr)")
        return try JSONDecoder().decode(BulkManifest.self, from: Data(readBytes(dir + "/bulk.json")))
    }
}

/// `/metadata`'s BulkDataURIs for binary values besides Pixel Data, and the bulk data route serving
/// them, over a live loopback connection on a real vault.
@Suite struct BulkDataRouteTests {
    final class Served: Sendable {
        let dir = TempDir("medvault-bulk-routes")
        let manifest: BulkManifest
        let vault: Vault
        let server: VaultAPIServer
        let rad: String
        let backup: String

        init() throws {
            let root = dir.sub("bulk")
            manifest = try BulkManifest.generate(into: root)
            vault = try makeVault(dir).vault
            let paths = manifest.files.map { root + "/" + $0.path }
            #expect(try vault.importFiles(paths).count("imported") == 3)
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

        func instancePath(_ f: BulkManifest.File) -> String {
            "/dicom-web/studies/\(f.study_uid)/series/\(f.series_uid)/instances/\(f.sop_uid)"
        }

        func headers(_ accept: String? = nil, range: String? = nil) -> HTTPFields {
            var h: HTTPFields = [.authorization: "Bearer \(rad)"]
            if let accept { h[.accept] = accept }
            if let range { h[.range] = range }
            return h
        }

        func requests(_ path: String) -> [AuditEvent] {
            vault.readAudit().records.map(\.event).filter { $0.action == .request(method: "GET", path: path) }
        }
    }

    static let explicitLE = "1.2.840.10008.1.2.1"

    static func text(_ response: TestResponse) -> String { String(decoding: response.body.readableBytesView, as: UTF8.self) }

    /// The attribute at a bulk data path (`tag/item/tag…`) in one `/metadata` object.
    static func attribute(_ object: [String: Any], _ path: String) -> [String: Any]? {
        let steps = path.split(separator: "/").map(String.init)
        var item = object
        var i = 0
        while i + 1 < steps.count {
            guard let sequence = item[steps[i]] as? [String: Any], let items = sequence["Value"] as? [[String: Any]],
                let index = Int(steps[i + 1]), index < items.count
            else { return nil }
            item = items[index]
            i += 2
        }
        return item[steps[i]] as? [String: Any]
    }

    /// Binary values over 1 KiB, at any depth, are BulkDataURIs naming their path; smaller ones stay
    /// inline (little endian, also for the big endian file); Pixel Data keeps its URI.
    @Test func metadataNamesLargeBinaryValuesByURIAndKeepsSmallOnesInline() async throws {
        let s = try Served()
        try await s.app.test(.live) { client in
            for f in s.manifest.files {
                try await client.execute(uri: s.instancePath(f) + "/metadata", method: .get, headers: s.headers()) { response in
                    #expect(response.status == .ok)
                    let objects = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
                    let object = try #require(objects.first)
                    let base = "http://localhost" + s.instancePath(f) + "/bulkdata/"
                    #expect((object["7FE00010"] as? [String: Any])?["BulkDataURI"] as? String == base + "7FE00010", "\(f.path)")
                    for e in s.manifest.elements {
                        let a = try #require(Self.attribute(object, e.path), "\(f.path) \(e.path)")
                        if f.transfer_syntax != "1.2.840.10008.1.2" { #expect(a["vr"] as? String == e.vr, "\(f.path) \(e.path)") }
                        if e.bulk {
                            #expect(a["BulkDataURI"] as? String == base + e.path, "\(f.path) \(e.path)")
                            #expect(a["InlineBinary"] == nil)
                        } else {
                            let inline = try #require(a["InlineBinary"] as? String, "\(f.path) \(e.path)")
                            #expect(Data(base64Encoded: inline).map(Array.init) == e.bytes, "\(f.path) \(e.path)")
                            #expect(a["BulkDataURI"] == nil)
                        }
                    }
                }
            }
        }
    }

    /// Every binary element's path (the URIs, and the inline ones too) serves its value, little
    /// endian: OW and OF of the big endian file come back swapped. Multipart by default, one part;
    /// single part on request.
    @Test func everyPathServesTheValueLittleEndianInOneOrMultipleParts() async throws {
        let s = try Served()
        try await s.app.test(.live) { client in
            for f in s.manifest.files {
                for e in s.manifest.elements {
                    let uri = s.instancePath(f) + "/bulkdata/" + e.path
                    for accept in [nil, "multipart/related; type=\"application/octet-stream\"", "multipart/related; type=application/octet-stream; transfer-syntax=*"] {
                        try await client.execute(uri: uri, method: .get, headers: s.headers(accept)) { response in
                            #expect(response.status == .ok, "\(f.path) \(e.path): \(Self.text(response))")
                            let parts = try Multipart.parts(response)
                            #expect(parts.map(\.body) == [e.bytes], "\(f.path) \(e.path)")
                            #expect(parts.first?.contentType == "application/octet-stream; transfer-syntax=\(Self.explicitLE)")
                        }
                    }
                    try await client.execute(uri: uri, method: .get, headers: s.headers("application/octet-stream")) { response in
                        #expect(response.status == .ok)
                        #expect(Array(response.body.readableBytesView) == e.bytes, "\(f.path) \(e.path)")
                        #expect(response.headers[.contentType] == "application/octet-stream; transfer-syntax=\(Self.explicitLE)")
                        #expect(response.headers[.acceptRanges] == "bytes")
                    }
                }
            }
        }
    }

    @Test func rangesAreServedAnd416OutsideTheValue() async throws {
        let s = try Served()
        let f = try #require(s.manifest.files.first { $0.path == "explicit-be.dcm" })
        let e = try #require(s.manifest.elements.first { $0.path == "60003000" })
        let value = e.bytes
        let uri = s.instancePath(f) + "/bulkdata/" + e.path
        try await s.app.test(.live) { client in
            for (range, expected, contentRange) in [
                ("bytes=100-1123", Array(value[100...1123]), "bytes 100-1123/\(value.count)"),
                ("bytes=\(value.count - 10)-", Array(value.suffix(10)), "bytes \(value.count - 10)-\(value.count - 1)/\(value.count)"),
                ("bytes=-7", Array(value.suffix(7)), "bytes \(value.count - 7)-\(value.count - 1)/\(value.count)"),
                ("bytes=1-1", [value[1]], "bytes 1-1/\(value.count)"),
            ] {
                try await client.execute(uri: uri, method: .get, headers: s.headers("application/octet-stream", range: range)) { response in
                    #expect(response.status == .partialContent, "\(range)")
                    #expect(response.headers[.contentRange] == contentRange, "\(range)")
                    #expect(Array(response.body.readableBytesView) == expected, "\(range)")
                }
            }
            for range in ["bytes=\(value.count)-", "bytes=-0"] {
                try await client.execute(uri: uri, method: .get, headers: s.headers("application/octet-stream", range: range)) { response in
                    #expect(response.status == .rangeNotSatisfiable, "\(range)")
                    #expect(response.headers[.contentRange] == "bytes */\(value.count)")
                    #expect(response.headers[.contentType] == "application/json")
                }
            }
        }
        // The audit record counts the bytes sent.
        let records = s.requests(uri)
        let sent = records.filter { $0.outcome == .ok }
        #expect(records.count == 6 && sent.count == 4)
        #expect(sent.allSatisfy { $0.instances == 1 && $0.patientIDs == ["BULK-1"] && $0.studyUIDs == [f.study_uid] })
        #expect(sent.map(\.bytes) == [1024, 10, 7, 1])
    }

    /// A path with nothing binary there is 404 with a JSON body; other media types 406; the backup role
    /// 403; no token 401.
    @Test func unknownPathsNotBinaryValuesAndRefusals() async throws {
        let s = try Served()
        let f = try #require(s.manifest.files.first)
        let base = s.instancePath(f) + "/bulkdata/"
        try await s.app.test(.live) { client in
            for (path, reason) in [
                ("99990010", "no element 99990010"), ("00100010", "not a binary value"), ("00880200", "not a binary value"),
                ("00880200/1/7FE00010", "has 1 item(s)"), ("00880200/0/60003000", "no element 60003000 in that item"),
                ("60003000/0/00100010", "is not a sequence"), ("0088020/0", "a path is a tag"), ("00880200/x/7FE00010", "a path is a tag"),
                ("00880200/0", "a path is a tag"), ("6000300G", "a path is a tag"),
            ] {
                try await client.execute(uri: base + path, method: .get, headers: s.headers()) { response in
                    #expect(response.status == .notFound, "\(path)")
                    #expect(response.headers[.contentType] == "application/json", "\(path)")
                    let body = Self.text(response)
                    #expect(body.hasPrefix(#"{"error":"#) && body.contains(reason), "\(path): \(body)")
                }
            }
            for accept in ["text/html", "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.2", "image/jpeg"] {
                try await client.execute(uri: base + "60003000", method: .get, headers: s.headers(accept)) { response in
                    #expect(response.status == .notAcceptable, "\(accept)")
                    #expect(response.headers[.contentType] == "application/json")
                }
            }
            try await client.execute(uri: base + "60003000", method: .get, headers: [.authorization: "Bearer \(s.backup)"]) { response in
                #expect(response.status == .forbidden)
            }
            try await client.execute(uri: base + "60003000", method: .get, headers: [:]) { response in
                #expect(response.status == .unauthorized)
            }
            // Tags in lower case name the same element; the top-level Pixel Data still has its own reader.
            try await client.execute(uri: base + "00880200/0/7fe00010", method: .get, headers: s.headers("application/octet-stream")) { response in
                #expect(response.status == .ok)
                #expect(Array(response.body.readableBytesView) == s.manifest.elements.first { $0.path == "00880200/0/7FE00010" }?.bytes)
            }
            try await client.execute(uri: base + "7fe00010", method: .get, headers: s.headers("application/octet-stream")) { response in
                #expect(response.status == .ok)
                #expect(response.body.readableBytes == 128)
            }
        }
        let records = s.requests(base + "60003000")
        #expect(records.map(\.outcome).filter { $0 == .ok }.isEmpty)
        #expect(records.count == 5)
    }
}
