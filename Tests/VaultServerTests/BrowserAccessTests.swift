import VaultAudit
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
@testable import VaultServer
import VaultStore

/// CORS, preflights, the Host check, HEAD, 405 with Allow and JSON error bodies, driven in process over
/// a real vault holding the generated corpus.
@Suite struct BrowserAccessTests {
    typealias Served = ServerInProcessTests.Served
    static let viewer = "http://localhost:3000"

    static func app(_ s: Served, origins: [String] = [viewer], isolation: Bool = false) throws -> Application<RouterResponder<VaultRequestContext>> {
        let server = VaultAPIServer(
            vault: s.vault, socketPath: s.dir.sub("unused.sock"),
            browser: try BrowserAccess(origins: origins, crossOriginIsolation: isolation))
        return server.makeApplication(address: .hostname("127.0.0.1", port: 0), maxConnections: 8)
    }

    static func records(_ s: Served) -> [AuditEvent] { s.vault.readAudit().records.map(\.event) }

    static func preflight(_ origin: String, method: String = "GET") -> HTTPFields {
        [.origin: origin, .accessControlRequestMethod: method, .accessControlRequestHeaders: "authorization, accept"]
    }

    @Test func aPreflightFromAListedOriginIsAnsweredBeforeAuthenticationAndAuditedAsOPTIONS() async throws {
        let s = try Served()
        try await Self.app(s).test(.router) { client in
            // More preflights than the failed-login threshold: none is delayed, refused or alerted on.
            for _ in 0..<12 {
                try await client.execute(uri: "/dicom-web/studies", method: .options, headers: Self.preflight(Self.viewer)) { response in
                    #expect(response.status == .noContent)
                    #expect(response.headers[.accessControlAllowOrigin] == Self.viewer)
                    // POST: STOW-RS stores instances at …/studies.
                    #expect(response.headers[.accessControlAllowMethods] == "GET, HEAD, OPTIONS, POST")
                    #expect(response.headers[.accessControlAllowHeaders] == "Authorization, Content-Type, Accept, Range")
                    #expect(response.headers[.accessControlMaxAge] == "600")
                    #expect(response.headers[.vary] == "Origin")
                    #expect(response.headers[.accessControlAllowCredentials] == nil)
                }
            }
        }
        let records = Self.records(s)
        let preflights = records.filter { $0.action == .request(method: "OPTIONS", path: "/dicom-web/studies") }
        #expect(preflights.count == 12)
        #expect(preflights.allSatisfy { $0.detail == "204 preflight" && $0.actor == "-" && $0.outcome == .ok })
        #expect(records.allSatisfy { $0.action != .request(method: "GET", path: "/dicom-web/studies") })
        #expect(records.allSatisfy { $0.outcome != .alert && $0.detail != "401" })
    }

    @Test func anOriginNotListedGetsNoCORSHeaders() async throws {
        let s = try Served()
        try await Self.app(s).test(.router) { client in
            for origin in ["http://evil.example", "http://localhost:3001", "null"] {
                try await client.execute(uri: "/dicom-web/studies", method: .options, headers: Self.preflight(origin)) { response in
                    #expect(response.status == .forbidden)
                    #expect(response.headers[.contentType] == "application/json")
                    #expect(response.headers[.accessControlAllowOrigin] == nil && response.headers[.accessControlAllowMethods] == nil)
                    #expect(response.headers[.vary] == "Origin")
                }
                var headers = ServerInProcessTests.bearer(s.rad)
                headers[.origin] = origin
                try await client.execute(uri: "/dicom-web/studies", method: .get, headers: headers) { response in
                    #expect(response.status == .ok)
                    #expect(response.headers[.accessControlAllowOrigin] == nil && response.headers[.accessControlExposeHeaders] == nil)
                    #expect(response.headers[.vary] == "Origin")
                }
            }
        }
        let denied = Self.records(s).filter { $0.action == .request(method: "OPTIONS", path: "/dicom-web/studies") }
        #expect(denied.count == 3 && denied.allSatisfy { $0.outcome == .denied })
    }

