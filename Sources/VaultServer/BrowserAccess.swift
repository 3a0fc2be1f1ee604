// What a browser-based viewer needs from the listeners, and what protects them from a browser: CORS for
// listed origins (preflights answered before authentication), the Host check against DNS rebinding on the
// TCP listener, optional cross-origin isolation headers, 405 with Allow, HEAD, and a JSON body on every
// error answer (docs/api.md, "Browser viewers").
import VaultAudit
import Foundation
import HTTPTypes
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import VaultStore

/// The origins allowed to read answers from a browser, and whether answers carry the cross-origin
/// isolation headers. None by default: a page on another origin cannot read anything.
public struct BrowserAccess: Sendable, Equatable {
    /// Serialized origins (`scheme://host[:port]`, lowercase, default port omitted), as browsers send them.
    public private(set) var origins: Set<String>
    /// Cross-Origin-Opener-Policy, -Embedder-Policy and -Resource-Policy on every answer, for viewers that
    /// need SharedArrayBuffer.
    public var crossOriginIsolation: Bool

    public static let none = BrowserAccess(origins: [], isolation: false)

    public init(origins: [String] = [], crossOriginIsolation: Bool = false) throws(OriginError) {
        self.origins = []
        self.crossOriginIsolation = crossOriginIsolation
        for text in origins { self.origins.insert(try Self.serialize(text)) }
    }

    private init(origins: Set<String>, isolation: Bool) {
        self.origins = origins
        crossOriginIsolation = isolation
    }

    public enum OriginError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case wildcard
        public var description: String {
            switch self {
            case .malformed(let s):
                "--allow-origin \(s): expected an origin, scheme://host[:port] with http or https and no path, e.g. http://localhost:3000"
            case .wildcard:
                "--allow-origin: '*' and 'null' are refused: name each viewer's origin (every answer carries patient data)"
            }
        }
    }

    /// `http://Localhost:3000/` → `http://localhost:3000`; `https://viewer.example:443` → `https://viewer.example`.
    static func serialize(_ text: String) throws(OriginError) -> String {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard t != "*" && t.lowercased() != "null" else { throw .wildcard }
        guard let c = URLComponents(string: t), let scheme = c.scheme?.lowercased(), scheme == "http" || scheme == "https",
            let host = c.host?.lowercased(), !host.isEmpty, c.user == nil, c.password == nil, c.query == nil, c.fragment == nil,
            c.path.isEmpty || c.path == "/"
        else { throw .malformed(text) }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        let defaultPort = scheme == "http" ? 80 : 443
        if let port = c.port, port != defaultPort {
            guard (1...65535).contains(port) else { throw .malformed(text) }
            return "\(scheme)://\(bracketed):\(port)"
        }
        return "\(scheme)://\(bracketed)"
    }

    func allows(_ origin: String) -> Bool { origins.contains(origin.lowercased()) }

    /// Request headers a viewer may send (PS3.18 needs Accept and Range; Authorization carries the token).
    static let allowHeaders = "Authorization, Content-Type, Accept, Range"
    /// Answer headers a viewer's script may read beyond the CORS-safelisted ones.
    static let exposeHeaders = "Content-Type, Content-Length, Content-Range, Warning"
    /// How long a browser may reuse a preflight's answer (Chromium caps it at 2 h, Firefox at 24 h).
    static let maxAge = "600"
}

/// Which listener an application serves: the Host check and per-connection throttling are for TCP only.
enum Listener: Sendable, Equatable {
    case socket
    /// The configured port (0 in tests that let the kernel choose); the connection's own port wins.
    case tcp(port: Int)
}

/// The loopback names the TCP listener answers to. A page on an attacker's domain that resolves to
/// 127.0.0.1 (DNS rebinding) sends its own name in Host and is refused.
enum HostCheck {
    static let names: Set<String> = ["localhost", "127.0.0.1", "[::1]"]

    static func accepts(_ authority: String?, port: Int?) -> Bool {
        guard let authority = authority?.lowercased(), !authority.isEmpty else { return false }
        let name: Substring, given: Substring?
        if let close = authority.lastIndex(of: "]") {
            name = authority[...close]
            let rest = authority[authority.index(after: close)...]
            guard rest.isEmpty || rest.hasPrefix(":") else { return false }
            given = rest.isEmpty ? nil : rest.dropFirst()
        } else if let colon = authority.firstIndex(of: ":") {
            name = authority[..<colon]
            given = authority[authority.index(after: colon)...]
        } else {
            name = authority[...]
            given = nil
        }
        guard names.contains(String(name)) else { return false }
        guard let given else { return true }
        guard let p = Int(given), given.allSatisfy(\.isASCII) else { return false }
        return port.map { $0 == p } ?? false
    }
}

