// The local API: DICOMweb over a Unix domain socket, every request authenticated and audited.
// This first slice serves QIDO-RS study search and WADO-RS instance retrieval; see docs/api.md.
import VaultAudit
import VaultCatalog
import Foundation
public import Hummingbird
import HummingbirdCore
import CSysShim
import Logging
import NIOCore
import HTTPTypes
public import VaultStore
#if canImport(Glibc)
import Glibc
#endif

/// What the server needs: an unlocked vault and where to listen.
public struct VaultAPIServer: Sendable {
    public let vault: Vault
    public let socketPath: String
    /// The optional loopback listener for browser viewers: (host, port), loopback only.
    public let http: LoopbackAddress?
    /// Timeouts, connection caps and request size limits (docs/api.md, "Limits").
    public let limits: ServerLimits
    /// Origins allowed by CORS and the cross-origin isolation headers (docs/api.md, "Browser viewers").
    public let browser: BrowserAccess
    /// The decrypted study summaries that searches over the whole vault filter (shared by the listeners;
    /// nil if the catalog could not be watched, and such searches then read the catalog each time).
    let searchIndex: StudySearchIndex?

    public init(
        vault: Vault, socketPath: String? = nil, http: LoopbackAddress? = nil, limits: ServerLimits = .defaults,
        browser: BrowserAccess = .none
    ) {
        self.vault = vault
        self.socketPath = socketPath ?? vault.layout.run + "/medvault.sock"
        self.http = http
        self.limits = limits
        self.browser = browser
        searchIndex = try? vault.makeStudySearchIndex()
    }

    /// One listener: the routes over the vault behind the audit middleware, the request guard and
    /// timeouts of `limits`, at most `maxConnections` connections at once, on `address`. `run` makes one
    /// per listener; tests drive it in process with HummingbirdTesting.
    public func makeApplication(
        address: BindAddress, maxConnections: Int, onReady: @escaping @Sendable () -> Void = {}
    ) -> Application<RouterResponder<VaultRequestContext>> {
        var logger = Logger(label: "medvault")
        logger.logLevel = .warning
        // Anything but this server's socket is a TCP listener, with the Host check.
        let listener: Listener = address == .unixDomainSocket(path: socketPath) ? .socket : .tcp(port: http?.port ?? 0)
        return Application(
            router: makeRouter(listener),
            server: GuardedHTTP1Channel.builder(limits),
            configuration: .init(
                address: address, serverName: "MedVault", availableConnectionsDelegate: MaximumAvailableConnections(maxConnections)),
            onServerRunning: { _ in onReady() },
            logger: logger)
    }

    /// The DICOMweb routes behind the audit middleware (each listener has its own, with its own failure counts).
    func makeRouter(_ listener: Listener = .socket) -> Router<VaultRequestContext> {
        // HEAD answers every GET route with the GET's headers and no body.
        let router = Router(context: VaultRequestContext.self, options: .autoGenerateHeadEndpoints)
        // Routes go through the table, which knows each path's methods (405 with Allow, OPTIONS).
        let routes = RouteTable(router)
        router.add(middleware: FrontMiddleware(vault: vault, listener: listener, browser: browser, routes: routes))
        router.add(middleware: AuthAuditMiddleware(vault: vault, routes: routes))
        let dicomweb = routes.group("dicom-web")
        // Each route states what its answer does with patient data; the audit record carries it.
        dicomweb.get("studies", access: .search) { [searchIndex] request, context in try QIDO.studies(vault, request, context, index: searchIndex) }
        dicomweb.get("series", access: .search) { request, context in try QIDO.series(vault, request, context, study: nil) }
        dicomweb.get("studies/:study/series", access: .search) { request, context in
            try QIDO.series(vault, request, context, study: context.parameters.get("study"))
        }
        dicomweb.get("instances", access: .search) { request, context in try QIDO.instances(vault, request, context, study: nil, series: nil) }
        dicomweb.get("studies/:study/instances", access: .search) { request, context in
            try QIDO.instances(vault, request, context, study: context.parameters.get("study"), series: nil)
        }
        dicomweb.get("studies/:study/series/:series/instances", access: .search) { request, context in
            try QIDO.instances(vault, request, context, study: context.parameters.get("study"), series: context.parameters.get("series"))
        }
        dicomweb.get("studies/:study/series/:series/instances/:instance", access: .retrieve) { request, context in
            try await WADO.instance(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series/instances/:instance/metadata", access: .metadata) { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series/metadata", access: .metadata) { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/metadata", access: .metadata) { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series", access: .retrieve) { request, context in
            try await WADO.series(vault, request, context)
        }
        dicomweb.get("studies/:study", access: .retrieve) { request, context in
            try await WADO.study(vault, request, context)
        }
        WADOPixels.register(on: dicomweb, vault: vault)
        let limits = self.limits
        dicomweb.post("studies", access: .store) { request, context in try await STOW.store(vault, request, context, study: nil, limits: limits) }
        dicomweb.post("studies/:study", access: .store) { request, context in
            try await STOW.store(vault, request, context, study: context.parameters.get("study"), limits: limits)
        }
        routes.complete()  // last: the 405 and OPTIONS endpoints for every route registered above
        return router
    }

    /// Listens on the Unix socket until SIGINT/SIGTERM, then finishes responses in flight and removes the socket.
    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        let path = socketPath
        // A socket file left by a process that died is stale: remove it (only a socket, never a file).
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
        // Each listener has its own connection cap: a flood on the TCP port leaves the socket's alone.
        let app = makeApplication(address: .unixDomainSocket(path: path), maxConnections: limits.maxSocketConnections) {
            chmod(path, 0o660)
            onReady()
        }
        defer { unlink(path) }
        guard let http else {
            try await app.runService()
            return
        }
        let tcp = makeApplication(address: .hostname(http.host, port: http.port), maxConnections: limits.maxHTTPConnections)
        // Both listeners stop together, on SIGINT/SIGTERM or when either fails.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            group.addTask { try await tcp.runService() }
            try await group.next()
            group.cancelAll()
        }
    }
}

