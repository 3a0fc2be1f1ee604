// What the audit middleware and the routes share for one request: the connection, the authenticated
// account, and what the route disclosed, which goes into the request's audit record and never to the
// client.
import VaultAudit
public import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import VaultStore
import VaultCatalog

/// Per-request state. The middleware fills in the peer and the account before any route runs; the
/// route records what it disclosed (`recordDisclosure`), and the middleware reads it (`auditFacts`)
/// after the route returns or throws.
public struct VaultRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The connection: its peer credentials, and whether the client is still there while a response streams.
    let channel: any Channel
    var peer: (uid: UInt32, pid: Int32)?
    var account: UserAccount?
    /// A box, not a stored value: the middleware hands the route a copy of the context, and every copy
    /// must see the same facts.
    private let facts = NIOLockedValueBox(AuditFacts())

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// What the route has recorded so far.
    var auditFacts: AuditFacts { facts.withLockedValue { $0 } }

    /// Records what a response discloses: studies and patients (each listed once), and for retrieval
    /// the number of instances and their clear bytes.
    func recordDisclosure(studies: [String], patients: [String], instances: Int = 0, bytes: Int64 = 0) {
        facts.withLockedValue {
            $0.studyUIDs = Array(Set(studies)).sorted()
            $0.patientIDs = Array(Set(patients)).sorted()
            $0.instances = instances
            $0.bytes = bytes
        }
    }
}

/// What a request disclosed, for its audit record.
struct AuditFacts: Sendable, Equatable {
    var studyUIDs: [String] = []
    var patientIDs: [String] = []
    var instances = 0
    /// For retrieval: the clear bytes of the instances the response sends, known from the catalog before
    /// it streams (the record is written when the response starts).
    var bytes: Int64 = 0
}

extension AuditEvent {
    mutating func add(_ facts: AuditFacts) {
        studyUIDs = facts.studyUIDs
        patientIDs = facts.patientIDs
        instances = facts.instances
        bytes = facts.bytes
    }
}

/// A GET route's handler, with what its answer does with patient data. The route table keeps the kind
/// by route, and the audit middleware writes it into every record of a request to that route (refused
/// and failed ones too: the outcome says whether it happened), so that the report never has to read a
/// path to know what a request did.
struct AuditedRoute: HTTPResponder {
    typealias Context = VaultRequestContext
    let access: AuditAccess
    let handler: @Sendable (Request, VaultRequestContext) async throws -> Response

    func respond(to request: Request, context: VaultRequestContext) async throws -> Response {
        try await handler(request, context)
    }
}

extension RouterMethods where Context == VaultRequestContext {
    /// A GET route (and so HEAD) and what it does with patient data. The route table refuses a GET
    /// route registered any other way.
    @discardableResult func get(
        _ path: RouterPath, access: AuditAccess, use handler: @escaping @Sendable (Request, Context) async throws -> Response
    ) -> Self {
        on(path, method: .get, responder: AuditedRoute(access: access, handler: handler))
    }

    /// A POST route and what it does with patient data (STOW-RS stores).
    @discardableResult func post(
        _ path: RouterPath, access: AuditAccess, use handler: @escaping @Sendable (Request, Context) async throws -> Response
    ) -> Self {
        on(path, method: .post, responder: AuditedRoute(access: access, handler: handler))
    }
}

/// An error answer (PS3.18): a status and a short JSON body `{"error": message}`. Routes and the
/// middleware throw it; Hummingbird's router turns it into the response, after the middleware has
/// recorded it.
struct APIError: HTTPResponseError, Equatable, CustomStringConvertible {
    let status: HTTPResponse.Status
    let message: String
    /// More header fields for the answer, e.g. `Allow` with a 405.
    let extraHeaders: HTTPFields

    init(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        extraHeaders = headers
    }

    var headers: HTTPFields {
        var fields = extraHeaders
        fields[.contentType] = "application/json"
        return fields
    }

    var body: String {
        var out = "{\"error\":"
        DICOMJSONObject.appendString(message, to: &out)
        return out + "}"
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    var description: String { "\(status.code) \(message)" }
}
