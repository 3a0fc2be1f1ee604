// The local API: DICOMweb over a Unix domain socket, every request authenticated and audited.
// This first slice serves QIDO-RS study search and WADO-RS instance retrieval; see docs/api.md.
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

/// Per-request state: the connection (for its peer credentials) and, once authenticated, the account.
public struct ServerContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    var account: UserAccount?
    var peer: (uid: UInt32, pid: Int32)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// What the server needs: an unlocked vault and where to listen.
public struct VaultAPIServer: Sendable {
    public let vault: Vault
    public let socketPath: String
    /// The optional loopback listener for browser viewers: (host, port), loopback only.
    public let http: LoopbackAddress?
    /// Timeouts, connection caps and request size limits (docs/api.md, "Limits").
    public let limits: ServerLimits

    public init(vault: Vault, socketPath: String? = nil, http: LoopbackAddress? = nil, limits: ServerLimits = .defaults) {
        self.vault = vault
        self.socketPath = socketPath ?? vault.layout.run + "/medvault.sock"
        self.http = http
        self.limits = limits
    }

    public func makeRouter() -> Router<ServerContext> {
        let router = Router(context: ServerContext.self)
        router.add(middleware: AuthAuditMiddleware(vault: vault))
        let dicomweb = router.group("dicom-web")
        dicomweb.get("studies") { request, context in try QIDO.studies(vault, request, context) }
        dicomweb.get("series") { request, context in try QIDO.series(vault, request, context, study: nil) }
        dicomweb.get("studies/:study/series") { request, context in
            try QIDO.series(vault, request, context, study: context.parameters.get("study"))
        }
        dicomweb.get("instances") { request, context in try QIDO.instances(vault, request, context, study: nil, series: nil) }
        dicomweb.get("studies/:study/series/:series/instances") { request, context in
            try QIDO.instances(vault, request, context, study: context.parameters.get("study"), series: context.parameters.get("series"))
        }
        dicomweb.get("studies/:study/series/:series/instances/:instance") { request, context in
            try WADO.instance(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series/instances/:instance/metadata") { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series/metadata") { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/metadata") { request, context in
            try WADO.metadata(vault, request, context)
        }
        dicomweb.get("studies/:study/series/:series") { request, context in
            try WADO.series(vault, request, context)
        }
        dicomweb.get("studies/:study") { request, context in
            try WADO.study(vault, request, context)
        }
        return router
    }

    /// Listens on the Unix socket until SIGINT/SIGTERM, then finishes responses in flight and removes the socket.
    public func run(onReady: @escaping @Sendable () -> Void = {}) async throws {
        let path = socketPath
        // A socket file left by a process that died is stale: remove it (only a socket, never a file).
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { unlink(path) }
        var logger = Logger(label: "medvault")
        logger.logLevel = .warning
        // Each listener has its own connection cap: a flood on the TCP port leaves the socket's alone.
        let app = Application(
            router: makeRouter(),
            server: GuardedHTTP1Channel.builder(limits),
            configuration: .init(
                address: .unixDomainSocket(path: path), serverName: "MedVault",
                availableConnectionsDelegate: MaximumAvailableConnections(limits.maxSocketConnections)),
            onServerRunning: { _ in
                chmod(path, 0o660)
                onReady()
            },
            logger: logger)
        defer { unlink(path) }
        guard let http else {
            try await app.runService()
            return
        }
        let tcp = Application(
            router: makeRouter(),
            server: GuardedHTTP1Channel.builder(limits),
            configuration: .init(
                address: .hostname(http.host, port: http.port), serverName: "MedVault",
                availableConnectionsDelegate: MaximumAvailableConnections(limits.maxHTTPConnections)),
            logger: logger)
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
    typealias Context = ServerContext
    let vault: Vault
    let failures = FailureTracker()

    func handle(_ request: Request, context: ServerContext, next: (Request, ServerContext) async throws -> Response) async throws -> Response {
        var context = context
        context.peer = await Self.peerCredentials(context.channel)
        let action = request.uri.path
        var event = AuditEvent(actor: "-", role: "-", peerUID: context.peer?.uid, peerPID: context.peer?.pid, action: .request(method: request.method.rawValue, path: action), outcome: .denied)
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
            let account = try vault.authenticate(token: String(header.dropFirst(7)))
        else {
            // Wrong, expired, revoked or missing: one answer, no hint which. Repeated failures from one
            // peer are slowed down, and a burst raises an alert (stderr and the audit log).
            event.detail = "401"
            try vault.audit(event)
            let peerKey = context.peer.map { "uid \($0.uid)" } ?? "unknown peer"
            let (delay, alert) = failures.recordFailure(peer: peerKey)
            if let alert {
                FileHandle.standardError.write(Data("medvault: ALERT: \(alert)\n".utf8))
                var a = AuditEvent(actor: "-", role: "-", peerUID: context.peer?.uid, peerPID: context.peer?.pid, action: .alert, outcome: .alert)
                a.detail = alert
                try vault.audit(a)
            }
            if delay > 0 { try await Task.sleep(nanoseconds: UInt64(delay * 1e9)) }
            return APIError.response(.unauthorized, "authentication required")
        }
        event.actor = account.name
        event.role = account.role.rawValue
        guard account.role != .backup else {
            event.detail = "403"
            try vault.audit(event)
            return APIError.response(.forbidden, "this account may not read image data")
        }
        // After `key rotate` in another process our master key no longer opens the catalog: say so
        // instead of failing on every record.
        guard try vault.masterKeyIsCurrent() else {
            event.outcome = .failed
            event.detail = "503 master key rotated"
            try vault.audit(event)
            return APIError.response(.serviceUnavailable, "the vault's master key was rotated; restart medvault serve")
        }
        context.account = account
        do {
            let response = try await next(request, context)
            event.outcome = response.status.code < 400 ? .ok : .failed
            event.detail = "\(response.status.code)"
            if let touched = response.headers[APIHeaders.auditStudies] { event.studyUIDs = APIHeaders.values(touched) }
            if let touched = response.headers[APIHeaders.auditPatients] { event.patientIDs = APIHeaders.values(touched) }
            if let n = response.headers[APIHeaders.auditInstances] { event.instances = Int(n) ?? 0 }
            if let n = response.headers[APIHeaders.auditBytes] { event.bytes = Int64(n) ?? 0 }
            var clean = response
            clean.headers[APIHeaders.auditStudies] = nil
            clean.headers[APIHeaders.auditPatients] = nil
            clean.headers[APIHeaders.auditInstances] = nil
            clean.headers[APIHeaders.auditBytes] = nil
            try vault.audit(event)
            return clean
        } catch {
            event.outcome = .failed
            event.detail = String(describing: error)
            try vault.audit(event)
            throw error
        }
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

/// Internal response headers the routes use to tell the audit middleware what they touched; removed
/// before the response leaves.
enum APIHeaders {
    static let auditStudies = HTTPField.Name("X-MedVault-Audit-Studies")!
    static let auditPatients = HTTPField.Name("X-MedVault-Audit-Patients")!
    static let auditInstances = HTTPField.Name("X-MedVault-Audit-Instances")!
    static let auditBytes = HTTPField.Name("X-MedVault-Audit-Bytes")!

    /// A set of values for one header: each percent-encoded (a Patient ID may contain a comma, or any
    /// character), sorted, comma-separated.
    static func list(_ values: [String]) -> String {
        Array(Set(values)).sorted().map { $0.addingPercentEncoding(withAllowedCharacters: listSafe) ?? "" }.joined(separator: ",")
    }

    static func values(_ header: String) -> [String] {
        header.split(separator: ",").compactMap { $0.removingPercentEncoding }
    }

    private static let listSafe = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_^")
}

/// PS3.18 error responses: a status and a short JSON body.
enum APIError {
    static func response(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data()
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Failed authentications per peer (uid) within a sliding minute. From the 5th failure on, each answer
/// is delayed (0.1 s, doubling, at most 2 s); every 10th failure in the window raises an alert. A success
/// does not reset the count: another process of the same uid may be the one guessing.
final class FailureTracker: @unchecked Sendable {
    static let window: TimeInterval = 60
    private let lock = NSLock()
    private var recent: [String: [Date]] = [:]

    func recordFailure(peer: String, now: Date = Date()) -> (delay: Double, alert: String?) {
        lock.lock()
        defer { lock.unlock() }
        var times = (recent[peer] ?? []).filter { now.timeIntervalSince($0) < Self.window }
        times.append(now)
        recent[peer] = times
        let n = times.count
        let delay = n < 5 ? 0 : min(2, 0.1 * pow(2, Double(n - 5)))
        let alert = n % 10 == 0 ? "\(n) failed authentications from \(peer) in the last \(Int(Self.window)) s" : nil
        return (delay, alert)
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