extension HTTPField.Name {
    // Names swift-http-types does not define. Each literal is a valid token: the initializer cannot fail.
    static let warning = field("Warning")
    static let crossOriginOpenerPolicy = field("Cross-Origin-Opener-Policy")
    static let crossOriginEmbedderPolicy = field("Cross-Origin-Embedder-Policy")

    private static func field(_ name: String) -> Self {
        guard let n = Self(name) else { preconditionFailure("not an HTTP field name: \(name)") }
        return n
    }
}

/// The routes and their methods, recorded as they are registered, so that a known path with another
/// method gets 405 with `Allow` (Hummingbird answers 404), and OPTIONS can name the methods. Routes are
/// registered through it (`RouteTable.group`), then `complete()` adds the 405 and OPTIONS endpoints.
/// Unchecked: the router is touched only while routes are registered, before the application serves;
/// the table is behind a lock.
final class RouteTable: RouterMethods, @unchecked Sendable {
    typealias Context = VaultRequestContext
    let router: Router<VaultRequestContext>
    /// By route (`RouterPath.description`, which is also the request context's endpoint path): its methods,
    /// and what its GET (and so HEAD) does with patient data.
    private let paths = NIOLockedValueBox<[String: (path: RouterPath, methods: Set<HTTPRequest.Method>, access: [HTTPRequest.Method: AuditAccess])]>([:])

    /// Methods refused with 405 on a known path (others are unknown to the router and get 404).
    static let refusable: [HTTPRequest.Method] = [.get, .head, .post, .put, .delete, .patch, .trace]

    init(_ router: Router<VaultRequestContext>) { self.router = router }

    @discardableResult func on<Responder: HTTPResponder>(
        _ path: RouterPath, method: HTTPRequest.Method, responder: Responder
    ) -> Self where Responder.Context == Context {
        // Every GET and POST route states what it does with patient data (`get`/`post(_:access:use:)`):
        // one registered without is a programming error, found when the router is built (every server
        // test builds it).
        let access = (responder as? AuditedRoute)?.access
        if (method == .get || method == .post) && access == nil {
            preconditionFailure("\(method) \(path) has no audit access kind: register it with get/post(_:access:use:)")
        }
        paths.withLockedValue { table in
            _ = table[path.description, default: (path, [], [:])].methods.insert(method)
            if let access { table[path.description]?.access[method] = access }
        }
        router.on(path, method: method, responder: responder)
        return self
    }

    /// What a request to the route `endpoint` does with patient data: what its route for the method
    /// states (a HEAD runs the GET route); none for another method (405, OPTIONS) or a path the API does
    /// not have (`endpoint` nil).
    func access(endpoint: String?, method: HTTPRequest.Method) -> AuditAccess {
        guard let endpoint else { return .noPatientData }
        let routed: HTTPRequest.Method = method == .head ? .get : method
        return paths.withLockedValue { $0[endpoint]?.access[routed] } ?? .noPatientData
    }

    @discardableResult func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self {
        router.add(middleware: middleware)
        return self
    }

    /// What a path answers to: its methods, HEAD wherever GET is (the router generates it), and OPTIONS.
    func allowed(_ endpoint: String?) -> [HTTPRequest.Method]? {
        guard let endpoint, let methods = paths.withLockedValue({ $0[endpoint]?.methods }) else { return nil }
        var all = methods
        if all.contains(.get) { all.insert(.head) }
        all.insert(.options)
        return all.sorted { $0.rawValue < $1.rawValue }
    }

    /// Adds, for every recorded path, a 405 endpoint for each other method, and an OPTIONS endpoint (the
    /// front middleware answers OPTIONS itself; the endpoint makes the path known to it).
    func complete() {
        let table = paths.withLockedValue { $0 }
        for (key, entry) in table {
            guard let allowed = allowed(key) else { continue }
            let allow = allowed.map(\.rawValue).joined(separator: ", ")
            for method in Self.refusable where !allowed.contains(method) {
                router.on(entry.path, method: method, responder: CallbackResponder { _, _ in
                    throw APIError(.methodNotAllowed, "\(method.rawValue) is not supported here; allowed: \(allow)", headers: [.allow: allow])
                })
            }
            router.on(entry.path, method: .options, responder: CallbackResponder { _, _ in
                Response(status: .noContent, headers: [.allow: allow])
            })
        }
    }
}

/// The outermost middleware, before authentication: the Host check (TCP), OPTIONS and CORS preflights,
/// CORS and isolation headers on every answer, and a JSON body on every error, Hummingbird's own
/// included. Preflights are audited as OPTIONS, never as the method they announce, and never count as
/// failed logins (they carry no credentials by design).
struct FrontMiddleware: RouterMiddleware {
    typealias Context = VaultRequestContext
    let vault: Vault
    let listener: Listener
    let browser: BrowserAccess
    let routes: RouteTable