/// Authenticates every request by bearer token, records the socket peer, enforces roles, and writes one
/// audit record per request, allowed or refused, before the response is returned.
struct AuthAuditMiddleware: RouterMiddleware {
    typealias Context = VaultRequestContext
    let vault: Vault
    /// What each route does with patient data, for the records.
    let routes: RouteTable
    let failures = FailureTracker()

    func handle(_ request: Request, context: VaultRequestContext, next: (Request, VaultRequestContext) async throws -> Response) async throws -> Response {
        var context = context
        if context.peer == nil { context.peer = await Self.peerCredentials(context.channel) }
        let action = request.uri.path
        var event = AuditEvent(actor: "-", role: "-", peerUID: context.peer?.uid, peerPID: context.peer?.pid, action: .request(method: request.method.rawValue, path: action), outcome: .denied)
        // The route is already resolved: its kind goes into the record whatever the outcome.
        event.access = routes.access(endpoint: context.coreContext.endpointPath.value, method: request.method)
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            let account = try vault.authenticate(token: String(header.dropFirst(7)))
        else {
            // Wrong, expired, revoked or missing: one answer, no hint which. Repeated failures from one
            // peer are slowed down, and a burst raises an alert (stderr and the audit log).
            event.detail = "401"
            try vault.audit(event)
            // On the socket a peer is a uid; on TCP, where the kernel names no process, it is the client's
            // address and port (one connection), so that one guessing client does not slow the others.
            // Alerts count the whole TCP listener: a guesser opening a connection per guess still raises one.
            let (peerKey, scope): (String, String) =
                if let peer = context.peer { ("uid \(peer.uid)", "uid \(peer.uid)") }
                else { (context.channel.remoteAddress.map { "connection \(Self.describe($0))" } ?? "unknown peer", "the TCP listener") }
            let (delay, alert) = failures.recordFailure(peer: peerKey, scope: scope)
            if let alert {
                FileHandle.standardError.write(Data("medvault: ALERT: \(alert)\n".utf8))
                var a = AuditEvent(actor: "-", role: "-", peerUID: context.peer?.uid, peerPID: context.peer?.pid, action: .alert, outcome: .alert)
                a.detail = alert
                try vault.audit(a)
            }
            if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
            throw APIError(.unauthorized, "authentication required")
        }
        event.actor = account.name
        event.role = account.role.rawValue
        // HEAD sends no body: it discloses what exists, not its bytes.
        let bodyless = request.method == .head
        guard account.role != .backup else {
            event.detail = "403"
            try vault.audit(event)
            throw APIError(.forbidden, "this account may not read image data")
        }
        // After `key rotate` in another process our master key no longer opens the catalog: say so
        // instead of failing on every record.
        guard try vault.masterKeyIsCurrent() else {
            event.outcome = .failed
            event.detail = "503 master key rotated"
            try vault.audit(event)
            throw APIError(.serviceUnavailable, "the vault's master key was rotated; restart medvault serve")
        }
        context.account = account
        do {
            let response = try await next(request, context)
            event.outcome = response.status.code < 400 ? .ok : .failed
            event.detail = "\(response.status.code)"
            event.add(context.auditFacts)
            if bodyless { event.bytes = 0 }
            try vault.audit(event)
            return response
        } catch {
            // What the route disclosed before it failed is recorded too.
            event.outcome = .failed
            event.add(context.auditFacts)
            if let answer = error as? any HTTPResponseError {
                event.detail = "\(answer.status.code)"
                try vault.audit(event)
                throw error
            }
            // Any other error: its description goes into the sealed audit record, none of it to the client.
            event.detail = String(describing: error)
            try vault.audit(event)
            throw APIError(.internalServerError, "internal error")
        }
    }

