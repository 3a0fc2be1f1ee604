import VaultAudit
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
import VaultServer
import VaultStore
import VaultCatalog

/// The API server's application, driven in process (HummingbirdTesting) over a real vault: real
/// libsodium, real SQLite, the generated DICOM corpus. `.router` hands requests straight to the
/// router; `.live` runs the server on a loopback port, which streaming retrieval needs (it stops when
/// the connection is no longer active). The Unix socket, signals and limits are tested live in
/// MedVaultCLITests.
@Suite struct ServerInProcessTests {
    /// A vault holding the valid corpus, with a radiologist's and a backup account's token.
    final class Served: Sendable {
        let dir = TempDir("medvault-server")
        let vault: Vault
        let server: VaultAPIServer
        let rad: String
        let backup: String

        init() throws {
            vault = try makeVault(dir).vault
            try importValidCorpus(into: vault, dir: dir)
            try vault.addUser("rad", role: .radiologist)
            try vault.addUser("bk", role: .backup)
            rad = try vault.issueToken(for: "rad", lifetime: 3600).token
            backup = try vault.issueToken(for: "bk", lifetime: 3600).token
            server = VaultAPIServer(vault: vault, socketPath: dir.sub("unused.sock"))
        }

        deinit { dir.remove() }

        /// The application `medvault serve` runs; `.live` replaces the address with a free loopback port.
        var app: Application<RouterResponder<VaultRequestContext>> {
            server.makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 8)
        }

        /// The audit records of GET requests for `path`, oldest first.
        func requests(_ path: String) -> [AuditEvent] {
            vault.readAudit().records.map(\.event).filter { $0.action == .request(method: "GET", path: path) }
        }
    }

    static func bearer(_ token: String) -> HTTPFields { [.authorization: "Bearer \(token)"] }

    static func text(_ response: TestResponse) -> String { String(decoding: response.body.readableBytesView, as: UTF8.self) }

    /// The routes' audit facts travel in the request context: no internal header reaches the client.
    static func expectNoInternalHeaders(_ response: TestResponse, sourceLocation: SourceLocation = #_sourceLocation) {
        let leaked = response.headers.map(\.name.canonicalName).filter { $0.hasPrefix("x-medvault") }
        #expect(leaked.isEmpty, "internal headers sent: \(leaked)", sourceLocation: sourceLocation)
    }

    @Test func refusesWithoutATokenAndTheBackupRole() async throws {
        let s = try Served()
        try await s.app.test(.router) { client in
            for headers: HTTPFields in [[:], Self.bearer("mvt_wrong"), [.authorization: s.rad]] {
                try await client.execute(uri: "/dicom-web/studies", method: .get, headers: headers) { response in
                    #expect(response.status == .unauthorized)
                    #expect(Self.text(response) == #"{"error":"authentication required"}"#)
                    #expect(response.headers[.contentType] == "application/json")
                    Self.expectNoInternalHeaders(response)
                }
            }
            try await client.execute(uri: "/dicom-web/studies", method: .get, headers: Self.bearer(s.backup)) { response in
                #expect(response.status == .forbidden)
                #expect(Self.text(response) == #"{"error":"this account may not read image data"}"#)
                Self.expectNoInternalHeaders(response)
            }
        }
        // Each refusal is recorded, with no patient data.
        let records = s.requests("/dicom-web/studies")
        #expect(records.map(\.outcome) == [.denied, .denied, .denied, .denied])
        #expect(records.map(\.detail) == ["401", "401", "401", "403"])
        #expect(records.map(\.actor) == ["-", "-", "-", "bk"])
        #expect(records.allSatisfy { $0.patientIDs.isEmpty && $0.studyUIDs.isEmpty && $0.instances == 0 })
    }

    @Test func studySearchAnswersDICOMJSONAndIsAudited() async throws {
        let s = try Served()
        let doe = Corpus.shared.valid.filter { $0.patient_id == "MRN0012345" }
        let expected = Set(doe.compactMap(\.study_uid))
        #expect(!expected.isEmpty)
        try await s.app.test(.router) { client in
            try await client.execute(uri: "/dicom-web/studies?PatientID=MRN0012345", method: .get, headers: Self.bearer(s.rad)) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/dicom+json")
                Self.expectNoInternalHeaders(response)
                let objects = try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [[String: Any]])
                let uids = objects.compactMap { (($0["0020000D"] as? [String: Any])?["Value"] as? [String])?.first }
                #expect(Set(uids) == expected && uids.count == expected.count)
                let patients = objects.compactMap { (($0["00100020"] as? [String: Any])?["Value"] as? [String])?.first }
                #expect(Set(patients) == ["MRN0012345"])
                #expect(objects.allSatisfy { ($0["0020000D"] as? [String: Any])?["vr"] as? String == "UI" })
            }
        }
        let record = try #require(s.requests("/dicom-web/studies").last)
        #expect(record.actor == "rad" && record.role == "radiologist")
        #expect(record.outcome == .ok && record.detail == "200")
        #expect(record.patientIDs == ["MRN0012345"])
        #expect(record.studyUIDs == expected.sorted())
        #expect(record.instances == 0 && record.bytes == 0)
    }

    @Test func unknownStudyIs404AndIsAudited() async throws {
        let s = try Served()
        try await s.app.test(.router) { client in
            for (path, message) in [
                ("/dicom-web/studies/1.2.3", "no such study"),
                ("/dicom-web/studies/1.2.3/series/4.5.6/instances/7.8.9", "no such instance"),
                ("/dicom-web/studies/1.2.3/metadata", "not found"),
            ] {
                try await client.execute(uri: path, method: .get, headers: Self.bearer(s.rad)) { response in
                    #expect(response.status == .notFound, "\(path)")
                    #expect(Self.text(response) == #"{"error":"\#(message)"}"#, "\(path)")
                    #expect(response.headers[.contentType] == "application/json")
                    Self.expectNoInternalHeaders(response)
                }
            }
            // A path the API does not have: Hummingbird's own 404, audited the same way.
            try await client.execute(uri: "/dicom-web/nothing-here", method: .get, headers: Self.bearer(s.rad)) { response in
                #expect(response.status == .notFound)
            }
        }
        for path in ["/dicom-web/studies/1.2.3", "/dicom-web/studies/1.2.3/series/4.5.6/instances/7.8.9", "/dicom-web/nothing-here"] {
            let record = try #require(s.requests(path).last, "\(path)")
            #expect(record.actor == "rad" && record.outcome == .failed && record.detail == "404", "\(path)")
            #expect(record.patientIDs.isEmpty && record.studyUIDs.isEmpty && record.instances == 0 && record.bytes == 0)
        }
    }

    /// WADO-RS over a live loopback connection: the multipart part holds the original file byte for
    /// byte, and the audit record names the patient, the study, one instance and its clear bytes.
    @Test func instanceRetrievalSendsTheOriginalBytesAndIsAudited() async throws {
        let s = try Served()
        let files = Array(Corpus.shared.valid.prefix(3))
        try await s.app.test(.live) { client in
            for f in files {
                let path = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)"
                try await client.execute(uri: path, method: .get, headers: Self.bearer(s.rad)) { response in
                    #expect(response.status == .ok)
                    Self.expectNoInternalHeaders(response)
                    let parts = try Multipart.parts(response)
                    #expect(parts.count == 1)
                    #expect(parts.first?.contentType == "application/dicom")
                    #expect(parts.first?.body == readBytes(Corpus.shared.path(f)), "\(f.path)")
                }
            }
        }
        for f in files {
            let path = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)"
            let record = try #require(s.requests(path).last, "\(f.path)")
            #expect(record.actor == "rad" && record.outcome == .ok && record.detail == "200")
            #expect(record.patientIDs == [f.patient_id ?? ""] && record.studyUIDs == [f.study_uid!])
            #expect(record.instances == 1)
            #expect(record.bytes == Int64(readBytes(Corpus.shared.path(f)).count))
        }
    }

    /// A whole study: every instance once, and the record's bytes are the sum of the instances sent.
    @Test func studyRetrievalIsAuditedWithEveryInstanceAndItsBytes() async throws {
        let s = try Served()
        let study = try #require(Corpus.shared.valid.first { $0.patient_id == "MRN0012345" }?.study_uid)
        let files = Corpus.shared.valid.filter { $0.study_uid == study }
        try await s.app.test(.live) { client in
            try await client.execute(uri: "/dicom-web/studies/\(study)", method: .get, headers: Self.bearer(s.rad)) { response in
                #expect(response.status == .ok)
                Self.expectNoInternalHeaders(response)
                let parts = try Multipart.parts(response)
                #expect(parts.map(\.body).map { $0.count }.sorted() == files.map { readBytes(Corpus.shared.path($0)).count }.sorted())
                #expect(Set(parts.map(\.body)) == Set(files.map { readBytes(Corpus.shared.path($0)) }))
            }
        }
        let record = try #require(s.requests("/dicom-web/studies/\(study)").last)
        #expect(record.outcome == .ok && record.instances == files.count)
        #expect(record.studyUIDs == [study] && record.patientIDs == ["MRN0012345"])
        #expect(record.bytes == files.reduce(Int64(0)) { $0 + Int64(readBytes(Corpus.shared.path($1)).count) })
    }
}