    func handle(_ request: Request, context: VaultRequestContext, next: (Request, VaultRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        context.peer = await AuthAuditMiddleware.peerCredentials(context.channel)
        let origin = request.headers[.origin]
        let allowedOrigin = origin.flatMap { browser.allows($0) ? $0 : nil }
        var response: Response
        if case .tcp(let port) = listener, !HostCheck.accepts(request.head.authority, port: context.channel.localAddress?.port ?? port) {
            try audit(request, context, outcome: .denied, detail: "421 Host not a loopback name")
            response = try APIError(
                .misdirectedRequest,
                "this listener answers only requests addressed to localhost, 127.0.0.1 or [::1] (with its own port)"
            ).response(from: request, context: context)
        } else if request.method == .options {
            response = try options(request, context, origin: origin, allowedOrigin: allowedOrigin)
        } else {
            do {
                response = try await next(request, context)
            } catch let error as APIError {
                response = try error.response(from: request, context: context)
            } catch let error as any HTTPResponseError {
                // Hummingbird's own 404 and others: the same JSON shape as ours, their other headers kept.
                var headers = try error.response(from: request, context: context).headers
                headers[.contentType] = nil
                headers[.contentLength] = nil
                response = try APIError(error.status, Self.message(error.status), headers: headers).response(from: request, context: context)
            }
        }
        if request.method == .head { response = response.createHeadResponse() }
        decorate(&response, allowedOrigin: allowedOrigin)
        return response
    }

    /// OPTIONS: a CORS preflight (Origin and Access-Control-Request-Method) or a plain method query.
    private func options(_ request: Request, _ context: VaultRequestContext, origin: String?, allowedOrigin: String?) throws -> Response {
        guard let allowed = routes.allowed(context.coreContext.endpointPath.value) else {
            try audit(request, context, outcome: .denied, detail: "404")
            return try APIError(.notFound, "not found").response(from: request, context: context)
        }
        let allow = allowed.map(\.rawValue).joined(separator: ", ")
        guard origin != nil, request.headers[.accessControlRequestMethod] != nil else {
            try audit(request, context, outcome: .ok, detail: "204")
            return Response(status: .noContent, headers: [.allow: allow])
        }
        guard allowedOrigin != nil else {
            try audit(request, context, outcome: .denied, detail: "403 preflight from an origin not allowed")
            return try APIError(.forbidden, "this origin is not allowed (medvault serve --allow-origin)").response(from: request, context: context)
        }
        try audit(request, context, outcome: .ok, detail: "204 preflight")
        var response = Response(status: .noContent, headers: [.allow: allow])
        response.headers[.accessControlAllowMethods] = allow
        response.headers[.accessControlAllowHeaders] = BrowserAccess.allowHeaders
        response.headers[.accessControlMaxAge] = BrowserAccess.maxAge
        return response
    }

    /// CORS headers for a listed origin; `Vary: Origin` whenever origins are configured (the answer
    /// depends on it, and a cache must not hand one origin's answer to another); isolation headers.
    private func decorate(_ response: inout Response, allowedOrigin: String?) {
        if !browser.origins.isEmpty { response.headers.append(HTTPField(name: .vary, value: "Origin")) }
        if let allowedOrigin {
            response.headers[.accessControlAllowOrigin] = allowedOrigin
            // A preflight's answer is never read by a script: nothing to expose.
            if response.headers[.accessControlAllowMethods] == nil {
                response.headers[.accessControlExposeHeaders] = BrowserAccess.exposeHeaders
            }
        }
        if browser.crossOriginIsolation {
            response.headers[.crossOriginOpenerPolicy] = "same-origin"
            response.headers[.crossOriginEmbedderPolicy] = "require-corp"
            // Lets a viewer page that is itself isolated (COEP: require-corp) load our answers.
            response.headers[.crossOriginResourcePolicy] = "cross-origin"
        }
    }

    private func audit(_ request: Request, _ context: VaultRequestContext, outcome: AuditOutcome, detail: String) throws {
        let peer = context.peer
        var event = AuditEvent(
            actor: "-", role: "-", peerUID: peer?.uid, peerPID: peer?.pid,
            action: .request(method: request.method.rawValue, path: request.uri.path), outcome: outcome)
        event.access = routes.access(endpoint: context.coreContext.endpointPath.value, method: request.method)
        event.detail = detail
        try vault.audit(event)
    }

    static func message(_ status: HTTPResponse.Status) -> String {
        switch status.code {
        case 404: "not found"
        case 405: "method not allowed"
        default: status.reasonPhrase.isEmpty ? "error \(status.code)" : status.reasonPhrase.lowercased()
        }
    }
}