    /// `127.0.0.1:54321`, `[::1]:54321`.
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return (ip.contains(":") ? "[\(ip)]" : ip) + ":\(port)"
    }

    static func peerCredentials(_ channel: any Channel) async -> (uid: UInt32, pid: Int32)? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let future: EventLoopFuture<mv_sys_ucred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        // On a TCP socket the kernel answers with no process: uid -1, pid 0. That is "unknown", not a uid.
        guard let cred = try? await future.get(), cred.pid > 0, cred.uid != UInt32.max else { return nil }
        return (cred.uid, Int32(cred.pid))
    }
}

/// Failed authentications per peer (a uid, or a TCP connection) within a sliding minute. From the 5th
/// failure on, each answer is delayed (0.1 s, doubling, at most 2 s); every 10th failure in the window of
/// the peer's scope (the uid itself, or the whole TCP listener) raises an alert. A success does not reset
/// the count: another process of the same uid may be the one guessing.
final class FailureTracker: @unchecked Sendable {
    static let window: TimeInterval = 60
    private let lock = NSLock()
    private var recent: [String: [Date]] = [:]
    private var scopes: [String: [Date]] = [:]
    private var calls = 0

    func recordFailure(peer: String, scope: String? = nil, now: Date = Date()) -> (delay: Double, alert: String?) {
        lock.lock()
        defer { lock.unlock() }
        // Connections come and go: forget keys with nothing in the window now and then, so memory stays bounded.
        calls += 1
        if calls % 256 == 0 {
            recent = recent.filter { $0.value.contains { now.timeIntervalSince($0) < Self.window } }
            scopes = scopes.filter { $0.value.contains { now.timeIntervalSince($0) < Self.window } }
        }
        let n = Self.append(now, to: &recent, peer)
        let delay = n < 5 ? 0 : min(2, 0.1 * pow(2, Double(n - 5)))
        let scope = scope ?? peer
        let total = scope == peer ? n : Self.append(now, to: &scopes, scope)
        let source = scope == peer ? peer : "\(scope) (latest from \(peer))"
        let alert = total % 10 == 0 ? "\(total) failed authentications from \(source) in the last \(Int(Self.window)) s" : nil
        return (delay, alert)
    }

    private static func append(_ now: Date, to table: inout [String: [Date]], _ key: String) -> Int {
        var times = (table[key] ?? []).filter { now.timeIntervalSince($0) < window }
        times.append(now)
        table[key] = times
        return times.count
    }
}

/// An address for the optional TCP listener. Only loopback is accepted: remote access goes through
/// an SSH tunnel to the Unix socket, never through a port on the network.
public struct LoopbackAddress: Sendable, Equatable {
    public let host: String
    public let port: Int

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case malformed(String)
        case notLoopback(String)
        public var description: String {
            switch self {
            case .malformed(let s): "--http \(s): expected HOST:PORT, e.g. 127.0.0.1:8042 or [::1]:8042"
            case .notLoopback(let s):
                "--http \(s): only a loopback address (127.0.0.1, ::1, localhost) is allowed. MedVault never listens on the "
                    + "network; for remote use, tunnel to the socket: ssh -L 8042:/path/to/vault/run/medvault.sock host"
            }
        }
    }

    public init(parsing text: String) throws(ParseError) {
        let host: Substring, port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { throw .malformed(text) }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw .malformed(text) }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard let p = Int(port), (1...65535).contains(p), !host.isEmpty else { throw .malformed(text) }
        let h = String(host).lowercased()
        let isLoopbackV4 = h.split(separator: ".").count == 4 && h.hasPrefix("127.")
            && h.split(separator: ".").allSatisfy { UInt8($0) != nil }
        guard isLoopbackV4 || h == "::1" || h == "localhost" else { throw .notLoopback(text) }
        self.host = h == "localhost" ? "127.0.0.1" : h
        self.port = p
    }
}