/// A strict multipart/related reader, independent of the server's writer.
enum Multipart {
    struct Part {
        var contentType: String?
        var body: [UInt8]
    }

    struct Malformed: Error {
        let reason: String
    }

    static func parts(_ response: TestResponse) throws -> [Part] {
        let type = response.headers[.contentType] ?? ""
        guard type.hasPrefix("multipart/related"), let b = type.range(of: "boundary=") else { throw Malformed(reason: "content type \(type)") }
        let boundary = Array(("--" + type[b.upperBound...].split(separator: ";")[0]).utf8)
        let bytes = Array(response.body.readableBytesView)
        var starts: [Int] = []
        var i = 0
        while let at = find(boundary, in: bytes, from: i) {
            starts.append(at)
            i = at + boundary.count
        }
        guard starts.count >= 2, Array(bytes[(starts.last! + boundary.count)...]).starts(with: Array("--".utf8)) else {
            throw Malformed(reason: "no closing delimiter")
        }
        var parts: [Part] = []
        for (start, next) in zip(starts, starts.dropFirst()) {
            // CRLF after the delimiter, headers, an empty line, the content, CRLF before the next delimiter.
            let section = Array(bytes[(start + boundary.count)..<next])
            guard section.starts(with: [13, 10]), section.suffix(2) == [13, 10],
                let blank = find(Array("\r\n\r\n".utf8), in: section, from: 0)
            else { throw Malformed(reason: "part layout") }
            let head = String(decoding: section[2..<blank], as: UTF8.self)
            var part = Part(contentType: nil, body: Array(section[(blank + 4)..<(section.count - 2)]))
            for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-type:") {
                part.contentType = line.dropFirst("content-type:".count).trimmingCharacters(in: .whitespaces)
            }
            if let length = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }) {
                guard Int(length.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) == part.body.count else {
                    throw Malformed(reason: "part length")
                }
            }
            parts.append(part)
        }
        return parts
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        var i = from
        while i + needle.count <= haystack.count {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