    @Test func answersToAListedOriginCarryCORSHeadersErrorsIncluded() async throws {
        let s = try Served()
        try await Self.app(s, isolation: true).test(.router) { client in
            var headers = ServerInProcessTests.bearer(s.rad)
            headers[.origin] = "http://LOCALHOST:3000"
            for (token, status) in [(s.rad, HTTPResponse.Status.ok), ("mvt_wrong", .unauthorized)] {
                headers[.authorization] = "Bearer \(token)"
                try await client.execute(uri: "/dicom-web/studies", method: .get, headers: headers) { response in
                    #expect(response.status == status)
                    #expect(response.headers[.accessControlAllowOrigin] == "http://LOCALHOST:3000")
                    #expect(response.headers[.accessControlExposeHeaders] == "Content-Type, Content-Length, Content-Range, Warning")
                    #expect(response.headers[.vary] == "Origin")
                    #expect(response.headers[.crossOriginOpenerPolicy] == "same-origin")
                    #expect(response.headers[.crossOriginEmbedderPolicy] == "require-corp")
                    #expect(response.headers[.crossOriginResourcePolicy] == "cross-origin")
                }
            }
        }
    }

    @Test func withoutAllowedOriginsThereAreNoCORSHeadersAtAll() async throws {
        let s = try Served()
        try await s.app.test(.router) { client in
            try await client.execute(uri: "/dicom-web/studies", method: .options, headers: Self.preflight(Self.viewer)) { response in
                #expect(response.status == .forbidden)
                #expect(response.headers[.vary] == nil && response.headers[.accessControlAllowOrigin] == nil)
            }
            var headers = ServerInProcessTests.bearer(s.rad)
            headers[.origin] = Self.viewer
            try await client.execute(uri: "/dicom-web/studies", method: .get, headers: headers) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.vary] == nil && response.headers[.accessControlAllowOrigin] == nil)
                #expect(response.headers[.crossOriginOpenerPolicy] == nil)
            }
            // A plain OPTIONS names the methods; an unknown path is 404 with a JSON body.
            try await client.execute(uri: "/dicom-web/studies/1.2.3/series", method: .options) { response in
                #expect(response.status == .noContent && response.headers[.allow] == "GET, HEAD, OPTIONS")
            }
            try await client.execute(uri: "/dicom-web/nothing", method: .options) { response in
                #expect(response.status == .notFound)
                #expect(ServerInProcessTests.text(response) == #"{"error":"not found"}"#)
            }
        }
    }

    @Test func aKnownRouteWithAnotherMethodIs405WithAllowAfterAuthentication() async throws {
        let s = try Served()
        let f = try #require(Corpus.shared.valid.first)
        let instance = "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)"
        try await s.app.test(.router) { client in
            for method: HTTPRequest.Method in [.post, .put, .delete, .patch] {
                for path in ["/dicom-web/studies", instance, "/dicom-web/studies/1.2.3/instances"] {
                    // …/studies takes POST (STOW-RS): only the other methods are refused there.
                    let stow = path == "/dicom-web/studies"
                    if stow && method == .post { continue }
                    try await client.execute(uri: path, method: method, headers: ServerInProcessTests.bearer(s.rad)) { response in
                        #expect(response.status == .methodNotAllowed, "\(method) \(path)")
                        #expect(response.headers[.allow] == (stow ? "GET, HEAD, OPTIONS, POST" : "GET, HEAD, OPTIONS"))
                        #expect(response.headers[.contentType] == "application/json")
                        #expect(ServerInProcessTests.text(response).hasPrefix(#"{"error":""#))
                    }
                }
            }
            // Without a token the route is not revealed: 401.
            try await client.execute(uri: "/dicom-web/studies", method: .delete) { response in
                #expect(response.status == .unauthorized)
            }
        }
        let record = try #require(Self.records(s).last { $0.action == .request(method: "DELETE", path: instance) })
        #expect(record.actor == "rad" && record.outcome == .failed && record.detail == "405")
        // Nothing was changed: the vault still holds every study.
        #expect(try s.vault.listStudies().count == Set(Corpus.shared.valid.compactMap(\.study_uid)).count)
    }

    @Test func headAnswersEveryGETRouteWithItsHeadersAndNoBodyAndIsAuditedAsHEAD() async throws {
        let s = try Served()
        let f = try #require(Corpus.shared.valid.first)
        let paths = [
            "/dicom-web/studies", "/dicom-web/studies/\(f.study_uid!)/instances", "/dicom-web/studies/\(f.study_uid!)/metadata",
            "/dicom-web/studies/\(f.study_uid!)/series/\(f.series_uid!)/instances/\(f.sop_uid!)",
        ]
        try await s.app.test(.router) { client in
            for path in paths.prefix(3) {
                let get = try await client.execute(uri: path, method: .get, headers: ServerInProcessTests.bearer(s.rad))
                let head = try await client.execute(uri: path, method: .head, headers: ServerInProcessTests.bearer(s.rad))
                #expect(head.status == .ok, "\(path)")
                #expect(head.body.readableBytes == 0)
                #expect(head.headers[.contentType] == get.headers[.contentType])
                #expect(head.headers[.contentLength] == "\(get.body.readableBytes)", "\(path)")
            }
            // Retrieval: the multipart's length, and nothing is decrypted (the body is never written).
            let head = try await client.execute(uri: paths[3], method: .head, headers: ServerInProcessTests.bearer(s.rad))
            #expect(head.status == .ok && head.body.readableBytes == 0)
            #expect(head.headers[.contentType]?.hasPrefix("multipart/related; type=\"application/dicom\"") == true)
            #expect((Int(head.headers[.contentLength] ?? "") ?? 0) > readBytes(Corpus.shared.path(f)).count)
            // HEAD of something absent: the error's status and headers, no body.
            let missing = try await client.execute(uri: "/dicom-web/studies/1.2.3", method: .head, headers: ServerInProcessTests.bearer(s.rad))
            #expect(missing.status == .notFound && missing.body.readableBytes == 0)
        }
        let instance = try #require(Self.records(s).last { $0.action == .request(method: "HEAD", path: paths[3]) })
        #expect(instance.outcome == .ok && instance.instances == 1 && instance.bytes == 0)
    }

    @Test func everyErrorHasAJSONBodyHummingbirdsOwnIncluded() async throws {
        let s = try Served()
        try await s.app.test(.router) { client in
            for path in ["/", "/dicom-web", "/dicom-web/nothing-here", "/dicom-web/studies/1.2.3/series/x/instances/y/z/w"] {
                try await client.execute(uri: path, method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                    #expect(response.status == .notFound, "\(path)")
                    #expect(response.headers[.contentType] == "application/json")
                    #expect(ServerInProcessTests.text(response) == #"{"error":"not found"}"#)
                }
            }
            try await client.execute(uri: "/dicom-web/studies?StudyDate=2023", method: .get, headers: ServerInProcessTests.bearer(s.rad)) { response in
                #expect(response.status == .badRequest)
                #expect(ServerInProcessTests.text(response).contains("StudyDate"))
            }
        }
    }

    @Test func originsAreParsedStrictly() throws {
        let a = try BrowserAccess(origins: ["http://Localhost:3000/", "https://viewer.example:443", "http://[::1]:8080"])
        #expect(a.origins == ["http://localhost:3000", "https://viewer.example", "http://[::1]:8080"])
        for bad in ["localhost:3000", "ftp://x", "http://x/path", "http://x?q", "http://user@x", ""] {
            #expect(throws: BrowserAccess.OriginError.malformed(bad)) { try BrowserAccess(origins: [bad]) }
        }
        #expect(throws: BrowserAccess.OriginError.wildcard) { try BrowserAccess(origins: ["*"]) }
    }

    @Test func theHostCheckAcceptsLoopbackNamesWithTheListenersPortOnly() {
        for ok in ["localhost", "LOCALHOST:8042", "127.0.0.1", "127.0.0.1:8042", "[::1]", "[::1]:8042"] {
            #expect(HostCheck.accepts(ok, port: 8042), "\(ok)")
        }
        for bad in [nil, "", "evil.example", "evil.example:8042", "localhost:8043", "127.0.0.2", "localhost.", "127.0.0.1:", "[::1]x",
            "localhost:80a", "0.0.0.0:8042", "attacker.localhost", "[::2]:8042"] as [String?] {
            #expect(!HostCheck.accepts(bad, port: 8042), "\(bad ?? "nil")")
        }
    }

    /// Per-connection keys on TCP: one peer's failures delay that peer only; alerts count the scope.
    @Test func failedLoginDelaysArePerPeerAndAlertsPerScope() {
        let t = FailureTracker()
        let now = Date()
        var alerts: [String] = []
        for i in 0..<9 {
            let (delay, alert) = t.recordFailure(peer: "connection 127.0.0.1:1000", scope: "the TCP listener", now: now)
            #expect(delay == (i < 4 ? 0 : min(2, 0.1 * pow(2, Double(i - 4)))))
            if let alert { alerts.append(alert) }
        }
        let other = t.recordFailure(peer: "connection 127.0.0.1:2000", scope: "the TCP listener", now: now)
        #expect(other.delay == 0)
        #expect(other.alert?.contains("10 failed authentications from the TCP listener") == true)
        #expect(alerts.isEmpty)
    }
}
