// STOW-RS (PS3.18 §10.5) driven in process over a real vault: instances go through the engine's import
// path (sealed, audited as an import by the account, published), the answer is the Store Instances
// Response in DICOM JSON, and the clear bytes never reach a file.
@testable import VaultAudit
import VaultFormats
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TestSupport
@testable import VaultServer
@testable import VaultStore

@Suite struct STOWTests {
    typealias Served = ServerInProcessTests.Served
    static let boundary = "medvault-test-boundary"
    static let dicomType: HTTPFields = [.contentType: "multipart/related; type=\"application/dicom\"; boundary=\(boundary)"]

    /// A new CT series (not in the served corpus), for a patient whose name the test can look for.
    static func newSeries(_ dir: TempDir, patient: String = "STOW-0001", slices: Int = 3) -> (files: [String], corpus: Corpus) {
        let c = Corpus.generate(["ct-series", dir.sub("stow-\(patient)"), "--slices", "\(slices)", "--size", "32", "--patient-id", patient,
                                 "--patient-name", "Stowaway^Petra"])
        return (c.valid.map { c.path($0) }.sorted(), c)
    }

    static func studyUID(_ c: Corpus) throws -> String { try #require(c.valid.first?.study_uid) }

    /// Instances of the corpus's study in the vault (0 when the vault has no such study).
    static func stored(_ vault: Vault, _ c: Corpus) throws -> Int {
        let study = try studyUID(c)
        return (try? vault.resolve(.study(study)))?.count ?? 0
    }

    /// Every instance of `corpus` reads back from the vault identical to its file.
    static func expectStoredByteForByte(_ corpus: Corpus, in vault: Vault) throws {
        for f in corpus.valid {
            let sop = try #require(f.sop_uid)
            var out = Data()
            let item = try #require(try vault.resolve(.instance(sop)).first)
            try vault.readInstance(item) { out.append(contentsOf: $0) }
            #expect(out == (try Data(contentsOf: URL(fileURLWithPath: corpus.path(f)))))
        }
    }

    static func body(_ files: [String], partType: String = "application/dicom", extra: [UInt8]? = nil) throws -> ByteBuffer {
        var out = ByteBuffer()
        for f in files {
            out.writeString("--\(boundary)\r\nContent-Type: \(partType)\r\n\r\n")
            out.writeBytes(try Data(contentsOf: URL(fileURLWithPath: f)))
            out.writeString("\r\n")
        }
        if let extra {
            out.writeString("--\(boundary)\r\nContent-Type: application/dicom\r\n\r\n")
            out.writeBytes(extra)
            out.writeString("\r\n")
        }
        out.writeString("--\(boundary)--\r\n")
        return out
    }

    static func headers(_ token: String) -> HTTPFields {
        var h = dicomType
        h[.authorization] = "Bearer \(token)"
        return h
    }

    static func json(_ response: TestResponse) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
    }

    static func sequence(_ o: [String: Any], _ tag: String) -> [[String: Any]] {
        ((o[tag] as? [String: Any])?["Value"] as? [[String: Any]]) ?? []
    }

    static func value(_ item: [String: Any], _ tag: String) -> Any? {
        ((item[tag] as? [String: Any])?["Value"] as? [Any])?.first
    }

    @Test func storedInstancesAreSealedAuditedPublishedAndRetrievable() async throws {
        let s = try Served()
        let (files, corpus) = Self.newSeries(s.dir)
        let before = s.vault.readAudit().records.count
        try await s.app.test(.live) { client in
            // A name search before (it builds the server's search index) and after: the index follows the store.
            let search = "/dicom-web/studies?PatientName=stowaway*"
            try await client.execute(uri: search, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { r in
                let found = try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [Any]
                #expect(r.status == .ok && found?.count == 0)
            }
            try await client.execute(uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body(files)) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/dicom+json")
                let o = try Self.json(response)
                let stored = Self.sequence(o, "00081199")
                #expect(stored.count == files.count)
                #expect(stored.allSatisfy { Self.value($0, "00081150") as? String == "1.2.840.10008.5.1.4.1.1.2" })
                #expect(o["00081198"] == nil)
                // Each RetrieveURL answers with the stored bytes, identical to what was sent.
                for item in stored {
                    let url = try #require(Self.value(item, "00081190") as? String)
                    #expect(url.hasPrefix("/dicom-web/studies/"))
                    try await client.execute(uri: url, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { r in
                        #expect(r.status == .ok)
                    }
                }
            }
            try await client.execute(uri: search, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { r in
                let found = try #require(try JSONSerialization.jsonObject(with: Data(r.body.readableBytesView)) as? [[String: Any]])
                let study = try Self.studyUID(corpus)
                #expect(found.count == 1 && Self.value(found[0], "0020000D") as? String == study)
            }
            // The same instances again: already stored, still a success (a client's retry is harmless).
            try await client.execute(uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body(files)) { response in
                #expect(response.status == .ok)
                let o = try Self.json(response)
                #expect(Self.sequence(o, "00081199").count == files.count)
            }
        }
        // Byte-identical in the vault.
        try Self.expectStoredByteForByte(corpus, in: s.vault)
        // One import record by the account (through the engine's change path), then the request's record.
        let records = s.vault.readAudit().records.map(\.event).dropFirst(before)
        let imports = records.filter { $0.action == .importFiles }
        #expect(imports.count == 2)
        #expect(imports.first?.actor == "rad" && imports.first?.role == "radiologist" && imports.first?.instances == files.count)
        #expect(imports.first?.patientIDs == ["STOW-0001"])
        let posts = records.filter { $0.action == .request(method: "POST", path: "/dicom-web/studies") }
        #expect(posts.count == 2 && posts.allSatisfy { $0.outcome == .ok && $0.detail == "200" })
        // The request states that it stored (data in): the breach report does not count it as a read.
        #expect(posts.allSatisfy { $0.access == .store && AuditRecordKind.of($0) == .importData })
        #expect(posts.first?.patientIDs == ["STOW-0001"])
        // Published: the newest snapshot is not stale, and no clear patient name is anywhere under the vault.
        #expect(!s.vault.snapshotIsStale())
        let name = Array("Stowaway".utf8)
        #expect(allFiles(under: s.vault.layout.root).allSatisfy { !fileContains($0, name) })
    }

    @Test func instancesPastTheRequestsMemoryBudgetAreSealedOnArrivalAndStoredByteForByte() async throws {
        let s = try Served()
        let (files, corpus) = Self.newSeries(s.dir, patient: "STOW-0005", slices: 3)
        // A budget smaller than one instance: every part is sealed into an unnamed file as it arrives.
        let server = VaultAPIServer(vault: s.vault, socketPath: s.dir.sub("budget.sock"), limits: ServerLimits(storeMemoryBytes: 1000))
        try await server.makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 4).test(.router) { client in
            try await client.execute(uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body(files, extra: Array("not dicom".utf8))) { response in
                #expect(response.status == .accepted)
                let o = try Self.json(response)
                #expect(Self.sequence(o, "00081199").count == files.count)
                #expect(Self.sequence(o, "00081198").first.flatMap { Self.value($0, "00081197") as? Int } == 0xC000)
            }
        }
        try Self.expectStoredByteForByte(corpus, in: s.vault)
        #expect(FileManager.default.fileExists(atPath: s.vault.layout.tmp))
        #expect((try FileManager.default.contentsOfDirectory(atPath: s.vault.layout.tmp)).isEmpty)
        #expect(allFiles(under: s.vault.layout.root).allSatisfy { !fileContains($0, Array("Stowaway".utf8)) })
    }

    @Test func partialAndFailedStoresAnswer202And409WithReasons() async throws {
        let s = try Served()
        let (files, corpus) = Self.newSeries(s.dir, patient: "STOW-0002", slices: 2)
        let (other, otherCorpus) = Self.newSeries(s.dir, patient: "STOW-0003", slices: 2)
        let study = try #require(Corpus.shared.valid.first?.study_uid)
        try await s.app.test(.router) { client in
            // Two good instances and one that is not DICOM: 202, one failure 0xC000, nothing half-stored.
            try await client.execute(
                uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body(files, extra: Array("not dicom".utf8))
            ) { response in
                #expect(response.status == .accepted)
                let o = try Self.json(response)
                #expect(Self.sequence(o, "00081199").count == 2)
                let failed = Self.sequence(o, "00081198")
                #expect(failed.count == 1 && Self.value(failed[0], "00081197") as? Int == 0xC000)
            }
            // To another study's URL: every instance refused with 0xA900, none stored: 409.
            try await client.execute(uri: "/dicom-web/studies/\(study)", method: .post, headers: Self.headers(s.rad), body: try Self.body(other)) { response in
                #expect(response.status == .conflict)
                let o = try Self.json(response)
                #expect(Self.value(o, "00081190") as? String == "/dicom-web/studies/\(study)")
                let failed = Self.sequence(o, "00081198")
                #expect(failed.count == 2 && failed.allSatisfy { Self.value($0, "00081197") as? Int == 0xA900 })
                #expect(Self.sequence(o, "00081199").isEmpty)
            }
            // A part of another media type is refused (0xC000), the multipart as a whole is not.
            try await client.execute(uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body([files[0]], partType: "image/jpeg")) { response in
                #expect(response.status == .conflict)
                let o = try Self.json(response)
                #expect(Self.sequence(o, "00081198").first.flatMap { Self.value($0, "00081197") as? Int } == 0xC000)
            }
        }
        #expect(try Self.stored(s.vault, otherCorpus) == 0)
        #expect(try Self.stored(s.vault, corpus) == 2)
    }

    @Test func refusalsChangeNothing() async throws {
        let s = try Served()
        let (files, corpus) = Self.newSeries(s.dir, patient: "STOW-0004", slices: 1)
        try s.vault.addUser("vw", role: .viewer)
        let viewer = try s.vault.issueToken(for: "vw", lifetime: 3600).token
        let limited = VaultAPIServer(vault: s.vault, socketPath: s.dir.sub("unused2.sock"), limits: ServerLimits(maxStoreBytes: 1024))
        try await s.app.test(.router) { client in
            let cases: [(HTTPFields, ByteBuffer, HTTPResponse.Status, String)] = [
                (Self.headers(viewer), try Self.body(files), .forbidden, "may not store"),
                (Self.headers(s.backup), try Self.body(files), .forbidden, "may not read"),
                ([.authorization: "Bearer \(s.rad)", .contentType: "application/dicom"], try Self.body(files), .unsupportedMediaType, "multipart/related"),
                ([.authorization: "Bearer \(s.rad)", .contentType: "multipart/related; type=\"application/dicom+xml\"; boundary=x"], try Self.body(files), .unsupportedMediaType, "application/dicom"),
                ([.authorization: "Bearer \(s.rad)", .contentType: "multipart/related; type=\"application/dicom\""], try Self.body(files), .badRequest, "boundary"),
                (Self.headers(s.rad), ByteBuffer(string: "--\(Self.boundary)\r\nContent-Type: application/dicom\r\n\r\ncut off"), .badRequest, "closing boundary"),
                (Self.headers(s.rad), ByteBuffer(string: "no parts here"), .badRequest, "no boundary"),
            ]
            for (headers, body, status, message) in cases {
                try await client.execute(uri: "/dicom-web/studies", method: .post, headers: headers, body: body) { response in
                    #expect(response.status == status, "\(message)")
                    #expect(ServerInProcessTests.text(response).contains(message), "\(ServerInProcessTests.text(response))")
                }
            }
        }
        try await limited.makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 4).test(.router) { client in
            try await client.execute(uri: "/dicom-web/studies", method: .post, headers: Self.headers(s.rad), body: try Self.body(files)) { response in
                #expect(response.status == .contentTooLarge)
            }
        }
        #expect(try Self.stored(s.vault, corpus) == 0)
    }
}
